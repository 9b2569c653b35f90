"""A skim part streams: it reads and writes at most DSS_SKIM_CHUNK_EVENTS selected events at
a time, so its memory stays bounded on a file much larger than a chunk, and what it writes
is what an unchunked part writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot
from django.conf import settings

from dmu.eventfiles import open_event_file
from dmu.storage import CHUNK
from dss.errors import BadEventFile
from skims import actions
from skims.eventio import EventWriter, TTreeWriter, read_output, selected_ranges
from skims.tasks import finish_skim, plan_skim
from tests.conftest import HZZ, ROOT, _database_url_for_worker
from tests.skims.conftest import same_events
from tests.skims.test_skim_correctness import outputs, run_skim, submit, uproot_filter_nmuon2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("chunk", [1, 7, 100, 1000, None])
def test_reads_cover_every_selected_entry_once_and_never_exceed_a_chunk(seed, chunk):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 400, 30))])
    entries = np.unique(rng.integers(0, offsets[-1], rng.integers(1, 500)))
    ranges = selected_ranges(offsets, entries, chunk)
    covered = np.concatenate([np.arange(a, b) for a, b in ranges])
    assert np.all(np.diff(covered) > 0)  # ordered, no entry read twice
    assert np.isin(entries, covered).all()
    if chunk is not None:
        assert max(b - a for a, b in ranges) <= chunk
        # a range starts on a cluster boundary or a chunk within one
        for a, _ in ranges:
            start = offsets[np.searchsorted(offsets, a, side="right") - 1]
            assert (a - start) % chunk == 0
    else:  # whole clusters, adjacent ones joined
        assert all(a in offsets and b in offsets for a, b in ranges)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:], strict=False))


def test_a_cluster_larger_than_a_chunk_is_read_a_chunk_at_a_time():
    assert selected_ranges([0, 1000, 2000, 3000], np.array([5, 1500, 2999]), 500) == [
        (0, 500),
        (1500, 2000),
        (2500, 3000),
    ]
    assert selected_ranges([0, 1000, 2000, 3000], np.array([5, 1500, 2999]), None) == [(0, 3000)]
    assert selected_ranges([0, 100, 200, 300], np.array([5, 150, 250]), 200) == [
        (0, 200),
        (200, 300),
    ]


@pytest.mark.parametrize("fmt", ["root", "rntuple", "parquet"])
def test_a_chunked_part_writes_what_an_unchunked_one_does(hzz_tags, physicist, settings, fmt):
    inputs = [actions.InputSpec(hzz_tags.dataset, hzz_tags)]
    settings.DSS_SKIM_CHUNK_EVENTS = 10**9
    whole = run_skim(
        submit(physicist, inputs, "n_muon >= 2", f"user.phys.whole_{fmt}", output_format=fmt)
    )
    settings.DSS_SKIM_CHUNK_EVENTS = 50
    chunked = run_skim(
        submit(
            physicist,
            inputs,
            "n_muon >= 2",
            f"user.phys.chunked_{fmt}",
            output_format=fmt,
            force=True,
        )
    )
    assert whole.state == chunked.state == "succeeded", (whole.message, chunked.message)
    a, b = outputs(whole), outputs(chunked)
    assert a.fields == b.fields and str(a.type) == str(b.type)
    assert same_events(a, b) and same_events(uproot_filter_nmuon2(), b)
    # the chunked output was written 50 events at a time: one cluster each
    f = chunked.output_dataset.files.get()
    r = f.replicas.select_related("storage_element").get()
    with open_event_file(r.storage_element.endpoint().local_path(r.path)) as out:
        assert out.tree().cluster_offsets() == list(range(0, 1413, 50)) + [1413]


# --------------------------------------------------------------------------- peak memory

BIG_EVENTS = 120_000
CLUSTER = 10_000

# Runs one part as a worker does and reports its traced peak memory: over the whole part,
# and while it streams events (from after the input's checksum was verified to before the
# output is copied: those two read and write the files in fixed DMU-sized blocks).
PART_IN_A_PROCESS = """
import json, sys, tracemalloc
import django
django.setup()
from dss import leases
from skims import actions
from skims.models import SkimPart

peaks = {}
verify, copy = actions.verify_input, actions.copy

def verified(*args, **kwargs):
    verify(*args, **kwargs)
    peaks["whole"] = max(peaks.get("whole", 0), tracemalloc.get_traced_memory()[1])
    tracemalloc.reset_peak()

def copied(*args, **kwargs):
    peaks["streaming"] = tracemalloc.get_traced_memory()[1]
    return copy(*args, **kwargs)

actions.verify_input, actions.copy = verified, copied
lease = leases.acquire(SkimPart, int(sys.argv[1]))
tracemalloc.start()
with lease:
    actions.do_run_part(lease)
