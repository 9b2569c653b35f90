"""Real pilots, end to end: the form's action queues them, a real Celery worker submits them
to a real batch system (local processes; a one-node Slurm), the pilot runs on this machine
and posts its report to a live portal, and the poller reads the batch system's view.

The Slurm tests need the cluster from ``bash .ci/slurm.sh start`` (``SLURM_CONF`` set): they
skip without it, and fail under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.db import transaction

from pilotchecker import actions, tasks
from pilotchecker.models import Pilot
from tests.conftest import wait_for
from tests.services import require


@pytest.fixture
def portal_url(live_server, monkeypatch, settings, pilots_dir):
    """The live portal's address and a pilot directory, for this process and (through the
    environment) for the worker process started after it."""
    pilots = pilots_dir
    monkeypatch.setenv("DSS_PORTAL_URL", live_server.url)
    monkeypatch.setenv("PILOT_DIR", str(pilots))
    # The deployment's allow-list: a check that takes two minutes, for the cancel test.
    monkeypatch.setenv("DSS_PILOT_COMMANDS", '{"slow": ["sleep", "120"]}')
    settings.DSS_PILOT_COMMANDS = {"slow": ["sleep", "120"]}
    settings.DSS_PORTAL_URL = live_server.url
    settings.PILOT_DIR = pilots
    return live_server.url


@pytest.fixture
def worker(portal_url, celery_worker):
    """A real Celery worker that sees the live portal's address (it starts after portal_url)."""
    return celery_worker


def slurm_up() -> bool:
    conf = os.environ.get("SLURM_CONF", "")
    if not (conf and Path(conf).is_file() and shutil.which("sbatch")):
        return False
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return probe.returncode == 0 and any(s in probe.stdout for s in ("idle", "mixed", "allocated"))


def submit(site, user) -> Pilot:
    with transaction.atomic():
        (p,) = actions.do_submit_pilots(site, 1, user=user)
    return p


def until(pilot_id: int, predicate, what: str, timeout: float = 120, poll: bool = False) -> Pilot:
    """Wait for ``predicate(pilot)``; with ``poll``, ask the worker to poll the batch systems."""

    def check():
        if poll:
            tasks.poll_pilots.delay()
        p = Pilot.objects.select_related("site").get(pk=pilot_id)
        return p if predicate(p) else None

    return wait_for(check, timeout=timeout, interval=1.0, what=what)


def requirements(tmp_path) -> dict:
    return {
        "paths": [str(tmp_path)],
        "tools": ["uname"],
        "min_work_disk_gb": 0.1,
        "min_tmp_disk_gb": 0.1,
    }


def assert_a_real_report(p: Pilot, system: str) -> None:
    assert p.state == "reported" and p.report_source == "post", p.message
    assert p.verdict == "passed", [c for c in p.checks if c["status"] != "pass"]
    checks = {c["name"]: c for c in p.checks}
    assert checks["portal_access"]["status"] == "pass"
    assert checks["tools"]["threshold"] == "uname" and checks["tools"]["status"] == "pass"
    assert checks["paths"]["status"] == "pass"
    assert p.facts["batch"]["system"] == system
    assert p.facts["batch"]["job_id"] == p.batch_job_id
    assert p.facts["clock"]["offset_s"] is not None and abs(p.facts["clock"]["offset_s"]) < 5
    assert p.token_used_at is not None


def test_a_pilot_to_the_local_site_reports_a_verdict(worker, siteadmin, pilots_dir):
    # a path the pilot's unprivileged user can see
    site = actions.do_add_site(
        "LOCAL", "local", requirements=requirements(pilots_dir), status="online"
    )

    p = submit(site, siteadmin)
    p = until(p.pk, lambda p: p.is_final, "the local pilot to report")

    assert_a_real_report(p, "local")
    p = until(p.pk, lambda p: p.batch_done, "the local job to end", poll=True)
    assert (p.batch_raw_state, p.batch_exit_code) == ("completed", 0)
    assert "report accepted" in p.stderr_tail and "DSS PILOT REPORT BEGIN" in p.stdout_tail


def test_a_local_pilot_that_crashes_before_reporting_shows_its_error_log(worker, siteadmin):
    # A node where the pilot's interpreter cannot be found: the job dies before the pilot runs.
    site = actions.do_add_site(
        "BROKEN", "local", submit_params={"env": {"PATH": "/nonexistent"}}, status="online"
    )

    p = submit(site, siteadmin)
    p = until(p.pk, lambda p: p.is_final, "the crashed pilot to be noticed", poll=True)

    assert p.state == "failed" and p.report is None
    assert p.message.startswith("the batch job ended (failed, exit code 127) without a report")
    assert "python3" in p.stderr_tail and "No such file or directory" in p.stderr_tail


def test_a_pilot_through_real_slurm_reports_a_verdict(worker, siteadmin, tmp_path):
    require(slurm_up(), "a Slurm cluster (SLURM_CONF from `bash .ci/slurm.sh start`)")
    site = actions.do_add_site(
        "SLURM-LOCALHOST",
        "slurm",
        submit_params={"partition": "debug", "time_limit": "00:05:00"},
        requirements=requirements(tmp_path),
        status="online",
    )

    p = submit(site, siteadmin)
    p = until(p.pk, lambda p: p.is_final, "the Slurm pilot to report")

    assert_a_real_report(p, "slurm")
    assert p.facts["batch"]["variables"]["SLURM_JOB_NAME"] == f"dss-pilot-{p.pk}"
    assert p.facts["batch"]["allocated_cores"] >= 1
    p = until(p.pk, lambda p: p.batch_done, "squeue/scontrol to show the job ended", poll=True)
    assert (p.batch_state, p.batch_raw_state, p.batch_exit_code) == ("completed", "COMPLETED", 0)
    assert "DSS PILOT REPORT END" in p.stdout_tail


def test_a_slurm_pilot_is_cancelled_with_scancel(worker, siteadmin, tmp_path):
    require(slurm_up(), "a Slurm cluster (SLURM_CONF from `bash .ci/slurm.sh start`)")
    # The pilot's command sleeps, so the job is still running when it is cancelled.
    site = actions.do_add_site(
        "SLURM-SLOW",
        "slurm",
        submit_params={"time_limit": "00:05:00"},
        requirements={"allowed_commands": ["slow"], "timeout_s": 200},
        status="online",
    )
    p = submit(site, siteadmin)
    p = until(p.pk, lambda p: p.state == "running", "the Slurm job to run", poll=True)

    actions.do_cancel_pilot(p, user=siteadmin)

    p = until(p.pk, lambda p: p.batch_done, "Slurm to show the job cancelled", poll=True)
    assert (p.state, p.batch_raw_state) == ("cancelled", "CANCELLED")
