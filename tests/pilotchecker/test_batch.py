"""Batch adapters: parameter checks, local processes, and a real one-node Slurm.

The Slurm tests need the cluster from ``bash .ci/slurm.sh start`` (``SLURM_CONF`` set); they
skip without it, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
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
def workdir(pilots_dir):
    return pilots_dir


@pytest.fixture
def local(tmp_path):
    # As the portal's worker does: run as root here, jobs run as an unprivileged user.
    return LocalAdapter(state_dir=tmp_path / "state", run_as="nobody")


def test_local_runs_a_pilot_to_completion(local, workdir):
    script = copy_pilot(workdir)
    job_id = local.submit(
        script, workdir, {"args": ["--dry-run", "--config-json", '{"min_tmp_disk_gb": 0}']}
    )

    status, seen = wait_for(local, job_id, final)

    assert status == BatchStatus(COMPLETED, COMPLETED, 0, "")
    assert set(seen) <= {QUEUED, RUNNING, COMPLETED}
    out, err = local.output_paths(job_id, workdir)
    assert out == workdir / f"dss-{job_id}.out"
    report = pilot.extract_report(out.read_text())
    assert report["facts"]["batch"] == {
        "system": "local",
        "job_id": job_id,
        "variables": {"DSS_LOCAL_JOB_ID": job_id},
        "allocated_cores": None,
        "allocated_memory_mb": None,
    }
    assert report["facts"]["disk"]["work"]["path"] == str(workdir)


def test_local_records_a_failing_script_and_its_stderr(local, workdir):
    # not executable: the adapter runs it through its #! line
    script = write_script(workdir / "fail.sh", "echo oops >&2; exit 3", executable=False)
    job_id = local.submit(script, workdir, {})

    status, _ = wait_for(local, job_id, final)

    assert (status.state, status.exit_code) == (FAILED, 3)
    assert local.output_paths(job_id, workdir)[1].read_text() == "oops\n"


def test_local_cancels_a_sleeping_job(local, workdir):
    script = write_script(workdir / "sleep.sh", "echo started; exec sleep 300")
    job_id = local.submit(script, workdir, {})
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


def test_local_time_limit_ends_in_timeout(local, workdir):
    script = write_script(workdir / "sleep.sh", "exec sleep 300")
    job_id = local.submit(script, workdir, {"time_limit": "00:00:01"})

    status, _ = wait_for(local, job_id, final, timeout=20)

    assert status.state == TIMEOUT


def test_local_jobs_do_not_see_the_portal_environment(local, workdir, monkeypatch):
    monkeypatch.setenv("DSS_SECRET_KEY_FOR_TEST", "do-not-leak")
    script = write_script(
        workdir / "env.sh", 'echo "${DSS_SECRET_KEY_FOR_TEST:-absent} $DSS_PILOT_ID"'
    )
    job_id = local.submit(script, workdir, {"env": {"DSS_PILOT_ID": "42"}})

    wait_for(local, job_id, final)

    assert local.output_paths(job_id, workdir)[0].read_text() == "absent 42\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_a_local_job_runs_as_an_unprivileged_user_with_a_clean_environment(
    local, workdir, monkeypatch
):
    # What a hostile job on the portal's machine would try: the portal's secrets.
    monkeypatch.setenv("SECRET_KEY", "portal-secret")
    # a secret of the portal's, readable by its owner only (mkstemp: mode 600), where all
    # users may look
    handle, name = tempfile.mkstemp(prefix="dss-test-secret-")
    os.write(handle, b"portal-secret")
    os.close(handle)
    secret_file = Path(name)
    script = write_script(
        workdir / "probe.sh",
        f"id -u; env | sort | cut -d= -f1 | tr '\\n' ' '; echo; "
        f"cat /proc/{os.getpid()}/environ >/dev/null 2>&1 && echo environ-read || echo environ-denied; "
        f"cat {secret_file} >/dev/null 2>&1 && echo file-read || echo file-denied",
    )
    job_id = local.submit(script, workdir, {"env": {"DSS_PILOT_ID": "7"}})

    status, _ = wait_for(local, job_id, final)
    secret_file.unlink()

    uid, names, environ, secret = local.output_paths(job_id, workdir)[0].read_text().splitlines()
    assert status.state == COMPLETED
    assert int(uid) == pwd.getpwnam("nobody").pw_uid
    # sh adds PWD, SHLVL and _ of its own; nothing else of the portal's comes through
    assert set(names.split()) - {"PWD", "SHLVL", "_"} == {
        "PATH",
        "HOME",
        "LANG",
        "DSS_PILOT_ID",
        "DSS_LOCAL_JOB_ID",
    } - ({"LANG"} if "LANG" not in os.environ else set())
    assert (environ, secret) == ("environ-denied", "file-denied")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_root_runs_no_local_job_as_itself_or_as_an_unknown_user(workdir):
    script = write_script(workdir / "noop.sh", "true")
    for run_as, words in ((None, "as root"), ("no-such-user-dss", "no user 'no-such-user-dss'")):
        with pytest.raises(BatchError, match=words):
            LocalAdapter(state_dir=workdir / "state", run_as=run_as).submit(script, workdir, {})


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_a_work_directory_the_job_user_cannot_enter_is_refused(local, tmp_path):
    # pytest's folders are private to root: the job could not even start in one
    script = write_script(tmp_path / "noop.sh", "true")

    with pytest.raises(BatchError, match="closed to nobody") as err:
        local.submit(script, tmp_path, {})
    assert err.value.where == "workdir"


NOT_ROOT_SUBMITS = """
import sys, tempfile, os
sys.path.insert(0, os.getcwd())
from pilotchecker.batch import LocalAdapter, BatchError
folder = tempfile.mkdtemp()
with open(os.path.join(folder, "x.sh"), "w") as handle:
    handle.write("#!/bin/sh\\ntrue\\n")
adapter = LocalAdapter(state_dir=os.path.join(folder, "state"), own_user_ok=sys.argv[1] == "ok")
try:
    adapter.submit(os.path.join(folder, "x.sh"), folder, {})
    print("started")
except BatchError as e:
    print("refused:", e)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
@pytest.mark.parametrize(("own_user_ok", "answer"), [("no", "refused: "), ("ok", "started")])
def test_a_worker_that_is_not_root_runs_local_jobs_as_itself_only_when_allowed(own_user_ok, answer):
    # a portal process that is not root (here: nobody, with the system's Python)
    python = shutil.which("python3", path="/usr/bin:/bin")
    done = subprocess.run(
        [python, "-c", NOT_ROOT_SUBMITS, own_user_ok],
        user="nobody",
        extra_groups=[],
        cwd=Path(__file__).resolve().parents[2],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.startswith(answer), done.stderr
    if answer.startswith("refused"):
        assert "can read its secrets" in done.stdout


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "BASH_ENV"])
def test_a_site_cannot_set_variables_that_load_code(name):
    with pytest.raises(InvalidInput, match="cannot be set") as err:
        get_adapter("local").validate_params({"env": {name: "/tmp/x"}})
    assert err.value.where == "env"


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
