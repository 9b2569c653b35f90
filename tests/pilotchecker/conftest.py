"""PilotChecker fixtures: pilot work directories under tmp, a stand-in batch system for unit
tests (the real local and Slurm ones are used by the end-to-end tests), sites, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilotchecker import actions, tasks
from pilotchecker.batch import (
    CANCELLED,
    COMPLETED,
    QUEUED,
    RUNNING,
    UNKNOWN,
    BatchAdapter,
    BatchStatus,
)
from pilotchecker.models import Pilot


class FakeBatch(BatchAdapter):
    """A batch system the test drives by hand: it records submissions and answers what the
    test told it. It validates parameters like the local adapter does."""

    name = "local"

    def __init__(self):
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self.states: dict[str, BatchStatus] = {}
        self.cancelled: list[str] = []
        self.refuse: Exception | None = None

    def submit(self, script_path, workdir, params):
        clean = self.validate_params(params)
        if self.refuse is not None:
            raise self.refuse
        job_id = str(1000 + len(self.jobs))
        self.jobs[job_id] = {"script": Path(script_path), "workdir": Path(workdir), **clean}
        self.states[job_id] = BatchStatus(QUEUED, "PENDING", reason="Priority")
        return job_id

    def status(self, job_ids):
        return {j: self.states.get(j, BatchStatus(UNKNOWN)) for j in job_ids}

    def cancel(self, job_id):
        self.cancelled.append(job_id)
        self.states[job_id] = BatchStatus(CANCELLED, "CANCELLED", None, "")

    def run(self, job_id: str) -> None:
        self.states[job_id] = BatchStatus(RUNNING, "RUNNING")

    def end(
        self, job_id: str, *, stdout: str = "", stderr: str = "", state=COMPLETED, raw="COMPLETED",
        exit_code: int = 0,
    ) -> None:  # fmt: skip
        out, err = self.output_paths(job_id, self.jobs[job_id]["workdir"])
        out.write_text(stdout)
        err.write_text(stderr)
        self.states[job_id] = BatchStatus(state, raw, exit_code, "")


@pytest.fixture
def pilot_dir(tmp_path, settings):
    settings.PILOT_DIR = tmp_path / "pilots"
    settings.DSS_PORTAL_URL = "http://portal.example:8000"
    return settings.PILOT_DIR


@pytest.fixture
def fake_batch(monkeypatch, pilot_dir):
    fake = FakeBatch()
    monkeypatch.setattr(actions, "adapter_for", lambda site: fake)
    return fake


@pytest.fixture
def site(db):
    return actions.do_add_site(
        "UKI-TEST",
        "local",
        requirements={"min_cores": 1},
        status="online",
        pilot_interval_minutes=60,
    )


def send(site, n: int = 1, *, periodic: bool = False, user=None) -> list[Pilot]:
    """Submit pilots through the action, then run the submit task for each, as a worker would."""
    pilots = actions.do_submit_pilots(site, n, user=user, periodic=periodic)
    for p in pilots:
        tasks.submit_pilot(p.pk)
        p.refresh_from_db()
    return pilots


def token_of(pilot: Pilot) -> str:
    """The one-time token, read where the pilot reads it: its configuration file."""
    return json.loads((Path(pilot.workdir) / "pilot.json").read_text())["token"]


CHECKS = {
    "passed": [
        {"name": "python_version", "status": "pass", "code": "ok", "message": "Python 3.11.7 (required 3.6)", "value": "3.11.7", "threshold": "3.6"},
        {"name": "cores", "status": "pass", "code": "ok", "message": "cores for this job: 2 (required 1)", "value": 2, "threshold": 1},
    ],
    "warning": [
        {"name": "python_version", "status": "pass", "code": "ok", "message": "Python 3.11.7 (required 3.6)", "value": "3.11.7", "threshold": "3.6"},
        {"name": "memory", "status": "warn", "code": "memory_unknown", "message": "memory for this job: unknown, cannot compare with the required 2000 MB", "value": None, "threshold": 2000},
    ],
    "failed": [
        {"name": "python_version", "status": "pass", "code": "ok", "message": "Python 3.11.7 (required 3.6)", "value": "3.11.7", "threshold": "3.6"},
        {"name": "cvmfs", "status": "fail", "code": "cvmfs_not_mounted", "message": "/cvmfs/atlas.cern.ch is not mounted: /cvmfs does not exist on this node", "value": None, "threshold": "atlas.cern.ch"},
    ],
}  # fmt: skip


def a_report(verdict: str = "passed") -> dict:
    return {
        "pilot_version": "1.0.0",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:02+00:00",
        "facts": {
            "host": {"hostname": "wn042", "uid": 1000, "user": "pilot"},
            "cpu": {"model": "AMD EPYC", "arch": "x86_64", "arch_level": "x86_64-v3"},
            "batch": {"system": "slurm", "job_id": "1000", "variables": {"SLURM_JOB_ID": "1000"}},
            "missing": {},
        },
        "checks": CHECKS[verdict],
        "verdict": verdict,
    }


def body(report: dict) -> bytes:
    return json.dumps(report).encode()
