"""Batch adapters: parameter checks, local processes, and a real one-node Slurm.

The Slurm tests need the cluster from ``bash .ci/slurm.sh start`` (``SLURM_CONF`` set); they
skip without it, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dss.errors import InvalidInput
from pilotchecker import pilot
from pilotchecker.batch import (
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    TIMEOUT,
    UNKNOWN,
    BatchError,
    BatchStatus,
    LocalAdapter,
    SlurmAdapter,
    adapter_names,
    format_walltime,
    get_adapter,
    parse_walltime,
)
from tests.pilotchecker.test_pilot import TOKEN, PortalRecorder
from tests.services import require


def write_script(path: Path, body: str, executable: bool = True) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    if executable:
        path.chmod(0o755)
    return path


def copy_pilot(workdir: Path) -> Path:
    target = workdir / "pilot.py"
    shutil.copy(pilot.__file__, target)
    target.chmod(0o755)
    return target


def wait_for(adapter, job_id: str, until, timeout: float = 60.0) -> tuple[BatchStatus, list[str]]:
    """Poll until ``until(status)``; the status and every state seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        status = adapter.status([job_id])[job_id]
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if until(status):
            return status, seen
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status} after {timeout} s (seen {seen})")
        time.sleep(0.2)


def final(status: BatchStatus) -> bool:
    return status.final


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"partition": "debug; rm -rf /"}, "partition"),
        ({"partition": "--wrap=id"}, "partition"),
        ({"account": "$(reboot)"}, "account"),
        ({"job_name": "a b"}, "job_name"),
        ({"time_limit": "1h"}, "time_limit"),
        ({"time_limit": "00:61:00"}, "time_limit"),
        ({"time_limit": 0}, "time_limit"),
        ({"extra": ["--uid=0"]}, "extra"),
        ({"extra": ["--output=/etc/passwd"]}, "extra"),
        ({"extra": ["--qos=normal; ls"]}, "extra"),
        ({"extra": ["--exclusive"]}, "extra"),
        ({"env": {"BAD-NAME": "x"}}, "env"),
        ({"args": "--config x"}, "args"),
        ({"queue": "long"}, "queue"),
    ],
)
def test_slurm_params_reject_injection_and_name_the_field(params, field):
    with pytest.raises(InvalidInput) as err:
        SlurmAdapter().validate_params(params)
    assert err.value.where == field


def test_slurm_params_are_normalized():
    clean = SlurmAdapter().validate_params(
        {
            "partition": "debug,long",
            "account": "atlas-prod",
            "time_limit": "1-02:03:04",
            "extra": "--mem=2G --qos=short",
        }
    )
    assert clean["partition"] == "debug,long"
    assert clean["time_limit"] == 93784
    assert clean["extra"] == ["--mem=2G", "--qos=short"]
    assert clean["job_name"] == "dss-pilot"


def test_wall_times_are_read_in_minutes_or_clock_format():
    assert parse_walltime(90) == parse_walltime("90") == 5400
    assert parse_walltime("01:30:00") == 5400
    assert parse_walltime("2-00:00:00") == 2 * 86400
    assert format_walltime(5400) == "01:30:00"
    assert format_walltime(93784) == "1-02:03:04"


def test_local_jobs_have_no_partition():
    with pytest.raises(InvalidInput) as err:
        LocalAdapter().validate_params({"partition": "debug"})
    assert err.value.where == "partition"


def test_adapters_come_from_the_registry():
    assert {"local", "slurm"} <= set(adapter_names())
    assert isinstance(get_adapter("slurm"), SlurmAdapter)
    with pytest.raises(InvalidInput) as err:
        get_adapter("loadleveler")
    assert err.value.where == "batch_system"


def test_job_ids_cannot_reach_outside(tmp_path):
    with pytest.raises(InvalidInput):
        LocalAdapter(state_dir=tmp_path).cancel("../../etc/passwd")
    with pytest.raises(InvalidInput):
        SlurmAdapter().status(["1; scancel -u root"])


