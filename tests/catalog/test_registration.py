"""Registering ROOT files as datasets: good, again, conflicting, corrupt, truncated."""

import uuid

import pytest
import uproot
from django.core.management import call_command
from django.core.management.base import CommandError

from dmu import actions
from dmu.checksum import file_checksum
from dmu.models import Dataset, File, Replica
from dss.errors import BadEventFile, Conflict, InvalidInput
from tests.conftest import HZZ, ZMUMU, corrupt_basket, put_file

pytestmark = pytest.mark.django_db


def test_it_registers_a_root_file_with_its_guid_events_and_checksum(local_se, storage_root):
    rel = put_file(storage_root, HZZ, "data/hzz.root")
    dataset, added = actions.check_register_dataset("demo.hzz", local_se, [rel])
    assert added == 1
    f = dataset.files.get()
    with open(HZZ, "rb") as fh:
        adler, nbytes, _ = file_checksum(fh)
    assert f.guid == uuid.UUID(str(uproot.open(HZZ).file.uuid))
    assert (f.events, f.bytes, f.adler32, f.tree, f.lfn) == (
        2421,
        nbytes,
        adler,
        "events",
        "hzz.root",
    )
    replica = f.replicas.get()
    assert replica.storage_element == local_se and replica.path == "data/hzz.root"


def test_registering_the_same_file_again_changes_nothing(local_se, storage_root):
    rel = put_file(storage_root, HZZ, "hzz.root")
    actions.check_register_dataset("demo.hzz", local_se, [rel])
    _, added = actions.check_register_dataset("demo.hzz", local_se, [rel])
    assert added == 0
    assert File.objects.count() == 1 and Replica.objects.count() == 1


def test_the_same_name_with_another_checksum_is_a_conflict(local_se, storage_root):
    put_file(storage_root, HZZ, "a/events.root")
    put_file(storage_root, ZMUMU, "b/events.root")
    actions.check_register_dataset("demo.x", local_se, ["a/events.root"])
    with pytest.raises(Conflict, match="events.root is already registered in demo.x with adler32"):
        actions.check_register_dataset("demo.x", local_se, ["b/events.root"])
    assert File.objects.get().events == 2421


def test_a_bad_file_registers_nothing_and_names_the_file(local_se, storage_root):
    good = put_file(storage_root, ZMUMU, "ok.root")
    (storage_root / "notroot.root").write_bytes(b"this is not a ROOT file" * 100)
    with pytest.raises(BadEventFile) as e:
        actions.check_register_dataset("demo.mixed", local_se, [good, "notroot.root"])
    assert "LOCAL:notroot.root" in str(e.value) and "not a ROOT file" in str(e.value)
    assert not Dataset.objects.exists() and not File.objects.exists()


def test_a_truncated_file_is_refused(local_se, storage_root):
    data = HZZ.read_bytes()
    (storage_root / "cut.root").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadEventFile, match=r"LOCAL:cut.root: truncated: \d+ bytes on storage"):
        actions.check_register_dataset("demo.cut", local_se, ["cut.root"])
    assert not Dataset.objects.exists()


def test_a_file_without_the_tree_is_refused(local_se, storage_root):
    put_file(storage_root, HZZ, "hzz.root")
    with pytest.raises(BadEventFile, match="has no tree 'Events'"):
        actions.check_register_dataset("demo.t", local_se, ["hzz.root"], tree="Events")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../x.root", "a/\x00b.root"])
def test_paths_outside_the_storage_element_are_refused(local_se, path):
    with pytest.raises(InvalidInput):
        actions.check_register_dataset("demo.p", local_se, [path])


@pytest.mark.parametrize(
    "name", ["", "nodot", ".hidden", "a..b", "a.b.", "a b.c", "1abc.d", "a.b;drop"]
)
def test_bad_dataset_names_are_refused(local_se, name):
    with pytest.raises(InvalidInput, match="dataset name"):
        actions.check_register_dataset(name, local_se, ["x.root"])


def test_the_management_command_registers_and_reports_errors(local_se, storage_root, capsys):
    put_file(storage_root, ZMUMU, "z.root")
    call_command("register_dataset", "demo.zmumu", str(storage_root / "z.root"), "--se", "LOCAL")
    assert "demo.zmumu: 1 new file(s), 1 in all" in capsys.readouterr().out
    (storage_root / "bad.root").write_bytes(b"junk")
    with pytest.raises(CommandError) as e:
        call_command("register_dataset", "demo.bad", "bad.root", "--se", "LOCAL")
    assert "bad.root" in str(e.value) and e.value.returncode == 5
    with pytest.raises(CommandError, match="no storage element named 'NOPE'"):
        call_command("register_dataset", "demo.bad", "bad.root", "--se", "NOPE")


def test_a_file_with_a_damaged_basket_is_refused_naming_the_branch(local_se, storage_root):
    good = put_file(storage_root, ZMUMU, "ok.root")
    bad = put_file(storage_root, HZZ, "damaged.root")
    size = (storage_root / bad).stat().st_size
    corrupt_basket(storage_root / bad, "Muon_Px")
    assert (storage_root / bad).stat().st_size == size
    uproot.open(storage_root / bad)["events"].keys()  # header and directory still read
    with pytest.raises(BadEventFile) as e:
        actions.check_register_dataset("demo.damaged", local_se, [good, bad])
    assert e.value.where == "LOCAL:damaged.root"
    assert "branch 'Muon_Px' cannot be read" in e.value.message
    assert not Dataset.objects.exists() and not File.objects.exists()


def test_a_damaged_string_branch_is_refused_too(local_se, storage_root):
    bad = put_file(storage_root, ZMUMU, "strings.root")
    corrupt_basket(storage_root / bad, "Type")
    with pytest.raises(BadEventFile, match="branch 'Type' cannot be read"):
        actions.check_register_dataset("demo.strings", local_se, [bad])
