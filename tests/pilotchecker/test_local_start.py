"""A local job asked about the moment it was submitted is starting, not dead: its supervisor
can still be inside exec, with no command line in /proc that names the job yet."""

import json
import subprocess
import time

import pytest

from pilotchecker.batch import FAILED, QUEUED, LocalAdapter

JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def unnamed_process():
    """A live process whose command line does not name the job, as a supervisor mid-exec."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc.pid
    proc.kill()
    proc.wait()


def just_submitted(local: LocalAdapter, pid: int, submitted_at: float) -> None:
    local.state_dir.mkdir(parents=True)
    state = {"job_id": JOB, "state": "queued", "submitted_at": submitted_at}
    (local.state_dir / f"{JOB}.json").write_text(json.dumps(state))
    (local.state_dir / f"{JOB}.pid").write_text(str(pid))


def test_a_job_whose_supervisor_is_still_starting_is_queued(tmp_path, unnamed_process):
    local = LocalAdapter(state_dir=tmp_path / "state")
    just_submitted(local, unnamed_process, time.time())

    status = local.status([JOB])[JOB]

    assert (status.state, status.reason) == (QUEUED, "starting")


def test_a_supervisor_that_never_showed_itself_is_dead_after_a_minute(tmp_path, unnamed_process):
    local = LocalAdapter(state_dir=tmp_path / "state")
    just_submitted(local, unnamed_process, time.time() - 120)

    status = local.status([JOB])[JOB]

    assert status.state == FAILED and "supervisor died" in status.reason
