"""HTTPS behind a proxy: X-Forwarded-Proto/For are believed only from DSS_TRUSTED_PROXIES;
pilots can report to an http:// portal URL only when the deployment says so; `make run`
gives pilots the address it serves on."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from dss.middleware import TrustedProxyMiddleware
from tests.conftest import ROOT, running_gunicorn
from tests.portal.test_settings import PRODUCTION, run

PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'exempt': getattr(s, 'SECURE_REDIRECT_EXEMPT', []),"
    " 'proxy': getattr(s, 'SECURE_PROXY_SSL_HEADER', None)}))"
)


def seen_by_the_portal(settings, remote: str, **headers) -> dict:
    """What the rest of the portal sees of a request from ``remote`` with ``headers``."""
    seen = {}

    def view(request):
        seen.update(
            secure=request.is_secure(),
            remote=request.META["REMOTE_ADDR"],
            forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
        )
        return HttpResponse()

    request = RequestFactory().get("/", REMOTE_ADDR=remote, **headers)
    TrustedProxyMiddleware(view)(request)
    return seen


@pytest.fixture
def behind_a_proxy(settings):
    settings.DSS_TRUSTED_PROXIES = ["10.0.0.2", "192.168.7.0/24"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def test_forwarded_headers_from_a_client_are_ignored(behind_a_proxy, settings):
    seen = seen_by_the_portal(
        settings,
        "203.0.113.9",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_FOR="10.0.0.2",
    )
    assert seen == {"secure": False, "remote": "203.0.113.9", "forwarded_for": None}


def test_forwarded_headers_from_a_trusted_proxy_are_believed(behind_a_proxy, settings):
    seen = seen_by_the_portal(
        settings,
        "192.168.7.40",
        HTTP_X_FORWARDED_PROTO="https",
        # the client put a false first hop; the proxies appended the real ones
        HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7, 10.0.0.2",
    )
    assert seen["secure"] is True and seen["remote"] == "198.51.100.7"


@pytest.mark.django_db
def test_the_https_redirect_is_not_fooled_by_a_client_header(behind_a_proxy, settings, physicist):
    settings.SECURE_SSL_REDIRECT = True
    c = Client(REMOTE_ADDR="203.0.113.9")
    c.force_login(physicist)
    r = c.get("/datasets/", HTTP_X_FORWARDED_PROTO="https")
    assert r.status_code == 301 and r.url.startswith("https://")
    proxied = Client(REMOTE_ADDR="10.0.0.2")
    proxied.force_login(physicist)
    assert proxied.get("/datasets/", HTTP_X_FORWARDED_PROTO="https").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_under_gunicorn_a_client_on_the_same_machine_cannot_claim_https(tmp_path, collected_static):
    """gunicorn itself would believe X-Forwarded-Proto from 127.0.0.1; its configuration
    in the checkout leaves that to the portal, which believes only DSS_TRUSTED_PROXIES."""

    def status(url: str) -> int:
        request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            return opener.open(request, timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    with running_gunicorn(tmp_path, collected_static, SECURE_SSL_REDIRECT="1",
                          DSS_PILOT_PLAIN_HTTP="1") as url:  # fmt: skip
        assert status(f"{url}/login/") == 301
    with running_gunicorn(tmp_path, collected_static, SECURE_SSL_REDIRECT="1",
                          DSS_PILOT_PLAIN_HTTP="1", DSS_TRUSTED_PROXIES="127.0.0.1") as url:  # fmt: skip
        assert status(f"{url}/login/") == 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_without_trusted_proxies_no_proxy_header_is_configured(tmp_path):
    import json

    env = {**PRODUCTION, "DSS_VAR_DIR": str(tmp_path)}
    assert json.loads(run(PRINT, env).stdout)["proxy"] is None
    env["DSS_TRUSTED_PROXIES"] = "10.0.0.2"
    assert json.loads(run(PRINT, env).stdout)["proxy"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_an_http_portal_url_behind_the_https_redirect_is_refused_at_start(tmp_path):
    env = {**PRODUCTION, "DSS_VAR_DIR": str(tmp_path), "DSS_PORTAL_URL": "http://dss.example.org"}
    r = run(PRINT, env, check=False)
    assert r.returncode != 0
    assert "DSS_PORTAL_URL=http://dss.example.org is http://" in r.stderr
    assert "DSS_PILOT_PLAIN_HTTP=1" in r.stderr


def test_pilots_may_report_over_http_when_the_deployment_says_so(tmp_path):
    import json

    env = {
        **PRODUCTION,
        "DSS_VAR_DIR": str(tmp_path),
        "DSS_PORTAL_URL": "http://dss.example.org",
        "DSS_PILOT_PLAIN_HTTP": "1",
    }
    exempt = json.loads(run(PRINT, env).stdout)["exempt"]
    assert exempt == [r"^api/ping/$", r"^api/pilots/\d+/report/$", r"^api/skims/jobs/\d+/report/$"]


@pytest.mark.django_db
def test_only_the_pilot_endpoints_skip_the_https_redirect(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = settings.DSS_PILOT_HTTP_PATHS
    c = Client()
    assert c.get("/api/ping/").status_code == 200
    r = c.post("/api/pilots/1/report/", b"{}", content_type="application/json")
    assert r.status_code == 403  # reached the endpoint: no token, not a redirect
    assert c.get("/api/sites/").status_code == 301
    assert c.get("/login/").status_code == 301


def test_make_run_gives_pilots_the_address_it_serves_on(tmp_path):
    """scripts/run.sh, with stand-ins for the portal's python and celery that record the
    DSS_PORTAL_URL they were started with."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "celery"):
        stub = bin_dir / name
        # the web server's stand-in waits a moment, so the worker's has started by then;
        # the worker's runs until run.sh stops it, as the real one does
        stub.write_text(
            f'#!/bin/sh\necho "{name} $* $DSS_PORTAL_URL" >> "$0.log"\n'
            + (
                '[ "$2" = runserver ] && sleep 1\nexit 0\n'
                if name == "python"
                else "exec sleep 60\n"
            )
        )
        stub.chmod(0o755)

    def started_with(**env) -> set[str]:
        for log in bin_dir.glob("*.log"):
            log.unlink()
        clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "DSS_PORTAL_URL")}
        subprocess.run(
            ["bash", str(tmp_path / "scripts" / "run.sh")],
            env={**clean, **env},
            check=True,
            capture_output=True,
            timeout=60,
        )
        lines = (bin_dir / "python.log").read_text().splitlines()
        lines += (bin_dir / "celery.log").read_text().splitlines()
        return {line.rsplit(" ", 1)[-1] for line in lines}

    assert started_with() == {"http://127.0.0.1:8000"}
    assert started_with(HOST="127.0.0.2", PORT="8123") == {"http://127.0.0.2:8123"}
    assert started_with(HOST="0.0.0.0", PORT="9000") == {"http://127.0.0.1:9000"}
    assert started_with(PORT="9000", DSS_PORTAL_URL="https://dss.example.org") == {
        "https://dss.example.org"
    }
