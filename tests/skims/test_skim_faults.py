"""Faults and bad input: each ends at once in a clear state naming the file and the cause,
with nothing half-registered and no stray output left."""

import os
import socket

import pytest

from dmu.models import Dataset
from dss.errors import Conflict, InvalidInput
from skims import actions
from skims.models import SkimPart
from tests.skims.test_skim_correctness import run_parts, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)


def hzz_input(c):
    return [actions.InputSpec(c.dataset, c)]


def input_path(dataset) -> str:
    r = dataset.files.get().replicas.select_related("storage_element").get()
    return r.storage_element.endpoint().local_path(r.path)


def stored_outputs(storage_root, scope="user") -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(storage_root / scope) for f in fs]


def test_a_missing_input_replica_fails_the_skim_naming_the_file(hzz_tags, physicist, storage_root):
    skim = submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.missing")
    os.remove(input_path(hzz_tags.dataset))
    skim = run_skim(skim)
    assert skim.state == "failed"
    assert "uproot-HZZ.root" in skim.message and "missing" in skim.message
    assert not Dataset.objects.filter(name="user.phys.missing").exists()
    assert skim.provenance.state == "failed"


def test_a_missing_input_is_refused_at_submission(hzz_tags, physicist):
    from dss.errors import NotFound

    os.remove(input_path(hzz_tags.dataset))
    with pytest.raises(
        NotFound, match="LOCAL:demo/uproot-HZZ.root: input file uproot-HZZ.root is missing"
    ):
        submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.missing")


def test_an_input_whose_bytes_changed_fails_with_its_checksum(hzz_tags, physicist, storage_root):
    path = input_path(hzz_tags.dataset)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    skim = run_skim(submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.corrupt"))
    assert skim.state == "failed"
    assert (
        "adler32" in skim.message
        and "the catalog says" in skim.message
        and "uproot-HZZ.root" in skim.message
    )
    assert not Dataset.objects.filter(name="user.phys.corrupt").exists()
    assert stored_outputs(storage_root) == []


def test_an_output_name_already_taken_is_refused_at_once(hzz_tags, physicist, siteadmin):
    # an admin may name any scope, and still not a dataset that exists
    with pytest.raises(Conflict, match="demo.zmumu is already taken"):
        submit(siteadmin, hzz_input(hzz_tags), "n_muon >= 2", "demo.zmumu")
    submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.once")
    with pytest.raises(Conflict, match="already taken"):
        submit(physicist, hzz_input(hzz_tags), "n_muon >= 3", "user.phys.once")


def test_a_selection_that_matches_nothing_ends_at_once_saying_so(hzz_tags, physicist):
    skim = run_skim(submit(physicist, hzz_input(hzz_tags), "n_muon > 100", "user.phys.none"))
    assert skim.state == "failed"
    assert "matches no events in demo.hzz" in skim.message
    assert not Dataset.objects.filter(name="user.phys.none").exists()


def test_an_empty_dataset_is_refused_at_submission(local_se, physicist):
    empty = Dataset.objects.create(name="demo.empty")
    with pytest.raises(InvalidInput, match="demo.empty has no files"):
        submit(physicist, [actions.InputSpec(empty, None)], "n_muon >= 2", "user.phys.empty")


@pytest.mark.parametrize(
    "selection, message",
    [
        ("", "empty selection"),
        ("n_muon >= ", "column"),
        ("met_x > 3", "did you mean 'met'"),
        ("n_muon >= 2; DROP TABLE dmu_dataset", "column"),
    ],
)
def test_bad_selections_are_refused_with_the_column(hzz_tags, physicist, selection, message):
    with pytest.raises(InvalidInput, match=message):
        submit(physicist, hzz_input(hzz_tags), selection, "user.phys.bad")


def test_a_branch_pattern_that_matches_nothing_is_refused(hzz_tags, physicist):
    with pytest.raises(InvalidInput, match="no branch matches 'Muonz_\\*'"):
        submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.b", branches=["Muonz_*"])


def test_a_full_output_disk_fails_the_part_and_leaves_nothing(
    hzz_tags, physicist, settings, tmp_path
):
    from dmu import actions as dmu_actions

    full = tmp_path / "full"
    full.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {full} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here to fill up")
    try:
        se = dmu_actions.do_add_storage_element("FULL", full.as_uri(), user_writable=True)
        skim = run_skim(
            submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.full", output_se=se)
        )
        assert skim.state == "failed"
        assert "space" in skim.message.lower() and "uproot-HZZ.root" in skim.message
        assert not Dataset.objects.filter(name="user.phys.full").exists()
        assert [f for _, _, fs in os.walk(full) for f in fs] == []
    finally:
        os.system(f"umount {full}")


def test_a_part_left_running_by_a_killed_worker_is_taken_over_by_the_next_delivery(
    hzz_tags, physicist, storage_root
):
    from dss import leases
    from skims.tasks import plan_skim, run_part

    skim = submit(physicist, hzz_input(hzz_tags), "n_muon >= 2", "user.phys.killed")
    plan_skim(skim.pk)
    part = skim.parts.get()
    # a first worker takes the part, then dies: its process is gone, its lease still open
    first = leases.acquire(SkimPart, part.pk)
    assert first is not None and leases.acquire(SkimPart, part.pk) is None  # held by a live one
    SkimPart.objects.filter(pk=part.pk).update(lease_worker=f"{socket.gethostname()}:999999999")
    run_part(part.pk)  # the broker delivers the task again: it takes the part over at once
    assert run_parts(skim, parts=[]).state == "succeeded"
    part.refresh_from_db()
    assert part.lease_attempts == 2
    taken = skim.events.get(kind="taken-over")
    assert "taken over from" in taken.message and ":999999999" in taken.message
    assert skim.output_dataset.files.count() == 1 and skim.events_written == 1413
    assert first.beat() is False and first.lost  # the dead attempt, should it wake, has lost it
    run_part(part.pk)  # a late duplicate changes nothing
    skim.refresh_from_db()
    assert (
        skim.events_written == 1413 and Dataset.objects.filter(name="user.phys.killed").count() == 1
    )
    assert len(stored_outputs(storage_root)) == 1


def test_partial_policy_keeps_the_good_files_and_names_the_bad(split_hzz, physicist, storage_root):
    os.remove(storage_root / "split/hzz_1.root")
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(split_hzz, None)],
            "n_muon >= 2",
            "user.phys.partial",
            failure_policy="partial",
        )
    )
    # the scan reads every file while planning, so a missing file fails the planning step
    assert skim.state == "failed" and "hzz_1.root" in skim.message


