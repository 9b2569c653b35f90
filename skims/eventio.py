"""Reading selected events out of event files and writing them as ROOT or Parquet.

Plain Python (uproot, awkward, numpy; no Django) so that a skim part runs the same on a
portal worker, a batch node or a laptop, and can be benchmarked alone.

A skim reads only the entry ranges that hold selected events: the clusters (a TTree's
common basket boundaries, an RNTuple's clusters, a Parquet file's row groups) cut the file
into ranges that can be read independently, and only the ranges containing a selected
entry are read and decompressed. When most ranges hold a selected entry, the ranges merge
into one read of the whole file.
"""

from __future__ import annotations

import fnmatch
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import uproot

from dmu.eventfiles import PARQUET_GUID_KEY, PARQUET_TREE_KEY, as_event_tree, open_event_file
from dss.errors import BadEventFile, InvalidInput

FORMATS = {"root": "ROOT TTree", "rntuple": "ROOT RNTuple", "parquet": "Parquet"}
EXTENSIONS = {"root": ".root", "rntuple": ".root", "parquet": ".parquet"}


@dataclass(frozen=True)
class WrittenFile:
    path: str
    guid: str
    events: int
    bytes: int


def resolve_branches(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The branches to keep, in the file's order: all when ``wanted`` is empty, else every
    branch matching one of the names or glob patterns. A pattern that matches nothing is an
    error naming it, so a typo never silently drops data."""
    if not wanted:
        return list(available)
    keep: set[str] = set()
    for pattern in wanted:
        matched = fnmatch.filter(available, pattern)
        if not matched:
            raise InvalidInput(
                f"no branch matches {pattern!r} (the tree has {len(available)} branches, "
                f"e.g. {', '.join(list(available)[:5])})",
                where="branches",
            )
        keep.update(matched)
    return [b for b in available if b in keep]


def selected_ranges(offsets: Sequence[int], entries: np.ndarray) -> list[tuple[int, int]]:
    """Entry ranges ``[start, stop)`` made of whole clusters that hold at least one of the
    sorted ``entries``; adjacent clusters merge into one range."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(entries) == 0:
        return []
    cluster = np.searchsorted(offsets, entries, side="right") - 1
    used = np.unique(cluster)
    ranges: list[tuple[int, int]] = []
    start = prev = int(used[0])
    for c in used[1:]:
        c = int(c)
        if c != prev + 1:
            ranges.append((int(offsets[start]), int(offsets[prev + 1])))
            start = c
        prev = c
    ranges.append((int(offsets[start]), int(offsets[prev + 1])))
    return ranges


def read_entries(
    tree: Any,
    branches: Sequence[str],
    entries: np.ndarray,
    where: str,
    progress: Callable[[int], None] | None = None,
) -> ak.Array:
    """The given entries (sorted, unique, int64) of ``branches``, reading only the clusters
    that hold them. ``tree`` is a TTree, an RNTuple or a Parquet table (see
    :mod:`dmu.eventfiles`); ``where`` names the file in errors. Data that cannot be read
    is a BadEventFile naming the branch and the entries."""
    tree = as_event_tree(tree, where)
    n = int(tree.num_entries)
    if len(entries) and (entries[0] < 0 or entries[-1] >= n):
        bad = entries[0] if entries[0] < 0 else entries[-1]
        raise BadEventFile(f"entry {bad} is outside the tree ({n} entries)", where=where)
    offsets = tree.cluster_offsets(list(branches))
    pieces = []
    done = 0
    for start, stop in selected_ranges(offsets, entries):
        arrays = tree.arrays(list(branches), start, stop)
        lo, hi = np.searchsorted(entries, [start, stop])
        pieces.append(arrays[entries[lo:hi] - start])
        done += int(hi - lo)
        if progress:
            progress(done)
    if not pieces:
        return tree.arrays(list(branches), 0, 0)
    return pieces[0] if len(pieces) == 1 else ak.concatenate(pieces)


class TTreeWriter:
    """Writes awkward arrays to a ROOT TTree in batches; each batch becomes one basket
    per branch (one cluster), so later readers can read the file cluster by cluster.

    Jagged branches that share a prefix and their counts (``Muon_Px``, ``Muon_Py``) are
    written as one group with one counter branch (``nMuon``), as ROOT files usually are."""

    def __init__(self, file: Any, name: str):
        self.file = file
        self.name = name
        self.tree: Any = None
        self.groups: dict[str, list[str]] = {}
        self.counters: dict[str, str] = {}

    def _plan_groups(self, arrays: ak.Array) -> None:
        """Group jagged fields by prefix when their counts agree; reuse a flat field that
        already holds those counts (``NMuon``) as the group's counter branch."""
        fields = list(arrays.fields)
        by_prefix: dict[str, list[str]] = {}
        for f in fields:
            if arrays[f].ndim > 1 and "_" in f:
                by_prefix.setdefault(f.split("_", 1)[0], []).append(f)
        for prefix, members in by_prefix.items():
            if prefix in fields:
                continue
            counts = ak.num(arrays[members[0]], axis=1)
            if not all(ak.all(ak.num(arrays[m], axis=1) == counts) for m in members[1:]):
                continue
            counter = next(
                (
                    c
                    for c in ("n" + prefix, "N" + prefix, "n_" + prefix)
                    if c in fields and arrays[c].ndim == 1 and ak.all(arrays[c] == counts)
                ),
                None,
            )
            if counter is None:
                if "n" + prefix in fields:
                    continue
                counter = "n" + prefix
            self.groups[prefix] = members
            self.counters[prefix] = counter

    def _branches(self, arrays: ak.Array) -> dict[str, Any]:
        grouped = {m for members in self.groups.values() for m in members}
        counters = set(self.counters.values())
        out: dict[str, Any] = {}
        for f in arrays.fields:
            if f in counters:
                continue  # written by uproot from the group's counts
            if f in grouped:
                prefix = f.split("_", 1)[0]
                if prefix not in out:
                    out[prefix] = ak.zip(
                        {m.split("_", 1)[1]: arrays[m] for m in self.groups[prefix]}, depth_limit=2
                    )
            else:
                out[f] = arrays[f]
        return out

    def write(self, arrays: ak.Array) -> None:
        if self.tree is None:
            self._plan_groups(arrays)
            branches = self._branches(arrays)
            self.tree = self.file.mktree(
                self.name,
                {k: v.type.content for k, v in branches.items()},
                counter_name=lambda counted: self.counters.get(counted, "n" + counted),
            )
        else:
            branches = self._branches(arrays)
        if len(arrays):
            self.tree.extend(branches)


def write_events(
    arrays: ak.Array, path: str, fmt: str, tree_name: str = "events", batch: int = 100_000
) -> WrittenFile:
    """Write ``arrays`` to ``path`` as a ROOT TTree, a ROOT RNTuple or Parquet; describe it.

    The GUID of a ROOT output is the UUID that its header holds; a Parquet file has none, so
    it gets a fresh one, stored in the file's key-value metadata (``dss_guid``, with the
    tree name as ``dss_tree``). Every ``batch`` entries start a new cluster (TTree baskets,
    RNTuple cluster, Parquet row group), so that later skims can read the file in parts.
    """
    if fmt not in FORMATS:
        raise InvalidInput(
            f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}", where="format"
        )
    # A selection leaves indexed views; writers want plain contiguous buffers.
    arrays = ak.to_packed(arrays)
    if fmt == "parquet":
        guid = str(uuid.uuid4())
        table = ak.to_arrow_table(arrays, extensionarray=False)
        table = table.replace_schema_metadata(
            {
                **(table.schema.metadata or {}),
                PARQUET_GUID_KEY: guid.encode(),
                PARQUET_TREE_KEY: tree_name.encode(),
            }
        )
        # Page checksums let a reader tell a damaged page from data.
        pq.write_table(
            table, path, compression="zstd", row_group_size=batch, write_page_checksum=True
        )
    else:
        with uproot.recreate(path) as f:
            if fmt == "rntuple":
                ntuple = f.mkrntuple(tree_name, arrays[:batch])
                for start in range(batch, len(arrays), batch):
                    ntuple.extend(arrays[start : start + batch])
            else:
                writer = TTreeWriter(f, tree_name)
                for start in range(0, max(len(arrays), 1), batch):
                    writer.write(arrays[start : start + batch])
        with uproot.open(path) as f:
            guid = str(f.file.uuid)
    return WrittenFile(path=path, guid=guid, events=len(arrays), bytes=os.path.getsize(path))


def read_output(path: str, fmt: str, tree_name: str = "events") -> ak.Array:
    """Read a skim output back whole (tests, verification)."""
    with open_event_file(path) as f:
        return f.tree(tree_name).arrays()
