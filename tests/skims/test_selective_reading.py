"""A skim part reads only what it keeps: the clusters that hold its selected entries (and the
file's header), not the whole input. It trusts an input whose size and modification time
are those recorded when its bytes were last verified, and reads the whole file only when
they changed, or were never recorded, which still catches a file replaced in place."""

from __future__ import annotations

import os
import time

import awkward as ak
import fsspec.implementations.local
import numpy as np
import pytest
import uproot

from dmu import actions as dmu_actions
from dmu.models import Replica
from dss.errors import ChecksumMismatch
from skims import actions
from tests.conftest import HZZ, put_file
from tests.skims.conftest import build_tags, same_events
from tests.skims.test_skim_correctness import outputs, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = 200_000
CLUSTER = 1_000
# the clusters that hold the selected events (4 of 200), and how many of each are taken
CHOSEN = [17, 18, 90, 171]
PER_CLUSTER = 500
HOUR_AGO = time.time() - 3600


class ReadCounter:
    """Bytes really read from local files through fsspec (how uproot and the storage
    endpoint both read a file:// storage element), by path."""

    def __init__(self, monkeypatch):
        self.bytes: dict[str, int] = {}
        real_read = fsspec.implementations.local.LocalFileOpener.read
        counter = self

        def read(opener, *args, **kwargs):
            data = real_read(opener, *args, **kwargs)
            path = os.path.realpath(opener.path)
            counter.bytes[path] = counter.bytes.get(path, 0) + len(data)
            return data

        monkeypatch.setattr(fsspec.implementations.local.LocalFileOpener, "read", read)

    def of(self, path) -> int:
        return self.bytes.get(os.path.realpath(path), 0)

    def reset(self) -> None:
        self.bytes.clear()


def write_many_clusters(path) -> dict[str, np.ndarray]:
    """A Z->mumu-like file (the branches the zmumu TAG schema reads) of EVENTS events
    written CLUSTER at a time: one basket per branch and cluster. The mass is 500 GeV in
    PER_CLUSTER events of each CHOSEN cluster and below 130 GeV everywhere else."""
    rng = np.random.default_rng(15)
    data = {"Run": np.full(EVENTS, 1, np.int32), "Event": np.arange(EVENTS, dtype=np.int32)}
    for i in (1, 2):
        for name in ("E", "px", "py", "pz", "pt", "eta", "phi"):
            data[f"{name}{i}"] = rng.normal(40, 10, EVENTS)
        data[f"Q{i}"] = rng.choice(np.array([-1, 1], np.int32), EVENTS)
    data["M"] = rng.uniform(60, 130, EVENTS)
    for c in CHOSEN:
        picked = c * CLUSTER + rng.choice(CLUSTER, PER_CLUSTER, replace=False)
        data["M"][picked] = 500.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        f.mktree("events", {name: a.dtype for name, a in data.items()})
        for start in range(0, EVENTS, CLUSTER):
            f["events"].extend({name: a[start : start + CLUSTER] for name, a in data.items()})
    # written an hour before it is registered, as data usually is
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    return data


def replica_of(dataset) -> Replica:
    return dataset.files.get().replicas.select_related("storage_element", "file").get()


def test_a_one_percent_skim_reads_a_small_fraction_of_its_input(
    local_se, storage_root, physicist, monkeypatch
):
    path = storage_root / "many/zmumu_200k.root"
    data = write_many_clusters(path)
    assert len(uproot.open(path)["events"].common_entry_offsets()) > 150
    dataset, _ = dmu_actions.check_register_dataset("demo.zmumu_200k", local_se, [str(path)])
    tags = build_tags(dataset, "zmumu")
    size = path.stat().st_size

    reads = ReadCounter(monkeypatch)
    skim = run_skim(
        submit(physicist, [actions.InputSpec(dataset, tags)], "mass > 400", "user.phys.heavy")
    )
    assert skim.state == "succeeded", skim.message
    selected = len(CHOSEN) * PER_CLUSTER
    assert skim.events_selected == skim.events_written == selected  # 1% of the events
    read = reads.of(path)
    assert 0 < read < 0.15 * size, f"the skim read {read} of {size} bytes"

    out = outputs(skim)
    keep = data["M"] > 400
    expected = ak.Array({name: a[keep] for name, a in data.items()})
    assert same_events(out[expected.fields], expected)
    assert np.array_equal(ak.to_numpy(out["Event"]), np.flatnonzero(keep))


def test_an_unchanged_input_is_trusted_without_reading_it(local_se, storage_root, monkeypatch):
    rel = put_file(storage_root, HZZ, "old/hzz.root")
    path = storage_root / rel
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    dataset, _ = dmu_actions.check_register_dataset("demo.old_hzz", local_se, [rel])
    replica = replica_of(dataset)
    assert replica.verified_bytes == path.stat().st_size
    assert replica.verified_mtime_ns == path.stat().st_mtime_ns

    reads = ReadCounter(monkeypatch)
    assert dmu_actions.check_replica_intact(replica) == "unchanged"
    assert reads.of(path) == 0


