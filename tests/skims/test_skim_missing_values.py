"""A skim of a dataset without TAGs (a scan of its files) keeps the same events as a skim
through its TAG collection, also where a selection meets missing values."""

import zlib

import awkward as ak
import numpy as np
import pytest
import uproot

from skims import actions
from skims.tasks import plan_skim
from tests.conftest import HZZ
from tests.skims.conftest import same_events
from tests.skims.test_skim_correctness import outputs, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)


def uproot_events() -> ak.Array:
    return uproot.open(HZZ)["events"].arrays(library="ak")


def leading(px: ak.Array, py: ak.Array) -> ak.Array:
    """The leading object's pT, None in an event without such objects."""
    return ak.max(np.hypot(px, py), axis=1)


def planned_entries(skim) -> list[int]:
    parts = skim.parts.order_by("number")
    return [
        int(e)
        for part in parts
        for e in np.frombuffer(zlib.decompress(part.entries), dtype=np.int64)
    ]


@pytest.mark.parametrize(
    "selection",
    [
        "lead_muon_pt < 20",
        "!(lead_muon_pt >= 20)",
        "hypot(met, lead_jet_pt) > 100",
        "missing(lead_jet_pt) && met > 30",
        "lead_muon_charge == 1 || sublead_muon_pt > 30",
    ],
)
def test_a_scan_and_a_tag_skim_plan_the_same_entries(hzz_tags, physicist, selection):
    dataset = hzz_tags.dataset
    suffix = zlib.crc32(selection.encode())
    tag = submit(
        physicist, [actions.InputSpec(dataset, hzz_tags)], selection, f"user.phys.t{suffix}"
    )
    scan = submit(physicist, [actions.InputSpec(dataset, None)], selection, f"user.phys.s{suffix}")
    plan_skim(tag.pk)
    plan_skim(scan.pk)
    tag.refresh_from_db()
    scan.refresh_from_db()
    assert planned_entries(tag) == planned_entries(scan)
    assert tag.events_selected == scan.events_selected > 0


def test_events_without_muons_do_not_pass_a_cut_on_the_leading_muon(hzz_tags, physicist):
    events = uproot_events()
    lead = leading(events["Muon_Px"], events["Muon_Py"])
    expected = events[ak.fill_none(lead < 20, False)]
    assert len(expected) == 4  # 63 before missing values were missing: 59 had no muon
    dataset = hzz_tags.dataset
    text = "lead_muon_pt < 20"
    tag = run_skim(submit(physicist, [actions.InputSpec(dataset, hzz_tags)], text, "user.phys.tag"))
    scan = run_skim(submit(physicist, [actions.InputSpec(dataset, None)], text, "user.phys.scan"))
    assert tag.state == scan.state == "succeeded", (tag.message, scan.message)
    assert tag.events_written == scan.events_written == 4
    assert same_events(expected, outputs(tag)) and same_events(expected, outputs(scan))
