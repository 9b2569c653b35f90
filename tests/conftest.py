"""Fixtures shared by the whole suite: the three role users and an outsider, a local storage
element with the demo files, the demo datasets, and a real Celery worker process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from tests.services import require

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
HZZ = DEMO / "uproot-HZZ.root"
ZMUMU = DEMO / "uproot-Zmumu.root"


def make_user(username: str, roles: list[str]):
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password=f"{username}-pw")
    user.groups.add(*Group.objects.filter(name__in=roles))
    return user


def api_token(user, name: str = "tests") -> str:
    """A new API token's key for ``user``, as /account/ makes one."""
    from dss.tokens import do_issue_token

    return do_issue_token(user, name).key


# Tables a transactional test leaves as it found them: their rows come from the models
# themselves (post_migrate), never from a test.
_KEPT_BY_FLUSH = frozenset({"django_content_type", "auth_permission"})


@pytest.fixture(scope="session", autouse=True)
def _quick_flush():
    """A transactional test ends with Django's ``flush``. On PostgreSQL that is one TRUNCATE
    of every table (new files for each, and a lock that waits for the worker processes'
    connections) and then post_migrate, which rebuilds content types, permissions and roles:
    about a second per test. Here the rows go with DELETE in one transaction (the foreign
    keys are deferred to its end), content types and permissions stay, and only the role
    groups are made again. What each test sees is the same: empty tables and the roles."""
    from django.core.management.commands import flush

    from dss.roles import ensure_roles

    original_sql_flush, original_emit = flush.sql_flush, flush.emit_post_migrate_signal

    def sql_flush(style, connection, reset_sequences=True, allow_cascade=False):
        tables = [
            t
            for t in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if t not in _KEPT_BY_FLUSH
        ]
        if connection.vendor == "postgresql" and not reset_sequences:
            quote = connection.ops.quote_name
            return ["SET CONSTRAINTS ALL DEFERRED"] + [f"DELETE FROM {quote(t)}" for t in tables]
        return connection.ops.sql_flush(
            style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )

    def emit_post_migrate_signal(verbosity, interactive, db, **kwargs):
        ensure_roles()

    flush.sql_flush, flush.emit_post_migrate_signal = sql_flush, emit_post_migrate_signal
    yield
    flush.sql_flush, flush.emit_post_migrate_signal = original_sql_flush, original_emit


