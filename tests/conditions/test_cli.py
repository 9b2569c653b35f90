"""``dss cond get`` and ``dss cond put`` against a live portal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, api_token, make_user


def dss(url: str, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "dss.cli", "--url", url, "--token", token, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.django_db(transaction=True)
def test_put_then_get_and_a_physicist_may_not_put(live_server, manager, monkeypatch, tmp_path):
    from conditions import actions

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    actions.do_create_global_tag(manager, "gt")
    actions.do_create_payload_type(manager, "beamspot")
    key = api_token(manager)
    r = dss(
        live_server.url,
        key,
        "cond",
        "put",
        "gt",
        "beamspot",
        "root://se//bs/1.json",
        "--checksum",
        "0a0b0c0d",
        "--start",
        "100:5",
        "--end",
        "200",
    )
    assert r.returncode == 0, r.stderr
    r = dss(live_server.url, key, "cond", "get", "gt", "150", "0")
    assert r.returncode == 0 and r.stdout.split() == ["beamspot", "root://se//bs/1.json"]
    r = dss(live_server.url, key, "--json", "cond", "get", "gt", "100", "4")
    assert json.loads(r.stdout) == {}
    physicist = make_user("p", ["physicist"])
    r = dss(
        live_server.url,
        api_token(physicist),
        "cond",
        "put",
        "gt",
        "beamspot",
        "x",
        "--checksum",
        "1",
        "--start",
        "300",
    )
    assert r.returncode == 9 and "conditions-manager" in r.stderr
    r = dss(
        live_server.url,
        key,
        "cond",
        "put",
        "gt",
        "beamspot",
        "x",
        "--checksum",
        "1",
        "--start",
        "three",
    )
    assert r.returncode == 2 and "--start" in r.stderr
