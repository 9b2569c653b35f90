"""The fault suite's tools: real Celery workers (with their own beat, so the lease sweep
runs) that a test starts, pauses at a failpoint (dss/failpoints.py), kills with SIGKILL and
starts again; on Redis and on the embedded broker, with leases shortened so that recovery
takes seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import ROOT, _database_url_for_worker, wait_for
from tests.services import REDIS_URL, require, require_port

# Short leases: a killed worker's unit is handed on within about LEASE + SWEEP seconds.
LEASE = {
    "DSS_LEASE_SECONDS": "3",
    "DSS_LEASE_HEARTBEAT_SECONDS": "0.5",
    "DSS_SWEEP_SECONDS": "1",
    "DSS_LEASE_ATTEMPTS": "3",
}
# How long a job may take to end after its worker was killed and started again.
RECOVERY_BOUND = 90


@contextmanager
def _broker_for_this_process(url: str, options: dict) -> Iterator[None]:
    """Send this test process's tasks to ``url`` (the portal's Celery app keeps one
    connection pool, made for the broker it was configured with)."""
    from dss.celery import app

    def reset() -> None:
        # kombu keeps one pool per broker address: dropping the app's references makes it
        # look up the pool of the broker configured now.
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None

    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    reset()
    app.conf.broker_url, app.conf.broker_transport_options = url, options
    try:
        yield
    finally:
        reset()
        app.conf.broker_url, app.conf.broker_transport_options = saved


@pytest.fixture(params=["embedded", "redis"])
def broker(request) -> Iterator[str]:
    """The broker the workers and this test use: the embedded (filesystem) one, or Redis."""
    if request.param == "redis":
        host, port = REDIS_URL.split("//", 1)[1].split("/")[0].split(":")
        require_port(host, int(port), "Redis")
        url, options = REDIS_URL, {"visibility_timeout": 3600}
    else:
        folder = Path(settings.VAR_DIR) / "celery-broker"
        options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
        for key in ("data_folder_in", "control_folder"):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
        url = "filesystem://"
    with _broker_for_this_process(url, options):
        yield url


class Workers:
    """Start, pause, kill and restart real worker processes for one test."""

    def __init__(self, broker: str, folder: Path):
        self.broker = broker
        self.folder = folder
        self.failpoints = folder / "failpoints"
        self.procs: list[subprocess.Popen] = []
        self.started = 0

    def start(self, failpoints: str = "", as_run_starts_it: bool = False) -> subprocess.Popen:
        """A worker (two pool processes and beat), ready; ``failpoints`` as in
        dss/failpoints.py, e.g. ``"skim.part.stored=60"``. ``as_run_starts_it``: with the
        options of ``make run`` (scripts/run.sh), gossip, mingle and heartbeats on."""
        self.started += 1
        env = dict(os.environ)
        env.update(LEASE)
        env.update(
            {
                "DATABASE_URL": _database_url_for_worker(),
                "DSS_STORAGE_ROOT": str(settings.DSS_STORAGE_ROOT),
                "DSS_STORAGE_ROOTS": ",".join(map(str, settings.DSS_STORAGE_ROOTS)),
                "DSS_SCRATCH_DIR": str(settings.DSS_SCRATCH_DIR),
                "TAGDB_URL": settings.TAGDB_URL,
                "CELERY_BROKER_URL": self.broker,
                "DSS_FAILPOINTS": failpoints,
                "DSS_FAILPOINT_DIR": str(self.failpoints),
            }
        )
        log = self.folder / f"worker-{self.started}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dss",
                "worker",
                "--beat",
                "--schedule",
                str(self.folder / f"beat-{self.started}"),
                "-Q",
                settings.CELERY_TASK_DEFAULT_QUEUE,
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                *(
                    []
                    if as_run_starts_it
                    else ["--without-gossip", "--without-mingle", "--without-heartbeat"]
                ),
                "-n",
                f"fault-{os.getpid()}-{self.started}@%h",
            ],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole, pool and beat too
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill(proc)
                require(False, f"a Celery worker (log: {log.read_text()[-2000:]})")
            time.sleep(0.1)
        return proc

    def reached(self, name: str, timeout: float = 60) -> None:
        """Wait until a worker process pauses at failpoint ``name``."""

        def paused():
            return self.failpoints.exists() and any(
                p.name.startswith(name + ".") for p in self.failpoints.iterdir()
            )

        wait_for(paused, timeout=timeout, what=f"a worker to reach {name} ({self.logs()})")

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and everything it started, as a crash or the OOM killer would."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def logs(self) -> str:
        return ", ".join(str(p) for p in sorted(self.folder.glob("worker-*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(broker, transactional_db, tmp_path, settings) -> Iterator[Workers]:
    for key, value in LEASE.items():
        setattr(settings, key, float(value) if "." in value or "SECONDS" in key else int(value))
    folder = tmp_path / "workers"
    folder.mkdir()
    from dss.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)
    w = Workers(broker, folder)
    yield w
    w.stop_all()


def temporaries(*roots: Path) -> list[str]:
    """Files that writes left under temporary names (``.dmu-part-``, ``.part``, ``.tmp``)."""
    found = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for f in files:
                if ".dmu-part-" in f or f.endswith((".part", ".tmp")):
                    found.append(os.path.join(dirpath, f))
    return found


def catalog_is_clean() -> str:
    """The output of ``check_catalog --full``; fails the test if it found anything."""
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    try:
        call_command("check_catalog", "--full", stdout=out)
    except CommandError as e:
        pytest.fail(f"check_catalog found disagreements ({e}):\n{out.getvalue()}")
    return out.getvalue()


@pytest.fixture
def split_hzz(local_se, storage_root):
    """demo.hzz split into three files, registered."""
    from dmu import actions
    from tests.skims.conftest import write_split

    dataset, _ = actions.check_register_dataset(
        "demo.hzz_split", local_se, write_split(storage_root)
    )
    return dataset