def test_a_changed_modification_time_reads_the_file_and_catches_other_content(
    local_se, storage_root, monkeypatch
):
    rel = put_file(storage_root, HZZ, "old/hzz.root")
    path = storage_root / rel
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    dataset, _ = dmu_actions.check_register_dataset("demo.old_hzz", local_se, [rel])
    reads = ReadCounter(monkeypatch)

    # touched, same bytes: read once in full, the new time recorded, then trusted again
    os.utime(path, (HOUR_AGO - 60, HOUR_AGO - 60))
    assert dmu_actions.check_replica_intact(replica_of(dataset)) == "adler32"
    assert reads.of(path) == path.stat().st_size
    assert replica_of(dataset).verified_mtime_ns == path.stat().st_mtime_ns
    reads.reset()
    assert dmu_actions.check_replica_intact(replica_of(dataset)) == "unchanged"
    assert reads.of(path) == 0

    # the same size, other bytes, written in place: the time moved, the read catches it
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(data)
    with pytest.raises(ChecksumMismatch, match="has adler32 .*, the catalog says"):
        dmu_actions.check_replica_intact(replica_of(dataset), what="input file")
    assert reads.of(path) == path.stat().st_size


def test_a_file_changed_in_the_tick_it_was_verified_in_is_still_caught(local_se, storage_root):
    # Registered the moment it was written: a rewrite in the same tick of the file system's
    # clock would leave size and time as recorded. Such a record is not trusted.
    rel = put_file(storage_root, HZZ, "new/hzz.root")
    path = storage_root / rel
    dataset, _ = dmu_actions.check_register_dataset("demo.new_hzz", local_se, [rel])
    recorded = replica_of(dataset).verified_mtime_ns
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(recorded, recorded))  # as if within the same tick
    with pytest.raises(ChecksumMismatch):
        dmu_actions.check_replica_intact(replica_of(dataset))


def test_a_replica_with_nothing_recorded_is_read_once_then_trusted(
    local_se, storage_root, monkeypatch
):
    rel = put_file(storage_root, HZZ, "old/hzz.root")
    path = storage_root / rel
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    dataset, _ = dmu_actions.check_register_dataset("demo.old_hzz", local_se, [rel])
    # as a replica registered before DSS recorded anything
    Replica.objects.update(verified_bytes=None, verified_mtime_ns=None, verified_at=None)
    reads = ReadCounter(monkeypatch)
    assert dmu_actions.check_replica_intact(replica_of(dataset)) == "adler32"
    assert reads.of(path) == path.stat().st_size
    assert dmu_actions.check_replica_intact(replica_of(dataset)) == "unchanged"


def test_a_skim_of_an_input_changed_after_an_earlier_skim_fails_with_its_checksum(
    local_se, storage_root, physicist
):
    rel = put_file(storage_root, HZZ, "old/hzz.root")
    path = storage_root / rel
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    dataset, _ = dmu_actions.check_register_dataset("demo.old_hzz", local_se, [rel])
    tags = build_tags(dataset, "hzz")
    inputs = [actions.InputSpec(dataset, tags)]
    assert run_skim(submit(physicist, inputs, "n_muon >= 2", "user.phys.first")).state == (
        "succeeded"
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(data)
    skim = run_skim(submit(physicist, inputs, "n_muon >= 2", "user.phys.second", force=True))
    assert skim.state == "failed"
    assert "adler32" in skim.message and "the catalog says" in skim.message


def test_a_server_checksum_that_fails_falls_back_to_reading_the_file(
    local_se, storage_root, monkeypatch
):
    """A storage element whose server checksum fails (XRootD answered "[3012] Program
    failed" under concurrent queries) has the file read and checked instead: the part goes
    on, and other bytes are still refused."""
    from dmu.storage import StorageEndpoint
    from dss.errors import StorageError

    rel = put_file(storage_root, HZZ, "busy/hzz.root")
    dataset, _ = dmu_actions.check_register_dataset("demo.busy_hzz", local_se, [rel])
    replica = replica_of(dataset)

    def failing(self, rel):
        raise StorageError("checksum failed: [3012] Program failed", where=rel)

    monkeypatch.setattr(StorageEndpoint, "has_server_checksum", property(lambda self: True))
    monkeypatch.setattr(StorageEndpoint, "server_checksum", failing)
    reads = ReadCounter(monkeypatch)
    assert dmu_actions.check_replica_intact(replica) == "adler32"
    assert reads.of(storage_root / rel) == (storage_root / rel).stat().st_size

    data = bytearray((storage_root / rel).read_bytes())
    data[-100] ^= 0xFF
    (storage_root / rel).write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        dmu_actions.check_replica_intact(replica)
