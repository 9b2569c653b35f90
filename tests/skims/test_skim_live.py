"""The whole journey on the real stack: a live portal, a real Celery worker, the dss CLI."""

import json
import os
import subprocess
import sys

import pytest

from dmu.models import Dataset
from tests.conftest import ROOT, api_token


@pytest.fixture
def portal(live_server, hzz_tags, physicist, operator, celery_worker):
    tokens = {u.username: api_token(u) for u in (physicist, operator)}
    return live_server.url, tokens


def dss(url, token, *args, timeout=180):
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "dss.cli", "--url", url, "--token", token, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_a_physicist_skims_from_the_command_line_and_an_operator_reruns(portal, hzz_tags):
    url, tokens = portal
    r = dss(
        url,
        tokens["phys"],
        "--json",
        "skim",
        "submit",
        "-c",
        str(hzz_tags.pk),
        "-s",
        "n_muon >= 2",
        "-o",
        "user.phys.cli",
        "-b",
        "NMuon,Muon_*",
        "--watch",
    )
    assert r.returncode == 0, r.stderr
    skim = json.loads(r.stdout)
    assert skim["state"] == "succeeded" and skim["events_written"] == 1413
    assert Dataset.objects.get(name="user.phys.cli").files.get().events == 1413

    r = dss(url, tokens["phys"], "skim", "list", "--mine")
    assert "user.phys.cli" in r.stdout and r.returncode == 0
    r = dss(url, tokens["phys"], "skim", "status", str(skim["id"]))
    assert "1413 written of 1413 selected" in r.stdout

    r = dss(url, tokens["oper"], "provenance", str(skim["id"]), "--format", "prov-json")
    assert r.returncode == 0, r.stderr
    assert f"dss:skim-{skim['id']}" in json.loads(r.stdout)["activity"]

    r = dss(url, tokens["oper"], "--json", "skim", "rerun", str(skim["id"]), "--watch")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert (
        again["state"] == "succeeded"
        and again["events_written"] == 1413
        and again["output_name"] == "user.oper.cli_rerun1"
    )


def test_the_cli_reports_errors_with_their_exit_codes(portal, hzz_tags):
    url, tokens = portal
    r = dss(
        url,
        tokens["phys"],
        "skim",
        "submit",
        "-c",
        str(hzz_tags.pk),
        "-s",
        "n_muon >= ",
        "-o",
        "user.phys.x",
    )
    assert r.returncode == 2 and "column 11" in r.stderr and r.stderr.startswith("dss: ")
    r = dss(
        url,
        tokens["phys"],
        "skim",
        "submit",
        "-c",
        str(hzz_tags.pk),
        "-s",
        "n_muon > 50",
        "-o",
        "user.phys.none",
        "--watch",
    )
    assert r.returncode == 10 and "matches no events" in r.stdout
    r = dss(url, tokens["phys"], "skim", "status", "99999")
    assert r.returncode == 3 and "no skim #99999" in r.stderr
    r = dss(url, "wrong-token", "skim", "list")
    assert r.returncode != 0 and "token" in r.stderr.lower()
    r = dss("http://127.0.0.1:1", tokens["phys"], "skim", "list", timeout=60)
    assert r.returncode != 0 and "127.0.0.1:1" in r.stderr
