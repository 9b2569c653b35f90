"""Symbolic links on a local storage element cannot lead outside its root: registration
(action, API, page), transfers writing to it, and the ``dmu`` command line refuse such a
path, store nothing, and never show what the file outside holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from dmu import actions, tasks
from dmu.models import Dataset, File, Replica
from dmu.storage import StorageEndpoint
from dss.errors import InvalidInput
from tests.conftest import HZZ, ROOT, ZMUMU, put_file

pytestmark = pytest.mark.django_db

SECRET = b"SECRET-OUTSIDE-THE-STORAGE-ELEMENT " * 4


@pytest.fixture
def disk(db, storage_root):
    """The portal's local storage element (named LOCAL, as the demo's)."""
    return actions.do_add_storage_element("LOCAL", storage_root.as_uri(), "local disk")


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory beside the storage root with a private file and a ROOT file in it."""
    place = tmp_path / "outside"
    place.mkdir()
    (place / "secret.txt").write_bytes(SECRET)
    (place / "events.root").write_bytes(HZZ.read_bytes())
    return place


@pytest.fixture
def links(storage_root, outside) -> dict[str, str]:
    """Links on the storage element: to a file outside, to a directory outside, and to a
    ROOT file inside the root (which is allowed)."""
    (storage_root / "run1").mkdir()
    os.symlink(outside / "secret.txt", storage_root / "run1" / "secret.root")
    os.symlink(outside / "events.root", storage_root / "run1" / "events.root")
    os.symlink(outside, storage_root / "elsewhere")
    put_file(storage_root, ZMUMU, "real/zmumu.root")
    os.symlink(storage_root / "real" / "zmumu.root", storage_root / "run1" / "alias.root")
    return {
        "file": "run1/events.root",
        "secret": "run1/secret.root",
        "dir": "elsewhere/events.root",
        "inside": "run1/alias.root",
    }


def nothing_registered() -> bool:
    return not Dataset.objects.exists() and not File.objects.exists()


@pytest.mark.parametrize("kind", ["file", "secret", "dir"])
def test_registering_through_a_link_that_leads_outside_is_refused(disk, links, kind):
    with pytest.raises(InvalidInput) as err:
        actions.check_register_dataset("data24.escape", disk, [links[kind]])
    assert "symbolic link leads outside the storage element" in err.value.message
    assert links[kind] in err.value.where and "outside" not in err.value.where
    assert nothing_registered()


def test_an_absolute_path_through_a_linked_directory_is_refused(disk, links, storage_root):
    with pytest.raises(InvalidInput):
        actions.check_register_dataset(
            "data24.escape", disk, [str(storage_root / "elsewhere" / "events.root")]
        )
    assert nothing_registered()


def test_a_link_that_stays_inside_the_root_registers(disk, links):
    dataset, added = actions.check_register_dataset("data24.alias", disk, [links["inside"]])
    assert added == 1 and dataset.files.get().events == 2304


def test_the_api_refuses_a_link_outside_and_shows_none_of_its_bytes(disk, links, siteadmin):
    c = Client()
    c.force_login(siteadmin)
    for kind in ("secret", "dir", "file"):
        r = c.post(
            "/api/datasets/register/",
            {"dataset": "data24.escape", "storage_element": "LOCAL", "paths": [links[kind]]},
            content_type="application/json",
        )
        assert r.status_code == 400, r.content
        body = r.json()
        assert body["error"] == "invalid" and "symbolic link" in body["detail"]
        assert b"SECRET" not in r.content and b"outside/" not in r.content
    assert nothing_registered()


def test_a_queued_registration_from_the_page_fails_naming_the_link(disk, links, siteadmin):
    from dmu.models import RegistrationJob

    c = Client()
    c.force_login(siteadmin)
    r = c.post(
        "/datasets/register/",
        {"dataset": "data24.escape", "storage_element": "LOCAL", "paths": links["secret"]},
    )
    job = RegistrationJob.objects.get()
    assert r.status_code == 302 and r.url == f"/registrations/{job.pk}/"
    tasks.register_dataset(job.pk)  # as the worker does
    job.refresh_from_db()
    assert job.state == "failed" and "symbolic link leads outside" in job.message
    page = c.get(r.url).content.decode()
    assert "symbolic link leads outside" in page and "SECRET" not in page
    assert nothing_registered()


