"""Parts that stream their events chunk by chunk, and parts that merge several input files
into one output, under real workers: killed in the middle of a chunk, the part is handed on
and the skim ends with exactly the selected events; cancelled, it stops at its next chunk."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from dss.jobs import FINAL_STATES
from skims import actions
from skims.models import SkimJob
from tests.conftest import wait_for
from tests.faults.conftest import RECOVERY_BOUND, catalog_is_clean, temporaries
from tests.skims.conftest import build_tags, same_events
from tests.skims.test_skim_correctness import outputs, submit, uproot_filter_nmuon2

pytestmark = pytest.mark.django_db(transaction=True)


def ended(pk):
    def check():
        skim = SkimJob.objects.get(pk=pk)
        return skim if skim.state in FINAL_STATES else None

    return check


@pytest.fixture
def small_chunks(monkeypatch):
    """Workers (and this process) read and write 100 events at a time: the parts of the
    split demo file take several chunks each."""
    monkeypatch.setenv("DSS_SKIM_CHUNK_EVENTS", "100")


def test_a_merged_part_killed_mid_chunk_ends_with_exactly_the_selected_events(
    workers, small_chunks, split_hzz, physicist
):
    collection = build_tags(split_hzz, "hzz")
    first = workers.start(failpoints="skim.part.chunk=120")
    skim = submit(
        physicist,
        [actions.InputSpec(split_hzz, collection)],
        "n_muon >= 2",
        "user.phys.killed_merged",
        merge_mb=100,
    )
    workers.reached("skim.part.chunk")
    # the attempt's output is half written in scratch when its worker dies
    assert temporaries(settings.DSS_SCRATCH_DIR) != []
    workers.kill(first)
    workers.start()
    skim = wait_for(ended(skim.pk), timeout=RECOVERY_BOUND, what="the skim to end")
    assert skim.state == "succeeded", skim.message
    (part,) = skim.parts.all()
    assert part.n_inputs == 3 and part.lease_attempts == 2
    assert skim.output_dataset.files.count() == 1 and skim.events_written == 1413
    assert same_events(outputs(skim), uproot_filter_nmuon2())
    assert [len(o["inputs"]) for o in skim.provenance.outputs] == [3]
    kinds = set(skim.events.values_list("kind", flat=True))
    assert kinds & {"requeued", "taken-over"}, sorted(kinds)
    assert temporaries(settings.DSS_STORAGE_ROOT, settings.DSS_SCRATCH_DIR) == []
    catalog_is_clean()


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_a_cancelled_part_stops_at_its_next_chunk(workers, small_chunks, split_hzz, physicist):
    collection = build_tags(split_hzz, "hzz")
    # each chunk pauses 2 s: a part of 470 events would take 10 s to write
    workers.start(failpoints="skim.part.chunk=2,skim.part.written=0")
    skim = submit(
        physicist,
        [actions.InputSpec(split_hzz, collection)],
        "n_muon >= 2",
        "user.phys.cancel_chunks",
    )
    workers.reached("skim.part.chunk")
    actions.do_cancel_skim(skim, physicist)
    cancelled_at = time.monotonic()

    def quiet():
        return not temporaries(settings.DSS_STORAGE_ROOT, settings.DSS_SCRATCH_DIR)

    wait_for(quiet, timeout=15, what="the cancelled parts to remove their temporaries")
    assert time.monotonic() - cancelled_at < 15
    skim.refresh_from_db()
    assert skim.state == "cancelled"
    assert set(skim.parts.values_list("state", flat=True)) == {"cancelled"}
    # no part wrote its output to the end: each stopped between two chunks
    assert not list(workers.failpoints.glob("skim.part.written.*"))
    catalog_is_clean()