def test_fail_policy_registers_nothing_and_keeps_good_outputs_for_a_retry(
    split_hzz, physicist, storage_root
):
    from skims.tasks import plan_skim

    skim = submit(
        physicist, [actions.InputSpec(split_hzz, None)], "n_muon >= 2", "user.phys.failpol"
    )
    plan_skim(skim.pk)
    parts = list(skim.parts.order_by("number"))
    os.remove(storage_root / "split/hzz_1.root")
    skim = run_parts(skim, parts)
    assert (
        skim.state == "failed"
        and "hzz_1.root" in skim.message
        and "1 of 3 file(s) failed" in skim.message
    )
    assert not Dataset.objects.filter(name="user.phys.failpol").exists()
    assert len(stored_outputs(storage_root)) == 2  # the good parts' outputs, for a retry


def test_partial_policy_registers_what_succeeded(split_hzz, physicist, storage_root):
    from skims.tasks import plan_skim

    skim = submit(
        physicist,
        [actions.InputSpec(split_hzz, None)],
        "n_muon >= 2",
        "user.phys.part2",
        failure_policy="partial",
    )
    plan_skim(skim.pk)
    os.remove(storage_root / "split/hzz_2.root")
    skim = run_parts(skim)
    assert skim.state == "partial" and "hzz_2.root" in skim.message
    assert skim.output_dataset.files.count() == 2
    failed = SkimPart.objects.get(skim=skim, state="failed")
    assert "missing" in failed.message


def test_retry_runs_only_the_failed_parts(split_hzz, physicist, storage_root):
    from skims.tasks import plan_skim

    skim = submit(physicist, [actions.InputSpec(split_hzz, None)], "n_muon >= 2", "user.phys.retry")
    plan_skim(skim.pk)
    saved = (storage_root / "split/hzz_0.root").read_bytes()
    os.remove(storage_root / "split/hzz_0.root")
    skim = run_parts(skim)
    assert skim.state == "failed"
    (storage_root / "split/hzz_0.root").write_bytes(saved)
    actions.do_retry_skim(skim, physicist)
    queued = list(skim.parts.filter(state="queued"))
    assert len(queued) == 1  # only the failed one
    skim = run_parts(skim, queued)
    assert skim.state == "succeeded" and skim.events_written == 1413


def test_cancel_stops_queued_parts_and_removes_partial_output(
    split_hzz, physicist, storage_root, outsider
):
    from django.core.exceptions import PermissionDenied

    from skims.tasks import plan_skim, run_part

    skim = submit(
        physicist, [actions.InputSpec(split_hzz, None)], "n_muon >= 2", "user.phys.cancel"
    )
    plan_skim(skim.pk)
    first = skim.parts.order_by("number").first()
    run_part(first.pk)
    assert len(stored_outputs(storage_root)) == 1
    with pytest.raises(PermissionDenied):
        actions.do_cancel_skim(skim, outsider)
    actions.do_cancel_skim(skim, physicist)
    skim.refresh_from_db()
    assert skim.state == "cancelled"
    # every part is back to a state a retry understands; the stored output is gone
    assert set(skim.parts.values_list("state", flat=True)) == {"cancelled"}
    for p in skim.parts.all():
        run_part(p.pk)  # tasks that arrive late do nothing
    assert stored_outputs(storage_root) == []
    assert not Dataset.objects.filter(name="user.phys.cancel").exists()
    with pytest.raises(Conflict):
        actions.do_cancel_skim(skim, physicist)
