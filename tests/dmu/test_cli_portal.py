"""``dmu get`` and ``dmu put`` against a live portal, run as the real command line: files go to
the local and to the XRootD storage element, are registered through the REST API with a
token, and come back byte for byte; errors exit with their documented codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dmu import actions
from dmu.models import Dataset, Replica
from dmu.storage import deterministic_path
from tests.conftest import HZZ, ROOT, ZMUMU, api_token


@pytest.fixture
def portal(live_server, siteadmin, storage_root, xrootd_server, tmp_path):
    """A live portal with a local SE (DISK) and an XRootD SE (XRD), and an admin's token."""
    actions.do_add_storage_element("DISK", storage_root.as_uri(), "local disk")
    actions.do_add_storage_element(
        "XRD", xrootd_server.se_url(f"cli-{uuid.uuid4().hex[:8]}"), "XRootD on loopback"
    )
    token = api_token(siteadmin)
    return live_server.url, token


def dmu(portal, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    url, token = portal
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    env.update(
        PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(cwd / "config"), DSS_URL=url, DSS_TOKEN=token
    )
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "dmu.cli", *args]
        if (ROOT / ".venv" / "bin" / "python").exists()
        else [sys.executable, "-m", "dmu.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("se", ["DISK", "XRD"])
def test_put_registers_the_file_and_get_brings_back_the_same_bytes(portal, tmp_path, se):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(HZZ, work / "uproot-HZZ.root")
    done = dmu(
        portal, "--json", "put", "uproot-HZZ.root", se, "--dataset", "user.cli.hzz", cwd=work
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rel = deterministic_path("user", "uproot-HZZ.root")
    assert doc["path"] == rel and doc["storage_element"] == se
    assert doc["transfer"]["bytes"] == HZZ.stat().st_size and doc["dataset"]["files_added"] == 1
    f = Dataset.objects.get(name="user.cli.hzz").files.get()
    assert f.events == 2421 and str(f.guid) == "76a647e8-03ee-11e2-9717-668ba983beef"
    replica = Replica.objects.select_related("storage_element").get(file=f)
    assert replica.storage_element.name == se and replica.path == rel
    if se == "XRD":
        assert replica.storage_element.endpoint().server_checksum(rel) == f.adler32

    done = dmu(portal, "get", "user.cli.hzz", "fetched", cwd=work)
    assert done.returncode == 0, done.stderr
    assert f"adler32 {f.adler32}" in done.stdout
    assert (work / "fetched" / "uproot-HZZ.root").read_bytes() == HZZ.read_bytes()

    done = dmu(portal, "-q", "get", "user.cli.hzz/uproot-HZZ.root", "one.root", cwd=work)
    assert done.returncode == 0 and (work / "one.root").read_bytes() == HZZ.read_bytes()


def test_get_of_a_missing_dataset_exits_3(portal, tmp_path):
    done = dmu(portal, "get", "user.cli.nothing", "out", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.strip() == "dmu: dataset: no dataset named 'user.cli.nothing'"
    done = dmu(portal, "--json", "get", "user.cli.nothing/a.root", "out", cwd=tmp_path)
    assert done.returncode == 3 and json.loads(done.stdout)["error"] == "not_found"


def test_put_of_another_file_under_a_name_already_taken_exits_4(portal, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    shutil.copyfile(HZZ, first / "events.root")
    shutil.copyfile(ZMUMU, second / "events.root")
    assert (
        dmu(portal, "put", "events.root", "XRD", "--dataset", "user.cli.x", cwd=first).returncode
        == 0
    )
    done = dmu(portal, "put", "events.root", "XRD", "--dataset", "user.cli.x", cwd=second)
    assert done.returncode == 4
    assert "destination already holds a different file" in done.stderr
    f = Dataset.objects.get(name="user.cli.x").files.get()
    assert f.bytes == HZZ.stat().st_size  # the first file stays as registered

    done = dmu(portal, "put", "events.root", "NOWHERE", "--dataset", "user.cli.x", cwd=second)
    assert done.returncode == 3 and "no storage element 'NOWHERE'" in done.stderr


def test_a_wrong_token_is_exit_1_naming_the_token(portal, tmp_path):
    url, _ = portal
    done = dmu((url, "not-a-token"), "get", "user.cli.any", "out", cwd=tmp_path)
    assert done.returncode == 1 and "check the API token" in done.stderr


def test_a_physicist_puts_into_their_own_scope_only(live_server, physicist, storage_root, tmp_path):
    actions.do_add_storage_element(
        "OPEN", storage_root.as_uri(), "open to users", user_writable=True
    )
    portal = (live_server.url, api_token(physicist))
    shutil.copyfile(HZZ, tmp_path / "mine.root")

    mine = dmu(portal, "put", "mine.root", "OPEN", "--dataset", "user.phys.mine", cwd=tmp_path)
    theirs = dmu(portal, "put", "mine.root", "OPEN", "--dataset", "user.bob.x", cwd=tmp_path)

    assert mine.returncode == 0, mine.stderr
    assert Dataset.objects.get(name="user.phys.mine").files.count() == 1
    assert theirs.returncode == 9
    assert "outside your scope: name your datasets user.phys.<name>" in theirs.stderr
    assert not Dataset.objects.filter(name="user.bob.x").exists()
