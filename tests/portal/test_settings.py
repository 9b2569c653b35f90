"""Settings come from the environment, with embedded defaults; production passes check --deploy."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    " 'broker': s.CELERY_BROKER_URL, 'tagdb': s.TAGDB_URL, 'storage': str(s.DSS_STORAGE_ROOT),"
    " 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS}))"
)
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 60 + "-production-secret-with-enough-variety-9f8e7d",
    "ALLOWED_HOSTS": "dss.example.org",
    "DATABASE_URL": "postgres://dss:pw@db:5432/dss",
    "CELERY_BROKER_URL": "redis://redis:6379/0",
    "DSS_PORTAL_URL": "https://dss.example.org",
}


def run(code_or_args, env_extra, check=True):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "TAGDB_URL",
            "DSS_STORAGE_ROOT",
            "DEBUG",
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "DSS_PORTAL_URL",
            "DSS_TRUSTED_PROXIES",
        )
    }
    env.update(env_extra, DJANGO_SETTINGS_MODULE="dss.settings")
    args = code_or_args if isinstance(code_or_args, list) else [sys.executable, "-c", code_or_args]
    return subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=120
    )


def test_with_nothing_set_it_uses_the_embedded_defaults(tmp_path):
    out = json.loads(run(PRINT, {"DSS_VAR_DIR": str(tmp_path)}).stdout)
    assert out["engine"] == "django.db.backends.sqlite3" and out["name"].startswith(str(tmp_path))
    assert out["broker"] == "filesystem://"
    assert out["tagdb"] == f"parquet://{tmp_path.resolve()}/tags"
    assert out["storage"] == f"{tmp_path}/storage"
    assert out["debug"] is True


def test_production_variables_are_read(tmp_path):
    out = json.loads(
        run(
            PRINT,
            {
                **PRODUCTION,
                "TAGDB_URL": "postgresql+psycopg://t@db/tags",
                "DSS_STORAGE_ROOT": "/srv/storage",
            },
        ).stdout
    )
    assert out["engine"] == "django.db.backends.postgresql" and out["name"] == "dss"
    assert out["broker"] == "redis://redis:6379/0"
    assert out["tagdb"] == "postgresql+psycopg://t@db/tags" and out["storage"] == "/srv/storage"
    assert out["debug"] is False and out["hosts"] == ["dss.example.org"]


def test_a_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "y" * 60 + "\n")
    env = {**PRODUCTION, "SECRET_KEY_FILE": str(secret)}
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    assert run(code, env).stdout.strip() == "from-a-file-" + "y" * 60


def test_check_deploy_reports_nothing_in_production():
    r = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        PRODUCTION,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "no issues" in r.stdout


def test_a_bad_value_is_a_clear_error():
    r = run(PRINT, {"DEBUG": "maybe"}, check=False)
    assert r.returncode != 0 and "DEBUG='maybe' is not a boolean" in r.stderr
    r = run(PRINT, {"DEBUG": "0"}, check=False)
    assert "SECRET_KEY must be set when DEBUG is off" in r.stderr
