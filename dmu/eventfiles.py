"""Event files of every format the portal writes, behind one small reader (no Django import).

Three formats hold events: a ROOT **TTree** and a ROOT **RNTuple** (both read with uproot)
and **Parquet** (read with pyarrow, turned into awkward arrays). The catalog, the TAG builds
and the skims see them through one interface, :class:`EventTree`:

- ``name``, ``num_entries``, ``keys()`` (the top-level branches, or fields, or columns);
- ``branches()``: each branch with the numeric type of its values and whether it holds a
  list per event (what an automatic TAG schema is made from);
- ``arrays(names, entry_start, entry_stop)``: an awkward array of those branches;
- ``cluster_offsets(names)``: the entry numbers where independent reads can start (a
  TTree's common basket boundaries, an RNTuple's clusters, a Parquet file's row groups);
- ``check_readable()``: read every branch of every cluster, so that a damaged file is
  refused naming the branch (registration does this). Damage shows where the format lets
  it show: in compressed data (a ROOT basket or page, a Parquet page), in a ROOT key, and
  in a Parquet page's checksum (the portal writes them).

A file's GUID: a ROOT file's own UUID; a Parquet file's ``dss_guid`` key-value metadata (the
portal writes it), else a GUID derived from the file's content, ``uuid5(NAMESPACE_URL,
"dss:parquet:md5:" + md5 of the whole file)``, so registering the same bytes again (here or
at another site) gives the same GUID.

Data that cannot be read (a corrupt basket, page or row group) raises ``BadEventFile``
naming the file, the branch and the entries, never an uproot or pyarrow exception.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from dss.errors import BadEventFile, StorageError

from .rootfiles import DEFAULT_TREE, check_root_header, short_reason

TTREE, RNTUPLE, PARQUET = "ttree", "rntuple", "parquet"
FORMAT_NAMES = {TTREE: "ROOT TTree", RNTUPLE: "ROOT RNTuple", PARQUET: "Parquet"}
PARQUET_MAGIC = b"PAR1"
PARQUET_GUID_KEY = b"dss_guid"
PARQUET_TREE_KEY = b"dss_tree"
# Entries read at a time per branch when a whole file is checked (bounds the memory).
CHECK_ENTRIES = 1_000_000


@dataclass(frozen=True)
class BranchInfo:
    """One branch (field, column): the numpy type of its values (of each element, for a
    list branch), or None when they are not plain numbers (strings, objects, nested lists)."""

    name: str
    dtype: np.dtype | None
    jagged: bool


@dataclass(frozen=True)
class EventFileInfo:
    """What the catalog records of an event file."""

    guid: str
    format: str
    tree: str
    events: int
    branches: tuple[str, ...]


def _unreadable(where: str, what: str, start: int, stop: int, exc: BaseException) -> BadEventFile:
    entries = f"entries {start}-{stop - 1}" if stop > start else f"entry {start}"
    return BadEventFile(
        f"branch {what!r} cannot be read ({entries}): {short_reason(exc)}", where=where
    )


class EventTree(ABC):
    """The events of one file: a TTree, an RNTuple or a Parquet table."""

    format: str
    name: str
    where: str  # names the file (and tree) in errors

    @property
    @abstractmethod
    def num_entries(self) -> int: ...

    @abstractmethod
    def keys(self) -> list[str]:
        """The top-level branches, in the file's order."""

    @abstractmethod
    def branches(self) -> list[BranchInfo]:
        """Every top-level branch with the type of its values."""

    @abstractmethod
    def _read(self, names: list[str], start: int, stop: int) -> ak.Array: ...

    @abstractmethod
    def cluster_offsets(self, names: Sequence[str] | None = None) -> list[int]:
        """Entry numbers ``[0, ..., num_entries]`` at which reads of ``names`` can start
        without decoding data of the previous range."""

    def arrays(
        self,
        names: Sequence[str] | None = None,
        entry_start: int | None = None,
        entry_stop: int | None = None,
    ) -> ak.Array:
        """Entries ``[entry_start, entry_stop)`` of ``names`` (all branches when None) as
        an awkward record array with those fields, in that order. Data that cannot be
        read is a BadEventFile naming the branch."""
        n = self.num_entries
        start = 0 if entry_start is None else max(0, min(int(entry_start), n))
        stop = n if entry_stop is None else max(start, min(int(entry_stop), n))
        wanted = list(self.keys() if names is None else names)
        try:
            return self._read(wanted, start, stop)
        except BadEventFile:
            raise
        except MemoryError:
            raise
        except (ConnectionError, TimeoutError) as exc:  # the storage, not the file
            raise StorageError(
                f"reading {', '.join(wanted)} failed: {short_reason(exc)}",
                where=self.where,
                transient=True,
            ) from None
        except Exception as exc:
            culprit = self._culprit(wanted, start, stop)
            raise _unreadable(self.where, culprit or ", ".join(wanted), start, stop, exc) from None

    def _culprit(self, names: list[str], start: int, stop: int) -> str | None:
        """The first of ``names`` that cannot be read on its own, to name it in the error."""
        if len(names) < 2:
            return names[0] if names else None
        for name in names:
            try:
                self._read([name], start, stop)
            except MemoryError:
                raise
            except Exception:
                return name
        return None

    def check_readable(self, names: Sequence[str] | None = None) -> None:
        """Read every branch of ``names`` (all when None) over every entry, one branch and
        at most about CHECK_ENTRIES entries at a time; a BadEventFile names the first
        branch that cannot be read."""
        for start, stop in self._check_ranges():
            for name in self.keys() if names is None else names:
                self.arrays([name], start, stop)

    def _check_ranges(self) -> Iterator[tuple[int, int]]:
        offsets = self.cluster_offsets()
        start = 0
        for boundary in offsets[1:]:
            if boundary - start >= CHECK_ENTRIES or boundary == offsets[-1]:
                if boundary > start:
                    yield start, boundary
                start = boundary