@pytest.fixture(autouse=True)
def _fresh_request_counts():
    """Each test starts with no API request counted against anyone (throttling): the counts
    live in the process's cache, which outlives a test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def physicist(db):
    return make_user("phys", ["physicist"])


@pytest.fixture
def siteadmin(db):
    return make_user("admin1", ["admin"])


@pytest.fixture
def operator(db):
    return make_user("oper", ["operator"])


@pytest.fixture
def outsider(db):
    return make_user("nobody", [])


@pytest.fixture(scope="session", autouse=True)
def storage_under_the_test_directory(tmp_path_factory):
    """The suite's storage elements live in pytest's temporary directory: allow it as a
    local storage root for the whole run, as a site lists its volumes in DSS_STORAGE_ROOTS."""
    settings.DSS_STORAGE_ROOTS = [str(tmp_path_factory.getbasetemp())]


@pytest.fixture
def storage_root(tmp_path, settings):
    root = tmp_path / "storage"
    root.mkdir()
    settings.DSS_STORAGE_ROOT = root
    return root


@pytest.fixture
def local_se(db, storage_root):
    from dmu import actions

    # the storage element skims write to: open to users' own datasets
    return actions.do_add_storage_element(
        "LOCAL", storage_root.as_uri(), "test disk", user_writable=True
    )


def put_file(storage_root: Path, source: Path, rel: str) -> str:
    """Place a file on the local storage element at ``rel``; returns ``rel``."""
    target = storage_root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return rel


def corrupt_basket(path: Path, branch: str = "Muon_Px", tree: str = "events") -> None:
    """Damage the compressed data of ``branch``'s first basket in place: the file keeps its
    size, its header and its directory, as a disk or a copy that flips bytes leaves it."""
    import uproot

    with uproot.open(path) as f:
        b = f[tree][branch]
        seek = int(b.member("fBasketSeek")[0])
        keylen = int(b.basket(0).member("fKeylen"))
    start = seek + keylen + 9 + 16  # past the key and ROOT's compression header
    with open(path, "r+b") as fh:
        fh.seek(start)
        damaged = bytes(x ^ 0xFF for x in fh.read(48))
        fh.seek(start)
        fh.write(damaged)


@pytest.fixture
def demo_datasets(local_se, storage_root):
    """The two demo datasets, registered through the action as an admin would."""
    from dmu import actions

    hzz = put_file(storage_root, HZZ, "demo/uproot-HZZ.root")
    zmm = put_file(storage_root, ZMUMU, "demo/uproot-Zmumu.root")
    a, _ = actions.check_register_dataset("demo.hzz", local_se, [hzz])
    b, _ = actions.check_register_dataset("demo.zmumu", local_se, [zmm])
    return a, b


@pytest.fixture
def pilots_dir():
    """A pilot directory that every user may enter, as PILOT_DIR must be: local pilots run as
    an unprivileged user when the tests run as root (pytest's own temporary folders are
    private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="dss-test-pilots-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _database_url_for_worker() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[s["ENGINE"].rsplit(".", 1)[-1]]
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"{scheme}://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or ''}/{s['NAME']}"


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """A real Celery worker process on this run's queue, reading the test database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = _database_url_for_worker()
    env["DSS_STORAGE_ROOT"] = str(settings.DSS_STORAGE_ROOT)
    env["DSS_STORAGE_ROOTS"] = ",".join(map(str, settings.DSS_STORAGE_ROOTS))
    env["DSS_STORAGE_HOSTS"] = ",".join(settings.DSS_STORAGE_HOSTS)
    env["TAGDB_URL"] = settings.TAGDB_URL
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    celery = [sys.executable, "-m", "celery", "-A", "dss"]
    subprocess.run(
        [*celery, "purge", "-f", "-Q", queue], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [
            *celery,
            "worker",
            "-Q",
            queue,
            "--pool=prefork",
            "--concurrency=2",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            require(False, f"a Celery worker (log: {log.read_text()[-2000:]})")
        time.sleep(0.2)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """The static files collected once, as a production deployment serves them."""
    static = tmp_path_factory.mktemp("static")
    env = {**os.environ, "STATIC_ROOT": str(static), "DEBUG": "0", "SECRET_KEY": "x" * 64}
    env.update(SECURE_SSL_REDIRECT="0", ALLOWED_HOSTS="127.0.0.1")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    return static


@contextmanager
def running_gunicorn(tmp_path: Path, static: Path, **env_extra: str) -> Iterator[str]:
    """The portal under gunicorn with production settings (DEBUG off) on a free loopback
    port, reading the test database, started from the checkout (so with its
    gunicorn.conf.py); yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        DEBUG="0",
        SECRET_KEY="gunicorn-test-" + "k" * 60,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        STATIC_ROOT=str(static),
        DATABASE_URL=_database_url_for_worker(),
        TAGDB_URL=settings.TAGDB_URL,
        DSS_STORAGE_ROOT=str(settings.DSS_STORAGE_ROOT),
        DSS_STORAGE_ROOTS=",".join(map(str, settings.DSS_STORAGE_ROOTS)),
        PILOT_DIR=str(settings.PILOT_DIR),
        DSS_PORTAL_URL=url,
    )
    env.update(env_extra)
    log = tmp_path / f"gunicorn-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dss.wsgi", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", "2", "--timeout", "120", "--access-logfile", "-"],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/api/ping/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).read()
    except urllib.error.HTTPError:
        return True  # it answered, if only with a redirect or an error
    except OSError:
        return False
    return True


@pytest.fixture
def gunicorn_portal(transactional_db, tmp_path, collected_static):
    """The portal under gunicorn (see running_gunicorn), in plain HTTP: no TLS here, so the
    HTTPS redirect is off and the portal URL that pilots post to is this one."""
    with running_gunicorn(tmp_path, collected_static) as url:
        yield url
