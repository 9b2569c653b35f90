"""``dmu rucio …``, the real command line against a live portal and the real Rucio: search,
a dataset's files, import into the portal's catalog, and a dataset's registration state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmu import catalogs
from dmu.models import Dataset
from tests.conftest import ROOT, ZMUMU, api_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def portal(live_server, siteadmin):
    return live_server.url, api_token(siteadmin)


def dmu(portal, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    url, token = portal
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    env.update(
        PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(cwd / "config"), DSS_URL=url, DSS_TOKEN=token
    )
    return subprocess.run(
        [sys.executable, "-m", "dmu.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dmu_searches_lists_imports_and_reports_the_registration(in_rucio, portal, tmp_path):
    scope, name = in_rucio
    found = dmu(portal, "rucio", "search", scope, "*zmu*", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [f"{scope}:{name}"]

    files = dmu(portal, "--json", "rucio", "files", f"{scope}:{name}", cwd=tmp_path)
    assert files.returncode == 0, files.stderr
    (f,) = json.loads(files.stdout)
    assert f["name"] == "uproot-Zmumu.root" and f["bytes"] == ZMUMU.stat().st_size

    done = dmu(portal, "rucio", "import", f"{scope}:{name}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name}: 1 file(s) added (1 in all, 2,304 events)"
    assert Dataset.objects.filter(name=name).exists()
    again = dmu(portal, "rucio", "search", scope, cwd=tmp_path)
    assert again.stdout.split() == [f"{scope}:{name}", "(in", "the", "portal)"]

    status = dmu(portal, "rucio", "status", name, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip().startswith(f"{name}: registered in Rucio as {scope}:{name}")


def test_dmu_rucio_errors_exit_with_their_codes(rucio, portal, tmp_path, settings):
    bad = dmu(portal, "rucio", "files", "no-colon", cwd=tmp_path)
    assert bad.returncode == 2 and "a Rucio DID is scope:name" in bad.stderr
    missing = dmu(portal, "rucio", "search", "nosuchscope", cwd=tmp_path)
    assert missing.returncode == 3 and "Rucio has no scope 'nosuchscope'" in missing.stderr
    never = dmu(portal, "rucio", "status", "user.nobody.nothing", cwd=tmp_path)
    assert never.returncode == 3 and "user.nobody.nothing" in never.stderr
    settings.DSS_RUCIO_URL = "http://127.0.0.1:9"
    down = dmu(portal, "--json", "rucio", "search", "x", cwd=tmp_path)
    assert down.returncode != 0 and json.loads(down.stdout)["error"] == "rucio_unavailable"
    assert catalogs.rucio_configured()