def test_a_file_that_is_not_root_is_refused_without_showing_its_first_bytes(
    disk, storage_root, siteadmin
):
    (storage_root / "notes.root").write_bytes(SECRET)
    c = Client()
    c.force_login(siteadmin)
    r = c.post(
        "/api/datasets/register/",
        {"dataset": "data24.notes", "storage_element": "LOCAL", "paths": ["notes.root"]},
        content_type="application/json",
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_event_file"
    assert b"SECRET" not in r.content and b"SECR" not in r.content


def test_a_transfer_does_not_write_through_a_linked_directory_on_the_destination(
    disk, tmp_path, outside
):
    put_file(Path(disk.endpoint().root), HZZ, "demo/uproot-HZZ.root")
    hzz, _ = actions.check_register_dataset("demo.hzz", disk, ["demo/uproot-HZZ.root"])
    dest_root = tmp_path / "dest"
    dest_root.mkdir()
    # the destination's scope directory is a link to a directory outside its root
    os.symlink(outside, dest_root / "demo")
    dest = actions.do_add_storage_element("DEST", dest_root.as_uri())
    before = sorted(p.name for p in outside.rglob("*"))
    transfer = actions.check_request_transfer(hzz, dest)
    for pk in transfer.files.values_list("pk", flat=True):
        tasks.transfer_file(pk)
    item = transfer.files.get()
    assert item.state == "failed" and "symbolic link leads outside" in item.error
    assert sorted(p.name for p in outside.rglob("*")) == before
    assert not Replica.objects.filter(storage_element=dest).exists()


def test_the_endpoint_refuses_every_operation_through_a_link_outside(storage_root, links):
    se = StorageEndpoint(storage_root.as_uri())
    for call in (
        lambda: se.exists(links["dir"]),
        lambda: se.size(links["secret"]),
        lambda: se.open_read(links["secret"]),
        lambda: list(se.read_chunks(links["file"])),
        lambda: se.ls("elsewhere"),
        lambda: se.delete(links["dir"]),
        lambda: se.makedirs("elsewhere/sub"),
        lambda: se.open_write_temp("elsewhere/new.root"),
        lambda: se.local_path(links["secret"]),
    ):
        with pytest.raises(InvalidInput, match="symbolic link leads outside"):
            call()
    listed = {e.name for e in se.ls("run1")}
    assert listed == {"alias.root"}  # the links outside are not the SE's content
    assert (storage_root / "elsewhere").is_symlink()


def dmu(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dmu.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_dmu_command_line_refuses_links_outside(storage_root, links, outside, tmp_path):
    base = storage_root.as_uri()
    r = dmu("checksum", f"{base}/elsewhere/secret.txt", cwd=tmp_path)
    assert r.returncode == 0  # the root of an ad-hoc URL is its own directory, resolved
    r = dmu("checksum", f"{base}/run1/secret.root", cwd=tmp_path)
    assert r.returncode == 2 and "symbolic link leads outside" in r.stderr, r.stderr
    # a link in the place of the destination file itself
    os.symlink(outside / "secret.txt", storage_root / "target.root")
    r = dmu("cp", "--overwrite", str(HZZ), f"{base}/target.root", cwd=tmp_path)
    assert r.returncode == 2 and (outside / "secret.txt").read_bytes() == SECRET, r.stderr
    r = dmu("--json", "ls", base, cwd=tmp_path)
    names = {e["name"] for e in json.loads(r.stdout)["entries"]}
    assert r.returncode == 0 and names == {"run1", "real"}  # not the link "elsewhere"
    assert "SECRET" not in r.stdout + r.stderr


@pytest.mark.django_db(transaction=True)
def test_dmu_put_does_not_write_through_a_linked_scope_directory(
    live_server, siteadmin, tmp_path, outside
):
    """``dmu put`` writes to the deterministic path on the SE the portal names; a link on
    the way out of its root stops it before a byte is written, and nothing is registered."""
    from tests.conftest import api_token

    root = tmp_path / "se"
    root.mkdir()
    os.symlink(outside, root / "user")
    actions.do_add_storage_element("DISK", root.as_uri())
    token = api_token(siteadmin)
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.root").write_bytes(HZZ.read_bytes())
    r = dmu(
        "put",
        "mine.root",
        "DISK",
        "--dataset",
        "user.alice.mine",
        cwd=work,
        env={"DSS_URL": live_server.url, "DSS_TOKEN": token, "XDG_CONFIG_HOME": str(work)},
    )
    assert r.returncode == 2 and "symbolic link leads outside" in r.stderr, r.stderr
    assert sorted(p.name for p in outside.rglob("*")) == ["events.root", "secret.txt"]
    assert nothing_registered()