def test_scripts_and_workdirs_are_checked(tmp_path):
    adapter = LocalAdapter(state_dir=tmp_path / "state")
    script = write_script(tmp_path / "job.sh", "true")
    with pytest.raises(InvalidInput) as err:
        adapter.submit("job.sh", tmp_path, {})
    assert err.value.where == "script_path"
    (tmp_path / "no-shebang.py").write_text("print(1)\n")
    with pytest.raises(InvalidInput) as err:
        adapter.submit(tmp_path / "no-shebang.py", tmp_path, {})
    assert err.value.where == "script_path"
    odd = tmp_path / "100%"
    odd.mkdir()
    with pytest.raises(InvalidInput) as err:
        adapter.submit(script, odd, {})
    assert err.value.where == "workdir"


# ---------------------------------------------------------------- local processes


@pytest.fixture
def local(tmp_path):
    return LocalAdapter(state_dir=tmp_path / "state")


def test_local_runs_a_pilot_to_completion(local, tmp_path):
    script = copy_pilot(tmp_path)
    job_id = local.submit(
        script, tmp_path, {"args": ["--dry-run", "--config-json", '{"min_tmp_disk_gb": 0}']}
    )

    status, seen = wait_for(local, job_id, final)

    assert status == BatchStatus(COMPLETED, COMPLETED, 0, "")
    assert set(seen) <= {QUEUED, RUNNING, COMPLETED}
    out, err = local.output_paths(job_id, tmp_path)
    assert out == tmp_path / f"dss-{job_id}.out"
    report = pilot.extract_report(out.read_text())
    assert report["facts"]["batch"] == {
        "system": "local",
        "job_id": job_id,
        "variables": {"DSS_LOCAL_JOB_ID": job_id},
        "allocated_cores": None,
        "allocated_memory_mb": None,
    }
    assert report["facts"]["disk"]["work"]["path"] == str(tmp_path)


def test_local_records_a_failing_script_and_its_stderr(local, tmp_path):
    # not executable: the adapter runs it through its #! line
    script = write_script(tmp_path / "fail.sh", "echo oops >&2; exit 3", executable=False)
    job_id = local.submit(script, tmp_path, {})

    status, _ = wait_for(local, job_id, final)

    assert (status.state, status.exit_code) == (FAILED, 3)
    assert local.output_paths(job_id, tmp_path)[1].read_text() == "oops\n"


def test_local_cancels_a_sleeping_job(local, tmp_path):
    script = write_script(tmp_path / "sleep.sh", "echo started; exec sleep 300")
    job_id = local.submit(script, tmp_path, {})
    wait_for(local, job_id, lambda s: s.state == RUNNING)
    child = json.loads((local.state_dir / f"{job_id}.json").read_text())["child_pid"]

    local.cancel(job_id)
    status, _ = wait_for(local, job_id, final, timeout=15)

    assert status.state == CANCELLED
    assert status.reason == "killed by signal 15"
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
    local.cancel(job_id)  # cancelling a finished job is not an error


def test_local_time_limit_ends_in_timeout(local, tmp_path):
    script = write_script(tmp_path / "sleep.sh", "exec sleep 300")
    job_id = local.submit(script, tmp_path, {"time_limit": "00:00:01"})

    status, _ = wait_for(local, job_id, final, timeout=20)

    assert status.state == TIMEOUT


def test_local_jobs_do_not_see_the_portal_environment(local, tmp_path, monkeypatch):
    monkeypatch.setenv("DSS_SECRET_KEY_FOR_TEST", "do-not-leak")
    script = write_script(
        tmp_path / "env.sh", 'echo "${DSS_SECRET_KEY_FOR_TEST:-absent} $DSS_PILOT_ID"'
    )
    job_id = local.submit(script, tmp_path, {"env": {"DSS_PILOT_ID": "42"}})

    wait_for(local, job_id, final)

    assert local.output_paths(job_id, tmp_path)[0].read_text() == "absent 42\n"


def test_an_unknown_local_job_is_unknown(local):
    assert local.status(["0" * 32])["0" * 32].state == UNKNOWN


