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
import inspect
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import uproot

from dmu.eventfiles import PARQUET_GUID_KEY, PARQUET_TREE_KEY, as_event_tree, open_event_file
from dmu.rootfiles import short_reason
from dss.errors import BadEventFile, InvalidInput

FORMATS = {"root": "ROOT TTree", "rntuple": "ROOT RNTuple", "parquet": "Parquet"}
EXTENSIONS = {"root": ".root", "rntuple": ".root", "parquet": ".parquet"}
# A C++ identifier: what analysis code (TTree::MakeClass, RDataFrame) can name a tree by.
TREE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


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


def selected_ranges(
    offsets: Sequence[int], entries: np.ndarray, chunk: int | None = None
) -> list[tuple[int, int]]:
    """Entry ranges ``[start, stop)`` to read for the sorted ``entries``: whole clusters that
    hold at least one of them, adjacent ones joined into one range while it stays within
    ``chunk`` entries (None: no bound). A cluster longer than ``chunk`` is read ``chunk``
    entries at a time, only the pieces that hold a selected entry, so that no read holds
    more than ``chunk`` entries of the file (or one cluster, when that is smaller)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(entries) == 0:
        return []
    cluster = np.searchsorted(offsets, entries, side="right") - 1
    pieces: list[tuple[int, int]] = []
    for c in np.unique(cluster):
        lo, hi = int(offsets[c]), int(offsets[c + 1])
        if chunk is None or hi - lo <= chunk:
            pieces.append((lo, hi))
            continue
        starts = np.arange(lo, hi, chunk)
        holding = np.unique(
            np.searchsorted(starts, entries[(entries >= lo) & (entries < hi)], side="right") - 1
        )
        pieces += [(int(starts[k]), min(int(starts[k]) + chunk, hi)) for k in holding]
    ranges = [pieces[0]]
    for start, stop in pieces[1:]:
        first, last = ranges[-1]
        if start == last and (chunk is None or stop - first <= chunk):
            ranges[-1] = (first, stop)
        else:
            ranges.append((start, stop))
    return ranges


def iter_entries(
    tree: Any,
    branches: Sequence[str],
    entries: np.ndarray,
    where: str,
    chunk: int | None = None,
) -> Iterator[ak.Array]:
    """The given entries (sorted, unique, int64) of ``branches``, in order, as a sequence of
    arrays, reading only the clusters that hold them and at most ``chunk`` entries of the
    file at a time (see :func:`selected_ranges`). ``tree`` is a TTree, an RNTuple or a
    Parquet table (see :mod:`dmu.eventfiles`); ``where`` names the file in errors. Each
    array holds its own copy of the selected events, so the read it came from can be freed.
    Data that cannot be read is a BadEventFile naming the branch and the entries."""
    tree = as_event_tree(tree, where)
    n = int(tree.num_entries)
    if len(entries) and (entries[0] < 0 or entries[-1] >= n):
        bad = entries[0] if entries[0] < 0 else entries[-1]
        raise BadEventFile(f"entry {bad} is outside the tree ({n} entries)", where=where)
    offsets = tree.cluster_offsets(list(branches))
    for start, stop in selected_ranges(offsets, entries, chunk):
        arrays = tree.arrays(list(branches), start, stop)
        lo, hi = np.searchsorted(entries, [start, stop])
        yield ak.to_packed(arrays[entries[lo:hi] - start])


def read_entries(
    tree: Any,
    branches: Sequence[str],
    entries: np.ndarray,
    where: str,
    progress: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> ak.Array:
    """The given entries of ``branches`` as one array, read at most ``chunk`` entries of the
    file at a time (see :func:`iter_entries`)."""
    tree = as_event_tree(tree, where)
    pieces = []
    done = 0
    for piece in iter_entries(tree, branches, entries, where, chunk):
        pieces.append(piece)
        done += len(piece)
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

    def __init__(self, file: Any, name: str, baskets: int = 10):
        self.file = file
        self.name = name
        # Room for this many baskets per branch in the tree's header: uproot rewrites the
        # header ten times larger whenever it fills, leaving the old one as dead space.
        self.baskets = max(int(baskets), 10)
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
                initial_basket_capacity=self.baskets,
            )
        else:
            branches = self._branches(arrays)
        if len(arrays):
            self.tree.extend(branches)


# --------------------------------------------------------------------------- writing


def check_tree_name(name: str, where: str = "output_tree") -> str:
    """``name`` if it can name a tree in a ROOT file and in the analysis code that reads it
    (a C++ identifier: letters, digits and underscores, not starting with a digit; at most
    128 characters), else an InvalidInput saying what is wrong with it."""
    if not TREE_NAME.fullmatch(name or ""):
        raise InvalidInput(
            f"{name!r} cannot name a tree: use letters, digits and underscores, starting with "
            "a letter or underscore, at most 128 characters (e.g. events, Events, CollectionTree)",
            where=where,
        )
    return name


def _types(arrays: ak.Array) -> dict[str, Any]:
    return {f: arrays[f].type.content for f in arrays.fields}


def _differ_in_options_only(a: Any, b: Any) -> bool:
    """Whether two awkward types are the same but for which levels may hold a missing value
    (Parquet columns are nullable, and a range without missing values reads as not)."""
    return str(a).replace("?", "") == str(b).replace("?", "")


class _Tree:
    """One tree of an output file, written in batches (see :class:`EventWriter`)."""

    def __init__(self, writer: EventWriter, name: str, events: int = 0):
        self.writer = writer
        self.name = name
        self.baskets = -(-events // writer.batch) + 1
        self.types: dict[str, str] | None = None
        self.first_where = ""
        self.pending: list[ak.Array] = []
        self.n_pending = 0
        self.events = 0
        self.sink: Any = None

    def write(self, arrays: ak.Array, where: str) -> None:
        arrays = self._conform(arrays, where)
        if len(arrays) == 0:
            if self.sink is None and not self.pending:
                self.pending.append(arrays)  # remembers the types for an empty output
            return
        self.pending.append(arrays)
        self.n_pending += len(arrays)
        batch = self.writer.batch
        while self.n_pending >= batch:
            joined = ak.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
            self._flush(ak.to_packed(joined[:batch]))
            rest = ak.to_packed(joined[batch:])
            self.pending, self.n_pending = [rest], len(rest)

    def close(self) -> None:
        if self.pending and (self.n_pending or self.sink is None):
            joined = ak.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
            self._flush(ak.to_packed(joined))
        self.pending, self.n_pending = [], 0

    def _conform(self, arrays: ak.Array, where: str) -> ak.Array:
        """The same branches with the same types as the first input's, or an error naming
        the input and the branch (a merged output is one tree). Where only missing values
        tell the types apart, the events are given the type that allows them."""
        types = _types(arrays)
        if self.types is None:
            self.types, self.first_where = types, where
            return arrays
        if list(types) != list(self.types):
            missing = [f for f in self.types if f not in types]
            extra = [f for f in types if f not in self.types]
            raise BadEventFile(
                f"the tree {self.name!r} cannot take these events: "
                + (f"they lack {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"they have {', '.join(extra)}" if extra else "")
                + ("" if missing or extra else "their branches come in another order")
                + f", unlike those of {self.first_where}",
                where=where,
            )
        fixed = {}
        for field, theirs in types.items():
            mine = self.types[field]
            if str(theirs) == str(mine):
                continue
            if _differ_in_options_only(theirs, mine):
                try:
                    fixed[field] = ak.enforce_type(arrays[field], mine)
                    continue
                except ValueError:  # these have missing values, those written so far none
                    if self._allow_missing(field, theirs):
                        continue
            raise BadEventFile(
                f"branch {field!r} holds {theirs} here but {mine} in {self.first_where}: "
                "one tree cannot hold both"
                + (
                    " (missing values appear only after the first batch was written)"
                    if _differ_in_options_only(theirs, mine)
                    else ""
                ),
                where=where,
            )
        if not fixed:
            return arrays
        return ak.zip({f: fixed.get(f, arrays[f]) for f in arrays.fields}, depth_limit=1)

    def _allow_missing(self, field: str, option: Any) -> bool:
        """Give ``field`` the type ``option`` if nothing of the tree was written yet."""
        if self.sink is not None:
            return False
        self.pending = [
            ak.zip(
                {f: ak.enforce_type(p[f], option) if f == field else p[f] for f in p.fields},
                depth_limit=1,
            )
            for p in self.pending
        ]
        self.types[field] = option
        return True

    def _flush(self, arrays: ak.Array) -> None:
        self.events += len(arrays)
        fmt = self.writer.fmt
        if fmt == "parquet":
            table = ak.to_arrow_table(arrays, extensionarray=False)
            if self.sink is None:
                schema = table.schema.with_metadata(
                    {
                        **(table.schema.metadata or {}),
                        PARQUET_GUID_KEY: self.writer.guid.encode(),
                        PARQUET_TREE_KEY: self.name.encode(),
                    }
                )
                # Page checksums let a reader tell a damaged page from data.
                self.sink = pq.ParquetWriter(
                    self.writer.path, schema, compression="zstd", write_page_checksum=True
                )
            self.sink.write_table(table.cast(self.sink.schema), row_group_size=len(arrays) or 1)
        elif fmt == "rntuple":
            if self.sink is None:
                self.sink = self.writer.root.mkrntuple(self.name, arrays)
            else:
                self.sink.extend(arrays)
        else:
            if self.sink is None:
                self.sink = TTreeWriter(self.writer.root, self.name, self.baskets)
            self.sink.write(arrays)


class EventWriter:
    """Streams events into one output file: a ROOT TTree, a ROOT RNTuple or Parquet.

    :meth:`write` takes arrays of any length, one after the other (all with the same
    branches and types; the first fixes them), and writes them in batches of ``batch``
    events: each batch is one cluster (TTree baskets, RNTuple cluster, Parquet row group),
    so no more than about two batches are ever held in memory, and later skims can read the
    file in parts. ``events``, when known, is how many events will come (a TTree's header
    then has room for all its baskets from the start). :meth:`copy_objects` copies small
    objects of an input file along (ROOT outputs only). :meth:`close` ends the file and
    describes it.

    The GUID of a ROOT output is the UUID that its header holds; a Parquet file has none,
    so it gets a fresh one, stored in the file's key-value metadata (``dss_guid``, with the
    tree name as ``dss_tree``)."""

    def __init__(
        self,
        path: str,
        fmt: str,
        tree_name: str = "events",
        batch: int = 100_000,
        events: int = 0,
    ):
        if fmt not in FORMATS:
            raise InvalidInput(
                f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}", where="format"
            )
        if batch < 1:
            raise InvalidInput(f"a batch holds at least one event, not {batch}", where="batch")
        self.path = path
        self.fmt = fmt
        self.batch = int(batch)
        self.root: Any = None if fmt == "parquet" else uproot.recreate(path)
        self.guid = str(uuid.uuid4()) if fmt == "parquet" else str(self.root.file.uuid)
        self.events = _Tree(self, tree_name, events)
        self.trees: dict[str, _Tree] = {}
        self.histograms: dict[str, _HistogramSum] = {}
        self.copied: list[str] = []

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._close_files()

    def write(self, arrays: ak.Array, where: str = "") -> None:
        """Add events (an awkward record array) to the event tree; ``where`` names the
        input they come from in errors."""
        self.events.write(arrays, where)

    def copy_objects(
        self, source: Any, objects: dict[str, str], where: str, limits: CopyLimits
    ) -> None:
        """Copy ``objects`` (name -> class, from :func:`root_objects`) of the ROOT
        directory ``source`` into the output: a tree's entries are appended to the output's
        tree of that name, a histogram is added to the output's histogram of that name
        (the binnings must agree). Each object must be small (``limits``)."""
        if self.root is None:
            raise InvalidInput(
                "a Parquet output holds only its event table; other objects cannot be copied",
                where="copy_objects",
            )
        for name, cls in objects.items():
            obj = source[name]
            check_small(obj, name, cls, where, limits)
            if cls in TREE_CLASSES:
                arrays = as_event_tree(obj, f"{where}:{name}").arrays()
                if name not in self.trees:
                    self.trees[name] = _Tree(self, name)
                self.trees[name].write(ak.to_packed(arrays), f"{where}:{name}")
            else:
                if name not in self.histograms:
                    self.histograms[name] = _HistogramSum(name)
                self.histograms[name].add(obj, where)
            if name not in self.copied:
                self.copied.append(name)

    def close(self) -> WrittenFile:
        """Write what is pending, end the file and describe it."""
        try:
            self.events.close()
            for tree in self.trees.values():
                tree.close()
            for name, total in self.histograms.items():
                self.root[name] = total.result()
        finally:
            self._close_files()
        return WrittenFile(
            path=str(self.path),
            guid=self.guid,
            events=self.events.events,
            bytes=os.path.getsize(self.path),
        )

    def _close_files(self) -> None:
        if self.fmt == "parquet":
            if self.events.sink is not None:
                self.events.sink.close()
                self.events.sink = None
        elif self.root is not None:
            self.root.close()
            self.root = None


def copy_objects_from(
    writer: EventWriter,
    handle: Any,
    patterns: Sequence[str],
    event_tree: str,
    where: str,
    limits: CopyLimits,
    label: str = "",
) -> None:
    """Copy the objects of the open input ``handle`` (``label``: its name for messages)
    that ``patterns`` select (the event tree itself excepted) into ``writer``."""
    directory = handle.directory()
    if directory is None:
        raise BadEventFile(
            f"{label or where} is a Parquet file: it holds no objects to copy", where=where
        )
    objects = match_objects(root_objects(directory, where), patterns, event_tree, where)
    writer.copy_objects(directory, objects, where, limits)


@dataclass(frozen=True)
class PartInput:
    """One input of a skim part, open: its event file's handle, its event tree, the
    selected entries and where it was read from (for errors)."""

    handle: Any
    tree: Any
    tree_name: str
    entries: np.ndarray
    where: str
    label: str = ""


def write_part(
    path: str,
    inputs: Iterable[PartInput],
    *,
    fmt: str,
    tree_name: str,
    chunk: int,
    events: int,
    branches: Sequence[str],
    copy_objects: Sequence[str] = (),
    limits: CopyLimits | None = None,
    after_chunk: Callable[[], None] | None = None,
) -> tuple[WrittenFile, list[str]]:
    """Write one skim part's output to ``path``: the selected events of each input in
    turn, read and written at most ``chunk`` at a time (``after_chunk`` is called after
    each, to heartbeat or stop), then the objects ``copy_objects`` selects in each input.
    ``inputs`` is consumed lazily, so each input may be opened (and verified) only when
    its turn comes. The one way a part is written, on a portal worker or a worker node.
    Returns the written file and the names of the objects copied."""
    with EventWriter(path, fmt, tree_name, chunk, events) as writer:
        for inp in inputs:
            names = resolve_branches(list(inp.tree.keys()), branches)
            for arrays in iter_entries(inp.tree, names, inp.entries, inp.where, chunk):
                writer.write(arrays, inp.where)
                if after_chunk is not None:
                    after_chunk()
            if copy_objects:
                if limits is None:
                    raise ValueError("copying objects along needs their limits")
                copy_objects_from(
                    writer, inp.handle, copy_objects, inp.tree_name, inp.where, limits, inp.label
                )
        return writer.close(), list(writer.copied)


def write_events(
    arrays: ak.Array, path: str, fmt: str, tree_name: str = "events", batch: int = 100_000
) -> WrittenFile:
    """Write ``arrays`` to ``path`` as a ROOT TTree, a ROOT RNTuple or Parquet, in clusters
    of ``batch`` entries; describe it (see :class:`EventWriter`)."""
    with EventWriter(path, fmt, tree_name, batch, len(arrays)) as writer:
        writer.write(arrays)
        return writer.close()


def read_output(path: str, fmt: str, tree_name: str = "events") -> ak.Array:
    """Read a skim output back whole (tests, verification)."""
    with open_event_file(path) as f:
        return f.tree(tree_name).arrays()


# --------------------------------------------------------------------------- objects copied along


TREE_CLASSES = ("TTree", "ROOT::RNTuple")
HISTOGRAM_CLASS = re.compile(r"TH([123])[DFISC]")


@dataclass(frozen=True)
class CopyLimits:
    """How large an object copied along may be: entries of a tree or cells of a histogram,
    and bytes in memory."""

    entries: int
    bytes: int


def root_objects(directory: Any, where: str) -> dict[str, str]:
    """Every object of a ROOT file other than directories: path (``dir/name``, without
    the cycle) -> class name."""
    try:
        classes = directory.classnames(recursive=True)
    except Exception as exc:
        raise BadEventFile(
            f"cannot read the file's directory ({short_reason(exc)})", where=where
        ) from None
    found: dict[str, str] = {}
    for key, cls in sorted(classes.items()):
        if cls != "TDirectory":
            found.setdefault(key.rsplit(";", 1)[0], cls)
    return found


def match_objects(
    objects: dict[str, str], patterns: Sequence[str], event_tree: str, where: str
) -> dict[str, str]:
    """The objects (name -> class) that the names or glob patterns select, besides the
    event tree. A pattern that selects nothing, or an object that cannot be copied (only
    TTrees, RNTuples and TH1/TH2/TH3 histograms can), is an InvalidInput naming it."""
    candidates = {name: cls for name, cls in objects.items() if name != event_tree}
    chosen: dict[str, str] = {}
    for pattern in patterns:
        matched = fnmatch.filter(candidates, pattern)
        if not matched:
            others = ", ".join(list(candidates)[:10]) or "no other object"
            beside = " besides the event tree" if fnmatch.fnmatch(event_tree, pattern) else ""
            raise InvalidInput(
                f"no object matches {pattern!r}{beside} in {where} (it holds {others})",
                where="copy_objects",
            )
        for name in matched:
            cls = candidates[name]
            if cls not in TREE_CLASSES and not HISTOGRAM_CLASS.fullmatch(cls):
                raise InvalidInput(
                    f"{name!r} ({cls}) cannot be copied along: only TTrees, RNTuples and "
                    "TH1, TH2 and TH3 histograms can",
                    where="copy_objects",
                )
            chosen[name] = cls
    return dict(sorted(chosen.items()))


def check_small(obj: Any, name: str, cls: str, where: str, limits: CopyLimits) -> None:
    """Refuse an object too large to be copied along (it is read whole into memory)."""
    if cls in TREE_CLASSES:
        entries = int(obj.num_entries)
        if cls == "TTree":
            size = sum(int(b.uncompressed_bytes) for b in obj.itervalues(recursive=True))
        else:  # at most 8 bytes per element of each column
            size = 8 * sum(
                int(page.num_elements)
                for cluster in obj.page_link_list
                for column in cluster
                for page in column.pages
            )
        what = "entries"
    else:
        entries = int(obj.member("fNcells"))
        size = entries * 8 * (2 if len(obj.member("fSumw2")) else 1)
        what = "cells"
    if entries > limits.entries or size > limits.bytes:
        raise InvalidInput(
            f"{name!r} in {where} is not small ({entries:,} {what}, {_size(size)} in memory; "
            f"objects copied along may have at most {limits.entries:,} {what} and "
            f"{_size(limits.bytes)}): skim it as a dataset of its own instead",
            where="copy_objects",
        )


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"


class _HistogramSum:
    """The sum of same-named histograms of several input files, as ROOT's ``hadd`` adds
    them: contents, squared weights and statistics; only when the binnings agree."""

    def __init__(self, name: str):
        self.name = name
        self.first_where = ""
        self.axes: list[tuple] = []
        self.dim = 0
        self.members: dict[str, Any] = {}
        self.data: np.ndarray | None = None
        self.dtype = np.dtype(np.float64)
        self.sumw2: np.ndarray | None = None
        self.stats: dict[str, float] = {}

    def add(self, h: Any, where: str) -> None:
        dim = int(HISTOGRAM_CLASS.fullmatch(h.classname).group(1))
        axes = [_binning(h.member(f"f{x}axis")) for x in "XYZ"[:dim]]
        data = np.asarray(h.bases[-1])
        sumw2 = np.asarray(h.member("fSumw2"), dtype=np.float64)
        if self.data is None:
            maker = _HISTOGRAM_MAKERS[dim]()
            self.dim, self.axes, self.first_where = dim, axes, where
            self.members = {
                k: v
                for k, v in h.all_members.items()
                if k in inspect.signature(maker).parameters and k not in ("fName", "fSumw2")
            }
            self.dtype = data.dtype
            self.data = data.copy()
            self.sumw2 = sumw2.copy() if len(sumw2) else None
            self.stats = {k: float(v) for k, v in self.members.items() if _is_statistic(k)}
            return
        if dim != self.dim or axes != self.axes or data.dtype != self.dtype:
            raise BadEventFile(
                f"histogram {self.name!r} has another binning ({h.classname}) here than in "
                f"{self.first_where}: they cannot be added",
                where=where,
            )
        if len(sumw2) or self.sumw2 is not None:
            mine = self.sumw2 if self.sumw2 is not None else self.data.astype(np.float64)
            theirs = sumw2 if len(sumw2) else data.astype(np.float64)
            self.sumw2 = mine + theirs
        self.data = self.data + data
        for k in self.stats:
            self.stats[k] += float(h.member(k))

    def result(self) -> Any:
        return _HISTOGRAM_MAKERS[self.dim]()(
            fName=self.name,
            **{
                **self.members,
                **self.stats,
                "data": self.data.astype(self.dtype),
                "fSumw2": self.sumw2,
            },
        )


_HISTOGRAM_MAKERS = {
    1: lambda: uproot.writing.identify.to_TH1x,
    2: lambda: uproot.writing.identify.to_TH2x,
    3: lambda: uproot.writing.identify.to_TH3x,
}


def _is_statistic(member: str) -> bool:
    return member == "fEntries" or member.startswith("fTsum")


def _binning(axis: Any) -> tuple:
    """What must agree for two histograms' bins to be added: edges and bin labels."""
    labels = axis.member("fLabels")
    names = tuple(str(x) for x in labels) if labels is not None else ()
    return (tuple(np.asarray(axis.edges(flow=False)).tolist()), names)


# --------------------------------------------------------------------------- output size


def sample_event_bytes(
    arrays: ak.Array,
    path: str,
    fmt: str,
    tree_name: str,
    batch: int,
    copy: Callable[[EventWriter], None] | None = None,
) -> tuple[float, int]:
    """Bytes per event, and bytes of the file itself (headers, streamers, metadata and the
    objects that ``copy`` adds to a writer), when ``arrays`` are written as ``fmt`` in
    batches of ``batch``: measured by writing them, and then none of them, to ``path``
    (removed afterwards). An output of N such events weighs about
    ``overhead + N * per_event``."""

    def size(events: ak.Array) -> int:
        with EventWriter(path, fmt, tree_name, batch, len(events)) as writer:
            writer.write(events)
            if copy is not None:
                copy(writer)
            return writer.close().bytes

    try:
        empty = size(arrays[:0])
        full = size(arrays)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return max(full - empty, 0) / max(len(arrays), 1), empty