def _branch_info(name: str, t: Any) -> BranchInfo:
    """Classify an awkward type of one value per event (options ignored)."""
    types = ak.types

    def plain(x: Any) -> Any:
        return x.content if isinstance(x, types.OptionType) else x

    def number(x: Any) -> np.dtype | None:
        x = plain(x)
        if isinstance(x, types.NumpyType) and not x.parameters.get("__array__"):
            try:
                return np.dtype(x.primitive)
            except TypeError:
                return None
        return None

    t = plain(t)
    flat = number(t)
    if flat is not None:
        return BranchInfo(name, flat, False)
    if isinstance(t, types.ListType | types.RegularType) and not t.parameters.get("__array__"):
        inner = number(t.content)
        if inner is not None:
            return BranchInfo(name, inner, True)
    return BranchInfo(name, None, False)


class _TTree(EventTree):
    format = TTREE

    def __init__(self, tree: Any, where: str):
        self.tree = tree
        self.name = tree.name
        self.where = where

    @property
    def num_entries(self) -> int:
        return int(self.tree.num_entries)

    def keys(self) -> list[str]:
        return list(self.tree.keys(recursive=False))

    def branches(self) -> list[BranchInfo]:
        import uproot

        found = []
        for name in self.keys():
            try:
                interpretation = self.tree[name].interpretation
            except (ValueError, TypeError, NotImplementedError):
                found.append(BranchInfo(name, None, False))
                continue
            jagged = isinstance(interpretation, uproot.AsJagged)
            content = interpretation.content if jagged else interpretation
            if isinstance(content, uproot.AsDtype) and content.to_dtype.shape == ():
                found.append(BranchInfo(name, np.dtype(content.to_dtype), jagged))
            else:
                found.append(BranchInfo(name, None, False))
        return found

    def _read(self, names: list[str], start: int, stop: int) -> ak.Array:
        wanted = set(names)
        arrays = self.tree.arrays(
            filter_name=lambda name: name in wanted,
            entry_start=start,
            entry_stop=stop,
            library="ak",
            # uproot would keep up to 100 MB of what was read; each range is read once
            array_cache=None,
        )
        return arrays[names] if names else arrays

    def cluster_offsets(self, names: Sequence[str] | None = None) -> list[int]:
        wanted = set(self.keys() if names is None else names)
        try:
            offsets = self.tree.common_entry_offsets(filter_name=lambda name: name in wanted)
        except Exception:
            return [0, self.num_entries]
        return [int(o) for o in offsets]

    def check_readable(self, names: Sequence[str] | None = None) -> None:
        # Numeric branches are read and interpreted. Others (objects, strings, what uproot
        # cannot interpret) would be slow to interpret or cannot be: their baskets are
        # decompressed, which is where damage usually shows.
        numeric = {b.name for b in self.branches() if b.dtype is not None}
        wanted = list(self.keys() if names is None else names)
        for name in wanted:
            if name not in numeric:
                self._check_baskets(self.tree[name], name)
        super().check_readable([name for name in wanted if name in numeric])

    def _check_baskets(self, branch: Any, name: str) -> None:
        """Decompress every basket of ``branch`` and of the branches below it."""
        for i in range(branch.num_baskets):
            try:
                branch.basket(i)
            except Exception as exc:
                lo, hi = int(branch.entry_offsets[i]), int(branch.entry_offsets[i + 1])
                raise _unreadable(self.where, name, lo, hi, exc) from None
        for sub in branch.branches:
            self._check_baskets(sub, name)