peaks["whole"] = max(peaks["whole"], peaks["streaming"], tracemalloc.get_traced_memory()[1])
print(json.dumps(peaks))
"""


def big_file(storage_root) -> str:
    """HZZ's events drawn at random into one file of BIG_EVENTS events, in clusters of
    CLUSTER entries, as the benchmark's generator does."""
    source = uproot.open(HZZ)["events"].arrays(library="ak")
    rng = np.random.default_rng(11)
    rel = "big/hzz_big.root"
    path = storage_root / rel
    path.parent.mkdir(parents=True)
    with uproot.recreate(path) as f:
        writer = TTreeWriter(f, "events", baskets=BIG_EVENTS // CLUSTER)
        for _ in range(BIG_EVENTS // CLUSTER):
            writer.write(source[rng.integers(0, len(source), CLUSTER)])
    return rel


def peaks_of_part(part_pk: int, chunk: int) -> dict[str, int]:
    """Run one part in a process of its own, as a worker would; its traced peaks in bytes."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": _database_url_for_worker(),
            "DSS_STORAGE_ROOT": str(settings.DSS_STORAGE_ROOT),
            "DSS_SCRATCH_DIR": str(settings.DSS_SCRATCH_DIR),
            "TAGDB_URL": settings.TAGDB_URL,
            "DSS_SKIM_CHUNK_EVENTS": str(chunk),
            "DJANGO_SETTINGS_MODULE": "dss.settings",
        }
    )
    r = subprocess.run(
        [sys.executable, "-c", PART_IN_A_PROCESS, str(part_pk)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_parts_memory_stays_bounded_on_a_file_much_larger_than_a_chunk(
    local_se, storage_root, physicist
):
    from dmu import actions as dmu_actions

    dataset, _ = dmu_actions.check_register_dataset(
        "demo.hzz_big", local_se, [big_file(storage_root)]
    )
    inputs = [actions.InputSpec(dataset, None)]
    peaks, skims = {}, {}
    for chunk in (2_000, 10**9):
        skim = submit(physicist, inputs, "n_muon >= 1", f"user.phys.big_{chunk}", force=True)
        plan_skim(skim.pk)
        (part,) = skim.parts.all()
        peaks[chunk] = peaks_of_part(part.pk, chunk)
        finish_skim(skim.pk)
        skim.refresh_from_db()
        assert skim.state == "succeeded", skim.message
        skims[chunk] = skim

    with uproot.open(storage_root / "big/hzz_big.root") as f:
        events = f["events"].arrays()
    selected = events[events["NMuon"] >= 1]
    per_event = selected.nbytes / len(selected)
    one_cluster = CLUSTER * events.nbytes / len(events)
    assert len(selected) > 30 * 2_000  # the selection is many chunks long
    chunked, whole = peaks[2_000], peaks[10**9]
    # unchunked, the whole selection is in memory at once
    assert whole["streaming"] > selected.nbytes, peaks
    # chunked, a few chunks and the cluster being read, whatever the size of the file
    assert chunked["streaming"] < 10 * 2_000 * per_event + one_cluster, peaks
    assert chunked["streaming"] * 5 < whole["streaming"], peaks
    # and over the whole part, besides the blocks in which the input is verified and the
    # output copied
    assert chunked["whole"] < chunked["streaming"] + 2 * CHUNK, peaks
    a, b = outputs(skims[2_000]), outputs(skims[10**9])
    assert same_events(selected, a) and same_events(a, b) and str(a.type) == str(b.type)


# --------------------------------------------------------------------------- one tree, one type


def test_missing_values_that_arrive_before_the_first_batch_is_written_are_kept(tmp_path):
    plain = ak.Array({"x": [1.0, 2.0], "n": [[1], []]})
    missing = ak.Array({"x": [None, 3.0], "n": [[2, 3], [4]]})
    for fmt in ("parquet", "rntuple"):
        path = str(tmp_path / f"out.{fmt}")
        with EventWriter(path, fmt, "events", batch=10) as writer:
            writer.write(plain, "A")
            writer.write(missing, "B")
            writer.write(plain, "C")
            writer.close()
        out = read_output(path, fmt)
        assert out.tolist() == ak.concatenate([plain, missing, plain]).tolist()
        assert str(out.type.content) == "{x: ?float64, n: var * int64}"


def test_events_that_do_not_fit_the_tree_already_written_are_refused_naming_the_branch(tmp_path):
    plain = ak.Array({"x": [1.0, 2.0]})
    with EventWriter(str(tmp_path / "a.parquet"), "parquet", "events", batch=2) as writer:
        writer.write(plain, "LOCAL:a.parquet")
        with pytest.raises(BadEventFile, match="missing values appear only after") as caught:
            writer.write(ak.Array({"x": [None, 1.0]}), "LOCAL:b.parquet")
        assert caught.value.where == "LOCAL:b.parquet"
        with pytest.raises(BadEventFile, match="'x' holds int32 here but float64 in LOCAL:a"):
            writer.write(ak.Array({"x": np.array([1, 2], dtype=np.int32)}), "LOCAL:c.parquet")
        with pytest.raises(BadEventFile, match="they lack x; they have y"):
            writer.write(ak.Array({"y": [1.0]}), "LOCAL:d.parquet")
