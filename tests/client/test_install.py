"""The client installs on a laptop without the portal: ``pip install .`` in a clean virtual
environment gives ``import dss.client`` and ``dss.Portal`` without Django, and with only the
base dependencies (requests, fsspec) counts, histograms, submits and waits against a live
portal, and names the extra to install for arrays and tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from tests.conftest import ROOT
from tests.services import require

PACKAGES = ("dss", "dmu", "tagdb", "skims", "pilotchecker")

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import dss.client
    import dss
    dss.Portal
    before = sorted(m for m in sys.modules if m.split(".")[0] in ("django", "celery", "rest_framework"))
    try:
        import awkward
        has_awkward = True
    except ImportError:
        has_awkward = False
    url, token = sys.argv[1], sys.argv[2]
    portal = dss.Portal(url, token, poll_interval=0.1)
    tags = portal.tags("demo.hzz")
    count = tags.count("n_muon >= 2")
    h = tags.histogram("met", "n_muon >= 2", bins=5)
    job = portal.skim(collections=[tags], selection="n_muon >= 2")
    try:
        job.wait(timeout=0.3)
        waited = "ended"
    except dss.StillRunning as e:
        waited = e.code
    missing = {}
    for name, call in (("to_awkward", job.to_awkward), ("events", tags.events), ("to_hist", h.to_hist)):
        try:
            call()
        except dss.MissingExtra as e:
            missing[name] = str(e)
    job.cancel()
    after = sorted(m for m in sys.modules if m.split(".")[0] in ("django", "celery", "rest_framework"))
    print(json.dumps({
        "client_file": dss.client.__file__, "django_before": before, "django_after": after,
        "has_awkward": has_awkward, "count": int(count), "counts": h.counts,
        "output": job.output_name, "waited": waited, "missing": missing, "state": job.state,
    }))
    """
)


def copy_project(target):
    """The files ``pip install .`` reads, without the developer's venv, var/ or caches."""
    target.mkdir()
    shutil.copy(ROOT / "pyproject.toml", target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, ignore=ignore)


def run(cmd, timeout, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DSS_URL", "DSS_TOKEN")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def test_the_client_installs_and_works_without_django(live, tmp_path):
    probe = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            str(tmp_path / "probe"),
            "requests",
        ],
        timeout=180,
    )
    require(
        probe.returncode == 0, f"the package index (pip download requests: {probe.stderr[-300:]})"
    )
    source = tmp_path / "src"
    copy_project(source)
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=180)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "-q", str(source)], timeout=540)
    assert installed.returncode == 0, installed.stderr[-3000:]

    done = run(
        [str(python), "-c", CLIENT_SCRIPT, live.url, live.tokens["phys"]],
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["client_file"].startswith(str(venv)), "imported from the checkout, not the venv"
    assert found["django_before"] == [] and found["django_after"] == []
    assert found["has_awkward"] is False
    assert found["count"] == 1413 and sum(found["counts"]) <= 1413
    assert found["output"].startswith("user.phys.hzz.skim-")
    assert found["waited"] == "still_running" and found["state"] == "cancelled"
    assert set(found["missing"]) == {"to_awkward", "events", "to_hist"}
    for text in found["missing"].values():
        assert "pip install 'dss-portal[notebook]'" in text
    assert "awkward" in found["missing"]["to_awkward"] and "pandas" in found["missing"]["events"]