class _RNTuple(EventTree):
    format = RNTUPLE

    def __init__(self, ntuple: Any, where: str):
        self.ntuple = ntuple
        self.name = ntuple.name
        self.where = where

    @property
    def num_entries(self) -> int:
        return int(self.ntuple.num_entries)

    def keys(self) -> list[str]:
        return list(self.ntuple.keys(recursive=False))

    def branches(self) -> list[BranchInfo]:
        found = []
        for name in self.keys():
            try:
                form, _ = self.ntuple[name].to_akform()
                found.append(_branch_info(name, form.contents[0].type))
            except Exception:
                found.append(BranchInfo(name, None, False))
        return found

    def _read(self, names: list[str], start: int, stop: int) -> ak.Array:
        arrays = self.ntuple.arrays(
            filter_name=list(names),
            entry_start=start,
            entry_stop=stop,
            library="ak",
            array_cache=None,  # as for a TTree: each range is read once
        )
        return arrays[names] if names else arrays

    def cluster_offsets(self, names: Sequence[str] | None = None) -> list[int]:
        offsets = [0]
        for summary in self.ntuple.cluster_summaries:
            offsets.append(int(summary.num_first_entry) + int(summary.num_entries))
        if offsets[-1] != self.num_entries:
            offsets.append(self.num_entries)
        return offsets


class _ParquetTable(EventTree):
    """A Parquet file's one table; its row groups are the clusters."""

    format = PARQUET

    def __init__(self, parquet: Any, name: str, where: str):
        self.parquet = parquet
        self.name = name
        self.where = where
        meta = parquet.metadata
        self._offsets = [0]
        for i in range(meta.num_row_groups):
            self._offsets.append(self._offsets[-1] + meta.row_group(i).num_rows)

    @property
    def num_entries(self) -> int:
        return int(self.parquet.metadata.num_rows)

    def keys(self) -> list[str]:
        return list(self.parquet.schema_arrow.names)

    def branches(self) -> list[BranchInfo]:
        empty = ak.from_arrow(self.parquet.schema_arrow.empty_table())
        record = empty.type.content
        return [_branch_info(name, record.content(name)) for name in self.keys()]

    def _read(self, names: list[str], start: int, stop: int) -> ak.Array:
        schema = self.parquet.schema_arrow
        if stop <= start:
            table = schema.empty_table().select(names)
        else:
            first = int(np.searchsorted(self._offsets, start, side="right")) - 1
            last = int(np.searchsorted(self._offsets, stop, side="left"))
            table = self.parquet.read_row_groups(list(range(first, last)), columns=names)
            table = table.slice(start - self._offsets[first], stop - start)
        return _without_empty_options(ak.from_arrow(table))

    def cluster_offsets(self, names: Sequence[str] | None = None) -> list[int]:
        return list(self._offsets) if len(self._offsets) > 1 else [0, 0]


def _without_empty_options(arrays: ak.Array) -> ak.Array:
    """Parquet columns written by most tools are nullable even when nothing is missing;
    drop the option type wherever no value is missing, so that the arrays look the same
    as those read from ROOT (missing values, where there are some, stay missing)."""
    if not arrays.fields:
        return arrays
    fields = {}
    for name in arrays.fields:
        x = arrays[name]
        if x.ndim > 1 and not ak.any(ak.is_none(x, axis=1)):
            x = ak.fill_none(x, 0, axis=1)
        if not ak.any(ak.is_none(x, axis=0)):
            x = ak.fill_none(x, 0, axis=0)
        fields[name] = x
    return ak.zip(fields, depth_limit=1)