# ---------------------------------------------------------------- real Slurm


@pytest.fixture(scope="module")
def slurm_up():
    conf = os.environ.get("SLURM_CONF", "")
    ok = bool(conf) and Path(conf).is_file() and shutil.which("sbatch") is not None
    if ok:
        probe = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
        ok = probe.returncode == 0 and any(
            s in probe.stdout for s in ("idle", "mixed", "allocated")
        )
    return ok


@pytest.fixture
def slurm(slurm_up):
    require(slurm_up, "a Slurm cluster (SLURM_CONF from `bash .ci/slurm.sh start`)")
    return SlurmAdapter()


def test_slurm_runs_a_pilot_that_reports_to_the_portal(slurm, tmp_path):
    script = copy_pilot(tmp_path)
    with PortalRecorder() as portal:
        (tmp_path / "pilot.json").write_text(json.dumps(portal.config()))
        job_id = slurm.submit(
            script,
            tmp_path,
            {"job_name": "dss-test-pilot", "time_limit": 5, "args": ["--config", "pilot.json"]},
        )
        status, seen = wait_for(slurm, job_id, final)

    assert status == BatchStatus(COMPLETED, "COMPLETED", 0, "")
    assert set(seen) <= {QUEUED, RUNNING, COMPLETED}
    out, err = slurm.output_paths(job_id, tmp_path)
    printed = pilot.extract_report(out.read_text())
    assert "report accepted" in err.read_text()
    (post,) = portal.posts
    assert post["headers"]["Authorization"] == f"Pilot {TOKEN}"
    report = json.loads(post["body"])
    assert report == printed
    assert report["verdict"] == "passed", [c for c in report["checks"] if c["status"] != "pass"]
    batch = report["facts"]["batch"]
    assert (batch["system"], batch["job_id"]) == ("slurm", job_id)
    assert batch["variables"]["SLURM_JOB_NAME"] == "dss-test-pilot"
    assert batch["variables"]["SLURM_SUBMIT_DIR"] == str(tmp_path)
    assert batch["allocated_cores"] >= 1


def test_slurm_sees_a_job_run_and_cancels_it(slurm, tmp_path):
    script = write_script(tmp_path / "sleep.sh", "echo started; sleep 300")
    job_id = slurm.submit(script, tmp_path, {"time_limit": "00:10:00"})

    running, seen = wait_for(slurm, job_id, lambda s: s.state == RUNNING)
    assert seen[0] in (QUEUED, RUNNING)
    assert running.raw == "RUNNING"
    slurm.cancel(job_id)
    status, _ = wait_for(slurm, job_id, final, timeout=30)

    assert (status.state, status.raw) == (CANCELLED, "CANCELLED")
    assert slurm.output_paths(job_id, tmp_path)[0].read_text() == "started\n"
    slurm.cancel(job_id)  # already finished: not an error


def test_slurm_reports_a_failing_job_with_its_exit_code(slurm, tmp_path):
    script = write_script(tmp_path / "fail.sh", "echo broken >&2; exit 3")
    job_id = slurm.submit(script, tmp_path, {})

    status, _ = wait_for(slurm, job_id, final)

    assert (status.state, status.raw, status.exit_code) == (FAILED, "FAILED", 3)
    assert slurm.output_paths(job_id, tmp_path)[1].read_text() == "broken\n"
    # once the controller forgets the job, the jobcomp log still knows how it ended
    assert slurm._from_jobcomp([job_id])[job_id].state == FAILED


def test_slurm_answers_unknown_for_a_job_it_never_had(slurm):
    assert slurm.status(["987654"])["987654"].state == UNKNOWN


def test_slurm_refusal_is_a_batch_error(slurm, tmp_path):
    script = write_script(tmp_path / "job.sh", "true")
    with pytest.raises(BatchError) as err:
        slurm.submit(script, tmp_path, {"partition": "no-such-partition"})
    assert "partition" in str(err.value).lower()
    assert not err.value.transient
