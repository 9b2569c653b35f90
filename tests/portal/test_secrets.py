"""The portal's secrets stay out of what its processes start: the web and worker processes
drop them from their environment once the settings have read them, and read them from files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "SECRET_KEY": "portal-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "DATABASE_URL": "postgres://dss:db-password@db.example:5432/dss",
    "TAGDB_URL": "postgresql+psycopg://dss:db-password@db.example:5432/tags",
    "DSS_RUCIO_PASSWORD": "rucio-password",
}


def run_python(code: str, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def secret_files(tmp_path) -> dict:
    """Each secret in its own file, as Docker secrets give them, named by NAME_FILE."""
    env = {}
    for name, value in SECRETS.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        env[f"{name}_FILE"] = str(path)
    return env


def test_the_web_process_reads_secrets_from_files_and_its_children_never_see_them(
    secret_files, tmp_path
):
    seen = run_python(
        """
        import json, subprocess
        import dss.wsgi
        from django.conf import settings
        child = subprocess.run(["env"], capture_output=True, text=True).stdout
        print(json.dumps({
            "key": settings.SECRET_KEY,
            "db_host": settings.DATABASES["default"]["HOST"],
            "rucio": settings.DSS_RUCIO_PASSWORD,
            "child": child,
        }))
        """,
        {
            "DEBUG": "0",
            "ALLOWED_HOSTS": "dss.example",
            "DSS_PORTAL_URL": "https://dss.example",
            "DSS_VAR_DIR": str(tmp_path),
            **secret_files,
        },
    )

    assert seen["key"] == SECRETS["SECRET_KEY"] and seen["db_host"] == "db.example"
    assert seen["rucio"] == "rucio-password"
    for name, value in SECRETS.items():
        assert name not in seen["child"] and value not in seen["child"]
    assert "db-password" not in seen["child"]


def test_secrets_given_in_the_environment_are_dropped_once_read(tmp_path):
    seen = run_python(
        """
        import json, os
        import dss.wsgi
        from django.conf import settings
        print(json.dumps({"key": settings.SECRET_KEY, "left": sorted(os.environ)}))
        """,
        {
            "DEBUG": "0",
            "ALLOWED_HOSTS": "dss.example",
            "DSS_PORTAL_URL": "https://dss.example",
            "DSS_VAR_DIR": str(tmp_path),
            **SECRETS,
        },
    )

    assert seen["key"] == SECRETS["SECRET_KEY"]
    assert not set(SECRETS) & set(seen["left"])


def test_the_worker_and_beat_drop_the_secrets_when_they_start(monkeypatch):
    from celery.signals import beat_init, worker_init

    from dss.celery import _forget_secret_environment

    for signal in (worker_init, beat_init):
        assert _forget_secret_environment in [ref() for _, ref in signal.receivers]
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL_FILE", "/run/secrets/database_url")

    _forget_secret_environment()

    assert not (set(SECRETS) | {"DATABASE_URL_FILE"}) & set(os.environ)