# --------------------------------------------------------------------------- opening


def sniff_format(head: bytes) -> str | None:
    """``"root"`` or ``"parquet"`` from a file's first bytes; None for anything else."""
    if head[:4] == b"root":
        return "root"
    if head[:4] == PARQUET_MAGIC:
        return PARQUET
    return None


def _is_path(source: Any) -> bool:
    return isinstance(source, str) or hasattr(source, "__fspath__")


def _head(source: Any, n: int = 4) -> bytes:
    if _is_path(source):
        import fsspec

        with fsspec.open(str(source), "rb") as fh:
            return fh.read(n)
    pos = source.tell()
    head = source.read(n)
    source.seek(pos)
    return head


def content_md5(source: Any) -> str:
    """md5 of a whole file (a path, URL or seekable binary file object)."""
    from .checksum import file_checksum

    if _is_path(source):
        import fsspec

        with fsspec.open(str(source), "rb") as fh:
            return file_checksum(fh, md5=True)[2] or ""
    pos = source.tell()
    source.seek(0)
    try:
        return file_checksum(source, md5=True)[2] or ""
    finally:
        source.seek(pos)


def parquet_guid(metadata: dict[bytes, bytes] | None, md5: str) -> str:
    """A Parquet file's GUID: its ``dss_guid`` metadata when that is a UUID, else one
    derived from the md5 of its content."""
    value = (metadata or {}).get(PARQUET_GUID_KEY)
    if value:
        try:
            return str(uuid.UUID(value.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            pass
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dss:parquet:md5:{md5}"))


class EventFile:
    """An open event file of any format; close it (or use it as a context manager)."""

    def __init__(self, source: Any, where: str = "", md5: str | None = None):
        self.where = where or str(source)
        self._source = source
        self._md5 = md5
        self._handle: Any = None
        self._opened: Any = None
        kind = sniff_format(_head(source))
        if kind is None:
            raise BadEventFile(
                "not a ROOT file nor a Parquet file (it begins with neither signature)",
                where=self.where,
            )
        self.kind = kind
        try:
            if kind == "root":
                import uproot

                self._handle = uproot.open(source)
            else:
                import pyarrow.parquet as pq

                if _is_path(source) and "://" in str(source):
                    import fsspec

                    self._opened = fsspec.open(str(source), "rb").open()
                    self._handle = pq.ParquetFile(self._opened, page_checksum_verification=True)
                else:
                    self._handle = pq.ParquetFile(source, page_checksum_verification=True)
        except FileNotFoundError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            what = "ROOT" if kind == "root" else "Parquet"
            raise BadEventFile(
                f"damaged {what} file ({short_reason(exc)})", where=self.where
            ) from None

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.kind == "root" and self._handle is not None:
            self._handle.close()
        elif self._handle is not None:
            self._handle.close()
        if self._opened is not None:
            self._opened.close()
        self._handle = self._opened = None

    @property
    def guid(self) -> str:
        if self.kind == "root":
            return str(self._handle.file.uuid)
        md5 = self._md5 or content_md5(self._source)
        return parquet_guid(self._handle.schema_arrow.metadata, md5)

    def directory(self) -> Any:
        """The file's top directory as uproot reads it, for objects other than event trees
        (histograms, metadata trees); None for a Parquet file."""
        return self._handle if self.kind == "root" else None

    def trees(self) -> dict[str, str]:
        """The event trees of the file, name -> format (ttree, rntuple or parquet)."""
        if self.kind == PARQUET:
            metadata = self._handle.schema_arrow.metadata or {}
            name = metadata.get(PARQUET_TREE_KEY, DEFAULT_TREE.encode()).decode("utf-8", "replace")
            return {name: PARQUET}
        try:
            classes = self._handle.classnames(recursive=True)
        except Exception as exc:
            raise BadEventFile(
                f"cannot read the file's directory ({short_reason(exc)})", where=self.where
            ) from None
        found = {}
        for key, cls in sorted(classes.items()):
            if cls in ("TTree", "ROOT::RNTuple"):
                found.setdefault(key.split(";")[0], TTREE if cls == "TTree" else RNTUPLE)
        return found

    def choose_tree(self, name: str | None = None) -> str:
        """The tree ``name``, or the file's one tree (``events`` among several); a
        BadEventFile says what the file holds instead."""
        trees = self.trees()
        if name is None:
            if DEFAULT_TREE in trees:
                return DEFAULT_TREE
            if len(trees) == 1:
                return next(iter(trees))
            if not trees:
                raise BadEventFile("holds no event tree (no TTree or RNTuple)", where=self.where)
            raise BadEventFile(
                f"holds several trees ({', '.join(trees)}); say which one with --tree",
                where=self.where,
            )
        if name not in trees:
            raise BadEventFile(
                f"has no tree {name!r} (trees: {', '.join(trees) or 'none'})", where=self.where
            )
        return name

    def tree(self, name: str | None = None) -> EventTree:
        """The event tree ``name`` (see :meth:`choose_tree`)."""
        chosen = self.choose_tree(name)
        where = self.where
        if self.kind == PARQUET:
            return _ParquetTable(self._handle, chosen, where)
        try:
            obj = self._handle[chosen]
        except Exception as exc:
            raise BadEventFile(
                f"cannot read tree {chosen!r} ({short_reason(exc)})", where=where
            ) from None
        return as_event_tree(obj, where)


def open_event_file(source: Any, where: str = "", md5: str | None = None) -> EventFile:
    """Open an event file of any format: a local path, a URL (``root://``, ``https://``)
    or a seekable binary file object. ``where`` names it in errors; ``md5`` is the
    content's md5 when already known (it only serves a Parquet file without ``dss_guid``).
    FileNotFoundError passes through; anything else that fails is a BadEventFile."""
    return EventFile(source, where, md5)


def as_event_tree(obj: Any, where: str | None = None) -> EventTree:
    """An :class:`EventTree` over ``obj``: an EventTree (returned as it is) or an uproot
    TTree or RNTuple."""
    if isinstance(obj, EventTree):
        return obj
    from uproot.behaviors.RNTuple import RNTuple
    from uproot.behaviors.TTree import TTree

    if where is None:
        path = getattr(getattr(obj, "file", None), "file_path", "")
        name = getattr(obj, "name", "tree")
        where = f"{path}:{name}" if path else str(name)
    if isinstance(obj, TTree):
        return _TTree(obj, where)
    if isinstance(obj, RNTuple):
        return _RNTuple(obj, where)
    raise TypeError(f"not an event tree: {type(obj).__name__}")


def inspect_event_file(
    source: Any, where: str, size: int, tree: str | None = None, md5: str | None = None
) -> EventFileInfo:
    """Open ``source`` (a local path or a seekable binary file object), check it and
    describe it for the catalog: GUID, format, tree, entries, branches.

    ``where`` names the file in errors; ``size`` is its real length in bytes, checked
    against what the file declares so that a truncated copy is refused before anything
    reads past its end. Every branch of the tree is read (then dropped), so a file whose
    data is damaged is refused here, naming the branch, instead of failing a later TAG
    build or skim.
    """
    head = _head(source, 32)
    kind = sniff_format(head)
    if kind == "root":
        check_root_header(head, where, size)
    elif kind == PARQUET:
        _check_parquet_ends(source, where, size)
    with open_event_file(source, where, md5) as f:
        events_tree = f.tree(tree)
        try:
            events = events_tree.num_entries
            branches = tuple(events_tree.keys())
        except BadEventFile:
            raise
        except Exception as exc:
            raise BadEventFile(
                f"cannot read tree {events_tree.name!r} ({short_reason(exc)})", where=where
            ) from None
        events_tree.check_readable()
        return EventFileInfo(
            guid=f.guid,
            format=events_tree.format,
            tree=events_tree.name,
            events=events,
            branches=branches,
        )


def _check_parquet_ends(source: Any, where: str, size: int) -> None:
    """A Parquet file ends with its footer's length and ``PAR1``: without them it was cut."""
    if _is_path(source):
        with open(source, "rb") as fh:
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
    else:
        pos = source.tell()
        source.seek(max(0, size - 4))
        tail = source.read(4)
        source.seek(pos)
    if size < 12 or tail != PARQUET_MAGIC:
        raise BadEventFile(
            f"truncated: {size} bytes on storage and no Parquet footer at the end", where=where
        )
