"""A skim writes exactly the events the selection keeps, with equal values in every branch."""

import awkward as ak
import pytest
import uproot

from skims import actions
from skims.eventio import read_output
from skims.models import SkimJob
from skims.tasks import finish_skim, plan_skim, run_part
from tests.conftest import HZZ
from tests.skims.conftest import same_events

pytestmark = pytest.mark.django_db(transaction=True)


def run_parts(skim: SkimJob, parts=None) -> SkimJob:
    """Run the queued parts' tasks in this process, then the finishing step, as a worker
    would (the queued messages go to a broker no worker reads here)."""
    for part in parts if parts is not None else skim.parts.order_by("number"):
        run_part(part.pk)
    finish_skim(skim.pk)
    skim.refresh_from_db()
    return skim


def run_skim(skim: SkimJob) -> SkimJob:
    """Run a submitted skim's tasks in this process, in the order a worker would."""
    plan_skim(skim.pk)
    return run_parts(skim)


def outputs(skim: SkimJob) -> ak.Array:
    files = skim.output_dataset.files.order_by("lfn")
    arrays = []
    for f in files:
        r = f.replicas.select_related("storage_element").get()
        arrays.append(
            read_output(r.storage_element.endpoint().local_path(r.path), skim.output_format)
        )
    return ak.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def submit(user, inputs, selection, name, **options) -> SkimJob:
    return actions.check_submit_skim(
        user=user, inputs=inputs, selection=selection, output_name=name, **options
    )


def uproot_filter_nmuon2() -> ak.Array:
    events = uproot.open(HZZ)["events"].arrays(library="ak")
    return events[events["NMuon"] >= 2]


def test_a_tag_skim_of_hzz_keeps_exactly_uproots_1413_dimuon_events(
    hzz_tags, physicist, django_capture_on_commit_callbacks
):
    skim = submit(
        physicist,
        [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
        "n_muon >= 2",
        "user.phys.dimuon",
    )
    skim = run_skim(skim)
    assert skim.state == "succeeded", skim.message
    assert skim.events_selected == skim.events_written == 1413
    out = outputs(skim)
    expected = uproot_filter_nmuon2()
    assert len(out) == 1413
    assert same_events(expected, out)
    assert set(out.fields) >= set(expected.fields)
    f = skim.output_dataset.files.get()
    assert f.events == 1413 and len(f.adler32) == 8 and f.guid


def test_the_parquet_output_holds_the_same_events(hzz_tags, physicist):
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "n_muon >= 2",
            "user.phys.dimuon_pq",
            output_format="parquet",
        )
    )
    assert skim.state == "succeeded", skim.message
    assert same_events(uproot_filter_nmuon2(), outputs(skim))
    assert skim.output_dataset.files.get().lfn.endswith(".parquet")


def test_the_rntuple_output_holds_the_same_events(hzz_tags, physicist):
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "n_muon >= 2",
            "user.phys.dimuon_rn",
            output_format="rntuple",
            branches=["NMuon", "Muon_*", "MET_*"],
        )
    )
    assert skim.state == "succeeded", skim.message
    out = outputs(skim)
    expected = uproot_filter_nmuon2()
    assert sorted(out.fields) == sorted(
        ["NMuon", "MET_px", "MET_py"] + [f for f in expected.fields if f.startswith("Muon_")]
    )
    assert same_events(expected[out.fields], out)


def test_a_skim_split_over_several_files_gives_the_union_of_one_over_the_merged_file(
    split_hzz, hzz_tags, physicist
):
    whole = run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "n_muon >= 2 && met > 20",
            "user.phys.whole",
        )
    )
    split = run_skim(
        submit(
            physicist,
            [actions.InputSpec(split_hzz, None)],
            "n_muon >= 2 && met > 20",
            "user.phys.split",
        )
    )
    assert whole.state == split.state == "succeeded", (whole.message, split.message)
    assert split.output_dataset.files.count() == 3
    assert same_events(outputs(whole), outputs(split))


def test_a_skim_spanning_two_datasets_writes_both(hzz_tags, split_hzz, physicist):
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags), actions.InputSpec(split_hzz, None)],
            "n_muon >= 2",
            "user.phys.both",
        )
    )
    assert skim.state == "succeeded", skim.message
    assert skim.events_written == 2 * 1413 and skim.output_dataset.files.count() == 4


def test_branch_lists_and_event_limits(hzz_tags, physicist):
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "n_muon >= 2",
            "user.phys.few",
            branches=["NMuon", "MET_*"],
            event_limit=100,
        )
    )
    assert skim.state == "succeeded", skim.message
    out = outputs(skim)
    assert len(out) == 100 and sorted(out.fields) == ["MET_px", "MET_py", "NMuon"]
    assert same_events(uproot_filter_nmuon2()[["NMuon", "MET_px", "MET_py"]][:100], out)


def test_zmumu_by_run_and_event(zmumu_tags, physicist):
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(zmumu_tags.dataset, zmumu_tags)],
            "mass > 80 && mass < 100 && opposite_charge",
            "user.phys.zpeak",
        )
    )
    events = uproot.open(
        zmumu_tags.dataset.files.get()
        .replicas.get()
        .storage_element.endpoint()
        .local_path(zmumu_tags.dataset.files.get().replicas.get().path)
    )["events"].arrays(library="ak")
    expected = events[(events.M > 80) & (events.M < 100) & (events.Q1 * events.Q2 < 0)]
    assert skim.state == "succeeded", skim.message
    out = outputs(skim)
    assert len(out) == len(expected) > 0
    assert ak.all(out.Run == expected.Run) and ak.all(out.Event == expected.Event)
    assert list(out.Type) == list(expected.Type)
