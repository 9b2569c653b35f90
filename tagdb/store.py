"""The TAG store: one table per TAG collection, queried with compiled selections.

Built on SQLAlchemy 2.0 Core, so the same code runs on DuckDB and SQLite files (the
embedded default), PostgreSQL and MySQL/MariaDB; Oracle statements compile (tests check
their shape) but are not exercised against a server.

A collection ``key`` (``c42``) names its table (``tag_c42``); keys are checked against
:data:`KEY_RE` and never come from user text. Each table has ``id``, ``file_guid``,
``entry``, nullable ``run``/``lumi``/``event`` (unsigned 64-bit on every backend, see
:mod:`tagdb.numbering`) and one nullable column per attribute
(BIGINT, DOUBLE or BOOLEAN): NULL where the event has no value (masked in
:func:`tagdb.schema.compute_tags`' arrays, or a float that is NaN or infinite, which
MySQL cannot store). A small catalog table, ``tagdb_catalog``, records each published
collection's schema, attribute types, counts and how it marks missing values, so
queries need no reflection. Collections published before missing values were NULL
hold -999 instead; they are read through :func:`legacy_view` (see there).

Builds load into a staging table and :meth:`TagBuilder.publish` swaps it in: in one
transaction on PostgreSQL, SQLite and DuckDB (transactional DDL), with one atomic
``RENAME TABLE`` on MySQL/MariaDB. A failed or aborted build leaves the published
collection untouched.

Every query takes a selection tree; it is type-checked against the collection and
compiled by :func:`tagdb.selection.to_sql`: no text from the user reaches the SQL.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
import secrets
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.pool import SingletonThreadPool

from dss.errors import InvalidInput, NotFound
from tagdb.goodruns import WHERE as GRL_WHERE
from tagdb.goodruns import GoodRunList
from tagdb.numbering import (
    UInt64,
    check_unsigned,
    is_unsigned,
    numbering_array,
    sort_key,
    unsigned_value,
)
from tagdb.parquet import ROW_GROUP_ROWS, Manifest, ParquetFolder, sql_string
from tagdb.schema import Schema
from tagdb.selection import BOOL, FLOAT, INT, Node, check, names_in, suggest, to_sql

KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,23}")
CATALOG_TABLE = "tagdb_catalog"
# Good-run lists are stored as rows, one per luminosity-block range, under their
# fingerprint, and queries join them: a list of any size costs no SQL text.
GRL_LISTS_TABLE = "tagdb_grl_lists"
GRL_RANGES_TABLE = "tagdb_grl_ranges"
# A stored list unused this long is removed (when another list is stored).
GRL_KEEP = timedelta(days=2)
# How long a process trusts that a list it stored or used is still there, before it marks
# it used again (much shorter than GRL_KEEP, so a list in use is never removed).
GRL_RECHECK_S = 600.0
_GRL_BATCH = 5000
NUMBERING = ("run", "lumi", "event")
# Rows per executemany batch where no bulk path exists (MySQL packets stay well under
# the default max_allowed_packet).
_INSERT_BATCH = 5000
_COPY_BATCH = 200_000
_DUCKDB_BATCH = 500_000
_PICK_BATCH = 500
# Rows a Parquet build gathers before writing a part file.
_PARQUET_PART = 1_000_000
T = TypeVar("T")
# An automatic histogram is counted in one scan on a grid of this many cells over the
# attribute's collection range, then merged into bins of whole cells; where the passing
# events span fewer than GRID_CELLS_PER_BIN cells per bin asked for, a second scan bins
# them exactly.
GRID_CELLS = 16384
GRID_CELLS_PER_BIN = 20
# What collections published before missing values were NULL hold for "no value"; their
# catalog rows have no 'missing' entry. New collections record MISSING_IS_NULL there.
LEGACY_MISSING = -999
MISSING_IS_NULL = "null"


def table_name(key: str) -> str:
    """The table that holds collection ``key``; raises InvalidInput for a bad key."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise InvalidInput(
            f"invalid TAG collection key {key!r}: lower-case letters, digits and '_', "
            "starting with a letter, at most 24 characters",
            where="key",
        )
    return f"tag_{key}"


def staging_name(key: str, token: str) -> str:
    """The staging table a build of collection ``key`` loads into (``tag_c42__<token>``)."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", token):
        raise InvalidInput(f"invalid build token {token!r}", where="token")
    return f"{table_name(key)}__{token}"


def sorted_copy_name(table: str, index: int) -> str:
    """The DuckDB table holding the sorted values of the ``index``-th indexed attribute
    of collection table ``table`` (``tag_c42`` -> ``tagx_0_c42``; a staging table's
    copies keep its suffix). ``tagx_`` never begins a collection's own table."""
    return f"tagx_{index}_{table[len('tag_') :]}"


def _sorted_copies(conn: sa.Connection, table: str) -> list[str]:
    """The sorted-copy tables that exist for collection table ``table``."""
    pattern = re.compile(rf"tagx_\d+_{re.escape(table[len('tag_') :])}")
    return [n for n in sa.inspect(conn).get_table_names() if pattern.fullmatch(n)]


_SA_TYPES = {INT: sa.BigInteger, FLOAT: sa.Double, BOOL: sa.Boolean}
_NP_TYPES = {INT: np.int64, FLOAT: np.float64, BOOL: np.bool_}


def tag_table(
    name: str,
    attributes: Mapping[str, str],
    *,
    dialect: str = "default",
    metadata: sa.MetaData | None = None,
) -> sa.Table:
    """The SQLAlchemy table of a TAG collection with ``attributes`` (name -> type).

    ``name`` is the full table name (``table_name(key)``). On DuckDB ``id`` carries no
    primary key: DuckDB would maintain an ART index on every insert and its scans do
    not use it.
    """
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # sqlite: rowid alias
    columns: list[sa.Column] = [
        sa.Column("id", id_type, primary_key=dialect != "duckdb", autoincrement=False),
        sa.Column("file_guid", sa.CHAR(36), nullable=False),
        sa.Column("entry", sa.BigInteger, nullable=False),
        *(sa.Column(c, UInt64(signed_bits=dialect == "sqlite"), nullable=True) for c in NUMBERING),
    ]
    for attr, type_ in attributes.items():
        columns.append(sa.Column(attr, _SA_TYPES[type_](), nullable=True))
    return sa.Table(name, metadata or sa.MetaData(), *columns)


def legacy_view(table: sa.Table | sa.Subquery, attributes: Mapping[str, str]) -> sa.Subquery:
    """``table`` as queries see a collection published before missing values were NULL.

    Such collections hold -999 (:data:`LEGACY_MISSING`) in numeric attributes where the
    event had no such object, and their catalog rows record no convention. Reading every
    numeric attribute column as ``NULLIF(col, -999)`` makes their answers right without
    a rebuild: -999 is then missing in selections (unknown, never passing a comparison),
    in histograms (counted as missing, not as underflow), in ranges and in top lists.
    Boolean attributes never held -999 and are read as they are. The databases fold
    this subquery into the query; the one cost is that B-tree indexes on the wrapped
    columns go unused until the collection is rebuilt.
    """
    columns: list[sa.ColumnElement] = []
    for column in table.c:
        type_ = attributes.get(column.name)
        if type_ in (INT, FLOAT):
            sentinel = sa.literal(LEGACY_MISSING, _SA_TYPES[type_]())
            column = sa.func.nullif(column, sentinel, type_=column.type).label(column.name)
        columns.append(column)
    return sa.select(*columns).subquery(table.name)


def _selection_columns(table: sa.Table, info_types: Mapping[str, str]) -> dict[str, Any]:
    return {name: table.c[name] for name in info_types}


def where_clause(
    table: sa.Table,
    types: Mapping[str, str],
    tree: Node | None,
    also: sa.ColumnElement[bool] | None = None,
) -> sa.ColumnElement[bool]:
    """The WHERE condition for ``tree`` over ``table`` (true when ``tree`` is None), and
    ``also`` (a good-run list's condition) when given."""
    condition: sa.ColumnElement[bool] = sa.true()
    if tree is not None:
        condition = to_sql(check(tree, types), _selection_columns(table, types))
    return condition if also is None else sa.and_(condition, also)


def select_count(
    table: sa.Table,
    types: Mapping[str, str],
    tree: Node | None,
    also: sa.ColumnElement[bool] | None = None,
) -> sa.Select:
    """SELECT count(*) of the rows that pass ``tree`` (and ``also``)."""
    stmt = sa.select(sa.func.count()).select_from(table)
    if tree is None and also is None:
        return stmt
    return stmt.where(where_clause(table, types, tree, also))


def _histogram_value(table: sa.Table, attr: str, type_: str) -> sa.ColumnElement:
    col = table.c[attr]
    if is_unsigned(col):
        return unsigned_value(col)
    return sa.cast(col, sa.Integer) if type_ == BOOL else col


def select_range(
    table: sa.Table,
    types: Mapping[str, str],
    attr: str,
    tree: Node | None,
    also: sa.ColumnElement[bool] | None = None,
) -> sa.Select:
    """SELECT min, max of ``attr`` over the passing rows (missing values, NULL, are
    ignored by the aggregates)."""
    x = _histogram_value(table, attr, types[attr])
    return (
        sa.select(sa.func.min(x), sa.func.max(x))
        .select_from(table)
        .where(where_clause(table, types, tree, also))
    )


def select_ranges(table: sa.Table, types: Mapping[str, str]) -> sa.Select:
    """SELECT min, max of every column in ``types`` (in order) over the whole table;
    missing values (NULL) are ignored."""
    parts = []
    for name, type_ in types.items():
        if is_unsigned(table.c[name]):  # run/lumi/event numbers: exact, and never -999
            parts += [sa.func.min(sort_key(table.c[name])), sa.func.max(sort_key(table.c[name]))]
            continue
        x = _histogram_value(table, name, type_)
        parts += [sa.func.min(x), sa.func.max(x)]
    return sa.select(*parts).select_from(table)


def _ranges_from_row(row: Sequence[Any], types: Mapping[str, str]) -> dict[str, tuple]:
    ranges = {}
    for i, (name, type_) in enumerate(types.items()):
        lo, hi = row[2 * i], row[2 * i + 1]
        if lo is not None:
            cast = {BOOL: bool, INT: int, FLOAT: float}[type_]
            lo, hi = cast(lo), cast(hi)
        ranges[name] = (lo, hi)
    return ranges


def select_histogram(
    table: sa.Table,
    types: Mapping[str, str],
    attr: str,
    tree: Node | None,
    bins: int,
    lo: float,
    hi: float,
    *,
    bounded: bool = False,
    guard_nulls: bool = True,
    also: sa.ColumnElement[bool] | None = None,
) -> sa.Select:
    """SELECT bin, count(*) GROUP BY bin, binned in the database.

    Bin codes: 0..bins-1 for [lo, hi] (``hi`` falls in the last bin, as in numpy),
    negative below ``lo``, above ``bins`` beyond ``hi``; a code of ``bins`` comes from
    ``hi`` itself (or rounding just below it) and belongs to the last bin. Rows without
    a value (NULL) form a NULL bin, so one scan gives every count.

    ``bounded`` says the attribute's values span few bin widths (the caller knows its
    range), so codes need no clamping: floor((x - lo) / width), plus one above ``hi``,
    which is cheaper per row than clamping. ``guard_nulls`` keeps NULL away from
    floor() where the driver supplies it as a Python function (SQLite).

    The bin is computed in a subquery because each mention of a bound parameter is a
    separate placeholder, and PostgreSQL would not match a repeated expression in
    GROUP BY.
    """
    x = _histogram_value(table, attr, types[attr])
    lo_p = sa.literal(float(lo), sa.Double())
    hi_p = sa.literal(float(hi), sa.Double())
    scale = sa.literal(bins / (hi - lo), sa.Double())
    above = sa.literal(bins + 1, sa.Integer())
    if bounded:
        code = sa.func.floor((x - lo_p) * scale) + sa.case(
            (x > hi_p, sa.literal(1, sa.Integer())), else_=sa.literal(0, sa.Integer())
        )
        if guard_nulls:
            code = sa.case((x.is_(None), sa.null()), else_=code)
    else:
        code = sa.case(
            (x.is_(None), sa.null()),
            (x < lo_p, sa.literal(-1, sa.Integer())),
            (x > hi_p, above),
            else_=sa.func.floor((x - lo_p) * scale),
        )
    inner = (
        sa.select(code.label("bin"))
        .select_from(table)
        .where(where_clause(table, types, tree, also))
        .subquery("binned")
    )
    return sa.select(inner.c.bin, sa.func.count()).group_by(inner.c.bin)


def select_cells(
    table: sa.Table,
    types: Mapping[str, str],
    attr: str,
    tree: Node | None,
    origin: float,
    width: float,
    guard_nulls: bool = False,
    also: sa.ColumnElement[bool] | None = None,
) -> sa.Select:
    """SELECT cell, count(*) GROUP BY cell: the passing rows counted on a fine grid of
    cells ``width`` wide from ``origin`` (cell = floor((x - origin) / width)).

    The grid spans the collection's range of ``attr``, so every value lands in one of
    a bounded number of cells (a missing value, NULL, in a NULL cell) and no clamping
    is needed: one cheap expression per row. ``guard_nulls``
    keeps NULL away from floor() where the driver supplies it as a Python function
    (SQLite)."""
    x = _histogram_value(table, attr, types[attr])
    cell = sa.func.floor(
        (x - sa.literal(float(origin), sa.Double())) * sa.literal(1.0 / width, sa.Double())
    )
    if guard_nulls:
        cell = sa.case((x.is_(None), sa.null()), else_=cell)
    inner = (
        sa.select(cell.label("cell"))
        .select_from(table)
        .where(where_clause(table, types, tree, also))
        .subquery("cells")
    )
    return sa.select(inner.c.cell, sa.func.count()).group_by(inner.c.cell)


@dataclass(frozen=True)
class _Grid:
    """The fine grid an automatic histogram is first counted on: ``n`` cells of
    ``width`` from ``origin``, spanning the collection's range of the attribute."""

    origin: float
    width: float
    n: int
    integer: bool  # cells are whole numbers of integer values, centred on them


def _grid(type_: str, lo: Any, hi: Any) -> _Grid | None:
    """The grid for an attribute whose collection range is ``lo``..``hi``; None where a
    grid does not help (no values, a single value)."""
    if lo is None or hi is None or hi <= lo:
        return None
    if type_ == INT:
        span = int(hi) - int(lo) + 1
        width = max(1, -(-span // GRID_CELLS))
        return _Grid(int(lo) - 0.5, float(width), -(-span // width), True)
    return _Grid(float(lo), (float(hi) - float(lo)) / GRID_CELLS, GRID_CELLS, False)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CollectionInfo:
    """What the catalog records about a published collection."""

    key: str
    table: str
    schema_name: str
    schema_version: int
    attributes: dict[str, str]  # name -> type, in schema order
    numbering: tuple[str, ...]  # which of run/lumi/event the collection has
    indexed: tuple[str, ...]
    n_events: int
    n_files: int
    built_at: datetime | None = None
    # (min, max) of every attribute and number, ignoring missing values, as measured
    # when the collection was published; empty for collections published before the
    # catalog kept ranges (they are measured on first use).
    ranges: dict[str, tuple[Any, Any]] = field(default_factory=dict, compare=False)
    # False for a collection published before missing values were NULL: its numeric
    # attributes hold -999 for them and are read through legacy_view().
    missing_is_null: bool = True

    def attribute_types(self) -> dict[str, str]:
        """Everything a selection on this collection may name, with its type."""
        types = dict.fromkeys(self.numbering, INT)
        types.update(self.attributes)
        return types


@dataclass(frozen=True)
class Histogram:
    """Counts of ``attribute`` in ``len(edges) - 1`` bins; values outside ``edges``
    are in ``underflow``/``overflow``; passing events without a value (the attribute
    is missing) are in ``missing``, never in a bin or the underflow."""

    attribute: str
    edges: np.ndarray
    counts: np.ndarray
    underflow: int = 0
    overflow: int = 0
    missing: int = 0

    @property
    def total(self) -> int:
        """Every row the selection passed: bins, under/overflow and missing."""
        return int(self.counts.sum()) + self.underflow + self.overflow + self.missing


@dataclass(frozen=True)
class EventRef:
    """Where an event lives (file GUID and entry), with its numbers where known."""

    file_guid: str
    entry: int
    run: int | None
    event: int | None
    value: Any = None  # the attribute value, for top()
    # The attributes events() was asked for, by name; None where one is missing.
    values: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PickedEvent:
    """One event found by its (run, event) number, in collection ``key``."""

    key: str
    run: int
    event: int
    file_guid: str
    entry: int


@dataclass(frozen=True)
class PickResult:
    """Events found by (run, event); ``missing`` pairs matched nothing, ``duplicates``
    matched more than one row (in one collection or across several)."""

    found: list[PickedEvent] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)


def _merge_cells(
    attr: str, rows: Iterable[Sequence[Any]], grid: _Grid, bins: int
) -> Histogram | tuple[Any, Any]:
    """The histogram from grid cell counts (``select_cells`` rows), or, where the
    passing events span too few cells to merge into ``bins`` bins, their extent (lowest
    and highest value for an integer grid, cell edges otherwise) for an exact scan."""
    cells = np.zeros(grid.n, dtype=np.int64)
    underflow = missing = 0
    for cell, n in rows:
        if cell is None:
            missing += n
        elif cell < 0:
            underflow += n  # not expected (the grid starts at the lowest value): kept apart
        else:
            cells[min(int(cell), grid.n - 1)] += n  # the top value may round into cell n
    occupied = np.flatnonzero(cells)
    if len(occupied) == 0:
        # Nothing but missing values passed: an empty histogram over 0..1.
        if grid.integer:
            edges = np.array([-0.5, 0.5, 1.5])
        else:
            edges = np.linspace(0.0, 1.0, bins + 1)
        counts = np.zeros(len(edges) - 1, dtype=np.int64)
        return Histogram(attr, edges, counts, underflow=underflow, missing=missing)
    first, last = int(occupied[0]), int(occupied[-1])
    span = last - first + 1
    if grid.integer and grid.width == 1 and span <= bins:
        # One bin per integer value, centred on it.
        edges = grid.origin + np.arange(first, last + 2, dtype=np.float64)
        counts = cells[first : last + 1]
    elif span >= GRID_CELLS_PER_BIN * bins:
        per_bin = -(-span // bins)
        padded = np.zeros(per_bin * bins, dtype=np.int64)
        padded[:span] = cells[first : last + 1]
        counts = padded.reshape(bins, per_bin).sum(axis=1)
        edges = grid.origin + (first + per_bin * np.arange(bins + 1)) * grid.width
    elif grid.integer:
        return (
            int(grid.origin + first * grid.width + 0.5),
            int(grid.origin + (last + 1) * grid.width - 0.5),
        )
    else:
        return grid.origin + first * grid.width, grid.origin + (last + 1) * grid.width
    return Histogram(attr, edges, counts, underflow=underflow, missing=missing)


def _catalog_row(info: CollectionInfo) -> dict[str, Any]:
    """``info`` as a row of the catalog table (and of a Parquet store's manifest)."""
    return {
        "key": info.key,
        "table_name": info.table,
        "schema_name": info.schema_name,
        "schema_version": info.schema_version,
        "attributes": json.dumps(list(info.attributes.items())),
        "numbering": ",".join(info.numbering),
        "indexed": json.dumps(list(info.indexed)),
        "n_events": info.n_events,
        "n_files": info.n_files,
        "built_at": info.built_at,
        "ranges": json.dumps(info.ranges),
        "missing": MISSING_IS_NULL if info.missing_is_null else None,
    }


# --------------------------------------------------------------------------- DDL helpers


def _quote(conn: sa.Connection, name: str) -> str:
    # Only our own table and index names reach DDL text: re-check them all the same.
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
        raise ValueError(f"refusing unsafe identifier {name!r}")
    return conn.dialect.identifier_preparer.quote(name)


def _ddl(conn: sa.Connection, template: str, *names: str) -> None:
    conn.execute(sa.DDL(template.format(*(_quote(conn, n) for n in names))))


def _sqlite_transactional_ddl(engine: sa.Engine) -> None:
    """Let SQLite run DDL inside our transactions (the pysqlite driver otherwise
    commits around it), so publishing a rebuilt collection is atomic."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")


# --------------------------------------------------------------------------- building


class TagBuilder:
    """Loads one collection into a staging table; :meth:`publish` swaps it in.

    Use as a context manager: leaving the block without publishing (or with an error)
    aborts the build and drops the staging table.
    """

    def __init__(self, store: TagStore, key: str, schema: Schema, token: str | None = None):
        self.store = store
        self.key = key
        self.final_name = table_name(key)
        self.schema = schema
        self.types = {a.name: a.type for a in schema.attributes}
        self.numbering = tuple(c for c in NUMBERING if c in schema.numbering())
        self.token = token or secrets.token_hex(4)
        self.staging_name = staging_name(key, self.token)
        self.table = tag_table(self.staging_name, self.types, dialect=store.dialect)
        self.n_events = 0
        self.files: set[str] = set()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._parts = 0
        self.state = "open"
        if store.parquet is not None:
            self.folder = store.parquet.build_dir(key, self.token)
            (self.folder / "stage").mkdir(parents=True, exist_ok=True)
            return
        with store.engine.begin() as conn:
            self.table.create(conn)

    def __enter__(self) -> TagBuilder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.state in ("open", "prepared"):
            self.abort()

    def _columns(self, file_guid: str, tags: Mapping[str, Any], entry_start: int) -> dict:
        try:
            guid = str(uuid.UUID(str(file_guid)))
        except ValueError:
            raise InvalidInput(
                f"file GUID {file_guid!r} is not a UUID", where="file_guid"
            ) from None
        missing = [name for name in self.types if name not in tags]
        if missing:
            raise InvalidInput(
                f"TAGs for file {guid} lack attribute '{missing[0]}'", where=f"file {guid}"
            )
        lengths = {name: len(tags[name]) for name in self.types}
        n = next(iter(lengths.values()))
        uneven = [name for name, length in lengths.items() if length != n]
        if uneven:
            raise InvalidInput(
                f"TAGs for file {guid}: attribute '{uneven[0]}' has {lengths[uneven[0]]} "
                f"values, '{next(iter(lengths))}' has {n}",
                where=f"file {guid}",
            )
        entry = (
            np.asarray(tags["entry"], dtype=np.int64)
            if "entry" in tags
            else np.arange(entry_start, entry_start + n, dtype=np.int64)
        )
        columns: dict[str, Any] = {
            "id": np.arange(self.n_events + 1, self.n_events + n + 1, dtype=np.int64),
            "file_guid": guid,
            "entry": entry,
        }
        for name in NUMBERING:
            columns[name] = (
                numbering_array(tags[name], f"the {name} number", f"file {guid}")
                if name in self.numbering
                else None
            )
        for name, type_ in self.types.items():
            values = tags[name]
            data = np.ma.getdata(values).astype(_NP_TYPES[type_], copy=False)
            missing = np.ma.getmaskarray(values)
            if type_ == FLOAT:
                missing = missing | ~np.isfinite(data)
            columns[name] = np.ma.array(data, mask=missing)
        return columns

    def load(self, file_guid: str, tags: Mapping[str, Any], entry_start: int = 0) -> int:
        """Bulk-load the TAGs of one file (or one chunk of it) into the staging table.

        ``tags`` is what :func:`tagdb.schema.compute_tags` returns; entries are numbered
        from ``entry_start`` unless ``tags`` has an ``entry`` array. Masked entries, and
        floats that are NaN or infinite, are stored as NULL: missing. Returns rows loaded.
        """
        if self.state != "open":
            raise RuntimeError(f"this build was already {self.state}")
        columns = self._columns(file_guid, tags, entry_start)
        n = len(columns["id"])
        if n == 0:
            self.files.add(columns["file_guid"])
            return 0
        if self.store.dialect == "duckdb":
            # (A Parquet build writes a part file per _PARQUET_PART rows instead.)
            # Every DuckDB commit syncs its write-ahead log (~0.1 s), so the TAGs of
            # small files are gathered into large appends.
            self._pending.append(self._arrow(columns, n))
            self._pending_rows += n
            limit = _DUCKDB_BATCH if self.store.parquet is None else _PARQUET_PART
            if self._pending_rows >= limit:
                self._flush()
        else:
            loader = (
                self._load_postgresql
                if self.store.dialect == "postgresql"
                else self._load_executemany
            )
            with self.store.engine.begin() as conn:
                loader(conn, columns, n)
        self.n_events += n
        self.files.add(columns["file_guid"])
        return n

    def _arrow_schema(self) -> pa.Schema:
        kinds = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_()}
        fields = [("id", pa.int64()), ("file_guid", pa.string()), ("entry", pa.int64())]
        fields += [(name, pa.uint64()) for name in NUMBERING]
        fields += [(name, kinds[type_]) for name, type_ in self.types.items()]
        return pa.schema(fields)

    def _arrow(self, columns: Mapping[str, Any], n: int) -> pa.Table:
        arrays = {}
        for column in self.table.columns:
            value = columns[column.name]
            if value is None:
                arrays[column.name] = pa.nulls(n, pa.int64())
            elif isinstance(value, str):
                arrays[column.name] = pa.array([value] * n, pa.string())
            elif isinstance(value, np.ma.MaskedArray):
                arrays[column.name] = pa.array(value.data, mask=np.ma.getmaskarray(value))
            else:
                arrays[column.name] = pa.array(value)
        return pa.table(arrays)

    def _flush(self) -> None:
        """Append the gathered DuckDB batches in one statement and one commit."""
        if not self._pending:
            return
        batch = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        if self.store.parquet is not None:
            import pyarrow.parquet as pq

            part = self.folder / "stage" / f"part-{self._parts:05d}.parquet"
            pq.write_table(batch.cast(self._arrow_schema()), part, compression="none")
            self._parts += 1
            return
        with self.store.engine.begin() as conn:
            self._load_duckdb(conn, batch)

    def _load_duckdb(self, conn: sa.Connection, batch: pa.Table) -> None:
        duck = conn.connection.driver_connection
        view = f"dss_load_{self.token}"
        duck.register(view, batch)
        try:
            names = [c.name for c in self.table.columns]
            source = sa.select(*(sa.column(name) for name in names)).select_from(sa.table(view))
            conn.execute(sa.insert(self.table).from_select(names, source))
        finally:
            duck.unregister(view)

    def _load_postgresql(self, conn: sa.Connection, columns: Mapping[str, Any], n: int) -> None:
        import pyarrow.csv as pacsv
        from psycopg import sql

        table = self._arrow(columns, n)
        names = [c.name for c in self.table.columns]
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(self.staging_name), sql.SQL(", ").join(map(sql.Identifier, names))
        )
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(statement) as copy:
            # Arrow writes CSV in C, a whole batch at a time; an empty field is NULL.
            for start in range(0, n, _COPY_BATCH):
                buffer = io.BytesIO()
                pacsv.write_csv(
                    table.slice(start, _COPY_BATCH),
                    buffer,
                    pacsv.WriteOptions(include_header=False),
                )
                copy.write(buffer.getvalue())

    def _load_executemany(self, conn: sa.Connection, columns: Mapping[str, Any], n: int) -> None:
        names = [c.name for c in self.table.columns]
        lists = []
        for name in names:
            value = columns[name]
            if value is None or isinstance(value, str):
                lists.append([value] * n)
            else:
                # tolist() gives None for masked (missing) entries, Python numbers else.
                lists.append(value.tolist())
        insert = sa.insert(self.table)
        for start in range(0, n, _INSERT_BATCH):
            rows = [
                dict(zip(names, row, strict=True))
                for row in zip(*(v[start : start + _INSERT_BATCH] for v in lists), strict=True)
            ]
            conn.execute(insert, rows)

    def publish(self) -> CollectionInfo:
        """Index the staging table and make it the collection, replacing any previous
        build of the same key in one step."""
        return self.swap(self.prepare())

    def swap(self, info: CollectionInfo) -> CollectionInfo:
        """Make the prepared staging table the collection, in one step."""
        if self.state != "prepared":
            raise RuntimeError(f"this build is {self.state}, not prepared")
        self.store._swap_in(self.staging_name, info)
        self.state = "published"
        return info

    def prepare(self) -> CollectionInfo:
        """Index the staging table and measure its ranges: everything publishing does but
        the swap, which :meth:`swap` does in one short step."""
        if self.state != "open":
            raise RuntimeError(f"this build was already {self.state}")
        store = self.store
        self._flush()
        indexed = tuple(a.name for a in self.schema.attributes if a.index)
        if store.parquet is not None:
            self._write_parquet()
        elif store.dialect != "duckdb":
            # DuckDB answers range scans from its per-block min/max; ART indexes would
            # only slow the load. The other engines use B-trees for all of these.
            with store.engine.begin() as conn:
                indexes = [
                    sa.Index(f"tix_{self.token}_re", self.table.c.run, self.table.c.event),
                    sa.Index(f"tix_{self.token}_fe", self.table.c.file_guid, self.table.c.entry),
                    *(
                        sa.Index(f"tix_{self.token}_a{i}", self.table.c[name])
                        for i, name in enumerate(indexed)
                    ),
                ]
                for index in indexes:
                    index.create(conn)
        if store.dialect == "duckdb" and store.parquet is None:
            # DuckDB has no index for range scans; instead each indexed attribute gets a
            # sorted copy of its column. A count or histogram whose selection names only
            # that attribute reads the copy, where the per-block min/max DuckDB keeps
            # skips every block that cannot match: an index-only scan.
            with store.engine.begin() as conn:
                for i, name in enumerate(indexed):
                    _ddl(
                        conn,
                        "CREATE TABLE {} AS SELECT {} FROM {} ORDER BY {}",
                        sorted_copy_name(self.staging_name, i),
                        name,
                        self.staging_name,
                        name,
                    )
        if store.dialect == "postgresql":
            # Fresh statistics for the planner, and a visibility map so that counts can
            # be answered by index-only scans. VACUUM cannot run in a transaction.
            with store.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                _ddl(conn, "VACUUM ANALYZE {}", self.staging_name)
        info = CollectionInfo(
            key=self.key,
            # A Parquet build is queried under its own name, so that a query never mixes
            # one build's catalog entry with another's files.
            table=self.final_name if store.parquet is None else self.staging_name,
            schema_name=self.schema.name,
            schema_version=self.schema.version,
            attributes=dict(self.types),
            numbering=self.numbering,
            indexed=indexed,
            n_events=self.n_events,
            n_files=len(self.files),
            built_at=datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        )
        # Each attribute's range, measured once here: the page lists them and automatic
        # histograms are counted on a grid over them.
        types = info.attribute_types()
        if store.parquet is not None:
            store._views[self.staging_name] = self.files_written()
            with store._scanning() as conn:
                row = conn.execute(select_ranges(self.table, types)).one()
            store._views.pop(self.staging_name, None)
        else:
            with store.engine.connect() as conn:
                row = conn.execute(select_ranges(self.table, types)).one()
        info = dataclasses.replace(info, ranges=_ranges_from_row(row, types))
        self.state = "prepared"
        return info

    def files_written(self) -> tuple[str, ...]:
        """The Parquet files of this build, once prepared."""
        return (str(self.folder / "data.parquet"),)

    def _write_parquet(self) -> None:
        """Write the loaded parts as one file sorted by run (then load order), in row
        groups of ROW_GROUP_ROWS with min/max statistics: a selection on run numbers, or
        on anything that follows them, skips whole row groups. The pages are not
        compressed: a TAG file is read again and again from the page cache, where
        decompressing is what a scan waits for (snappy scanned 15% slower at 10^7 rows,
        and DuckDB's dictionary and run-length encodings still shrink the integers)."""
        import duckdb
        import pyarrow.parquet as pq

        stage = self.folder / "stage"
        target = self.files_written()[0]
        parts = sorted(str(p) for p in stage.glob("part-*.parquet"))
        if not parts:
            pq.write_table(self._arrow_schema().empty_table(), target)
        else:
            order = "run, id" if "run" in self.numbering else "id"
            con = duckdb.connect(":memory:", config={"temp_directory": str(self.folder / "tmp")})
            try:
                sources = ", ".join(sql_string(p) for p in parts)
                con.execute(
                    f"COPY (SELECT * FROM read_parquet([{sources}]) ORDER BY {order}) "
                    f"TO {sql_string(target)} "
                    f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, COMPRESSION uncompressed)"
                )
            finally:
                con.close()
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(self.folder / "tmp", ignore_errors=True)

    def abort(self) -> None:
        """Drop the staging table; the published collection (if any) stays as it was."""
        if self.state not in ("open", "prepared"):
            return
        self.state = "aborted"
        self._pending, self._pending_rows = [], 0
        if self.store.parquet is not None:
            self.store.parquet.discard(self.key, self.token)
            return
        with self.store.engine.begin() as conn:
            self.table.drop(conn, checkfirst=True)
            for copy in _sorted_copies(conn, self.staging_name):
                _ddl(conn, "DROP TABLE {}", copy)


# --------------------------------------------------------------------------- the store


def _files_gone(exc: Exception) -> bool:
    """Whether DuckDB failed because a Parquet file it was asked to read is not there."""
    return "No files found" in str(exc) or "No such file" in str(exc)


def _in_session(method: Callable[..., T]) -> Callable[..., T]:
    """A query method that reads the catalog and then the collection on one connection
    (see :meth:`TagStore.session`)."""

    @functools.wraps(method)
    def wrapper(self: TagStore, *args: Any, **kwargs: Any) -> T:
        with self.session():
            if self.parquet is None or getattr(self._held, "retrying", False):
                return method(self, *args, **kwargs)
            try:
                return method(self, *args, **kwargs)
            except sa.exc.DBAPIError as exc:
                # A build retired after this query read its manifest, and its grace
                # period is over: read the manifest again, once.
                if not _files_gone(exc):
                    raise
            self._held.retrying = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self._held.retrying = False

    return wrapper


def parquet_url(url: str | sa.URL) -> tuple[str | sa.URL, str | None]:
    """The catalog's URL and the Parquet folder of a TAG DB URL: ``parquet:///folder``
    (the catalog in ``folder/catalog.sqlite``) or any SQLAlchemy URL with
    ``?parquet_dir=/folder`` (the catalog in that database); the folder is None for
    a TAG DB that holds its event rows itself."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("parquet://"):
        folder = text[len("parquet://") :]
        if not folder.startswith("/") or "?" in folder:
            raise InvalidInput(
                f"a Parquet TAG store URL names an absolute folder: parquet:///path, not {text!r}",
                where="TAGDB_URL",
            )
        folder = "/" + folder.lstrip("/")
        return f"sqlite:///{Path(folder) / 'catalog.sqlite'}", folder
    parsed = sa.engine.make_url(url)
    folder = parsed.query.get("parquet_dir")
    if folder is None:
        return url, None
    if isinstance(folder, tuple):
        folder = folder[-1]
    return parsed.difference_update_query(["parquet_dir"]), folder


class TagStore:
    """TAG collections in one database, addressed by SQLAlchemy URL; or, with a Parquet
    folder (``parquet:///folder``, ``…?parquet_dir=/folder`` or ``parquet_dir=``), the
    catalog in that database and each build's event rows in Parquet files there, queried
    by an in-process DuckDB (see :mod:`tagdb.parquet`)."""

    def __init__(
        self, url: str | sa.Engine, parquet_dir: str | Path | None = None, **engine_options: Any
    ):
        if not isinstance(url, sa.Engine):
            url, folder = parquet_url(url)
            parquet_dir = parquet_dir or folder
            if parquet_dir is not None:
                Path(parquet_dir).mkdir(parents=True, exist_ok=True)
        self.engine = url if isinstance(url, sa.Engine) else sa.create_engine(url, **engine_options)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _sqlite_transactional_ddl(self.engine)
        # The Parquet folder of a columnar store, and the in-process DuckDB (one in-memory
        # database per thread) that reads it; the catalog stays in self.engine.
        self.parquet = ParquetFolder(parquet_dir) if parquet_dir is not None else None
        self.rows_engine = self.engine
        self._views: dict[str, tuple[str, ...]] = {}  # view name -> its Parquet files
        if self.parquet is not None:
            # One connection per thread; enough of them kept that a busy web worker's
            # threads never have theirs closed under them.
            self.rows_engine = sa.create_engine(
                "duckdb:///:memory:", poolclass=SingletonThreadPool, pool_size=64
            )
            self.dialect = "duckdb"  # what queries on the event rows are compiled for
        self._metadata = sa.MetaData()
        self.catalog = sa.Table(
            CATALOG_TABLE,
            self._metadata,
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("table_name", sa.String(64), nullable=False),
            sa.Column("schema_name", sa.String(64), nullable=False),
            sa.Column("schema_version", sa.Integer, nullable=False),
            sa.Column("attributes", sa.Text, nullable=False),
            sa.Column("numbering", sa.String(32), nullable=False),
            sa.Column("indexed", sa.Text, nullable=False),
            sa.Column("n_events", sa.BigInteger, nullable=False),
            sa.Column("n_files", sa.BigInteger, nullable=False),
            sa.Column("built_at", sa.DateTime, nullable=True),
            sa.Column("ranges", sa.Text, nullable=True),
            # How missing values are stored: MISSING_IS_NULL, or NULL (the column was
            # added later) for a collection that holds -999 for them.
            sa.Column("missing", sa.String(16), nullable=True),
        )
        self.grl_lists = sa.Table(
            GRL_LISTS_TABLE,
            self._metadata,
            sa.Column("grl", sa.CHAR(32), primary_key=True),
            sa.Column("n_ranges", sa.BigInteger, nullable=False),
            sa.Column("stored_at", sa.DateTime, nullable=False),
            sa.Column("used_at", sa.DateTime, nullable=False),
        )
        self.grl_ranges = sa.Table(
            GRL_RANGES_TABLE,
            self._metadata,
            sa.Column("grl", sa.CHAR(32), primary_key=True),
            sa.Column("run", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("lumi_lo", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("lumi_hi", sa.BigInteger, nullable=False),
        )
        self._catalog_ready = False
        self._grl_ready = False
        self._grl_seen: dict[str, float] = {}  # fingerprint -> when this process last marked it
        self._held = threading.local()  # the connection of a session() in this thread
        self._tables: dict[
            str, tuple[CollectionInfo, sa.Table | sa.Subquery, dict[str, sa.Table | sa.Subquery]]
        ] = {}

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        if self.parquet is not None:
            return f"TagStore({url!r}, parquet_dir={str(self.parquet.root)!r})"
        return f"TagStore({url!r})"

    @contextmanager
    def session(self) -> Iterator[None]:
        """Run a group of reads on one connection.

        An embedded DuckDB file opened without a pool (as the portal opens it, so that
        the web and worker processes can take turns) is otherwise opened again by every
        read, at some milliseconds each. Other backends pool their connections already,
        so for them this does nothing.
        """
        if self.engine.dialect.name != "duckdb" or getattr(self._held, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._held.conn = conn
            try:
                yield
            finally:
                self._held.conn = None

    @contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """The session's connection, or a connection of its own for one read."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _scanning(self) -> Iterator[sa.Connection]:
        """A connection that reads event rows: the session's own, or for a Parquet store
        this thread's in-memory DuckDB, with a view over each build queried so far."""
        if self.parquet is None:
            with self._reading() as conn:
                yield conn
            return
        with self.rows_engine.connect() as conn:
            views = conn.connection.info.setdefault("dss_views", {})
            if not views:
                # Parquet footers are read once per file, not once per query.
                conn.exec_driver_sql("SET parquet_metadata_cache = true")
            wanted = list(self._views.items())
            stale = [(name, files) for name, files in wanted if views.get(name) != files]
            for name, files in stale:
                sources = ", ".join(sql_string(f) for f in files)
                try:
                    conn.exec_driver_sql(
                        f"CREATE OR REPLACE VIEW {_quote(conn, name)} AS "
                        f"SELECT * FROM read_parquet([{sources}])"
                    )
                    conn.commit()
                except sa.exc.DBAPIError as exc:
                    if not _files_gone(exc):
                        raise
                    # That build was dropped or replaced, and its files swept, since this
                    # process last read it: forget its view, so that it fails no query of
                    # another collection. A query of its own collection reads the
                    # manifest again (see _in_session).
                    conn.rollback()
                    if self._views.get(name) == files:
                        self._views.pop(name, None)
                    views.pop(name, None)
                    if name == getattr(self._held, "needed", None):
                        raise
                    continue
                views[name] = files
            yield conn

    def dispose(self) -> None:
        """Close pooled connections (DuckDB keeps its file open until then)."""
        self.engine.dispose()
        if self.rows_engine is not self.engine:
            self.rows_engine.dispose()

    # -- catalog

    def _ensure_catalog(self) -> None:
        if self._catalog_ready:
            return
        try:
            with self.engine.begin() as conn:
                self.catalog.create(conn, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between our check and our CREATE.
            if not sa.inspect(self.engine).has_table(CATALOG_TABLE):
                raise
        # Columns a catalog written by an older DSS lacks: the attribute ranges, and how
        # missing values are stored (its rows stay NULL there: they hold -999).
        for name, sql_type in (("ranges", "TEXT"), ("missing", "VARCHAR(16)")):
            present = {c["name"] for c in sa.inspect(self.engine).get_columns(CATALOG_TABLE)}
            if name in present:
                continue
            try:
                with self.engine.begin() as conn:
                    _ddl(conn, f"ALTER TABLE {{}} ADD COLUMN {{}} {sql_type}", CATALOG_TABLE, name)
            except sa.exc.DBAPIError:
                columns = sa.inspect(self.engine).get_columns(CATALOG_TABLE)
                if name not in {c["name"] for c in columns}:
                    raise  # not another process adding it at the same moment
        self._catalog_ready = True

    @staticmethod
    def _info(row: Any) -> CollectionInfo:
        return CollectionInfo(
            key=row.key,
            table=row.table_name,
            schema_name=row.schema_name,
            schema_version=row.schema_version,
            attributes=dict(json.loads(row.attributes)),
            numbering=tuple(n for n in row.numbering.split(",") if n),
            indexed=tuple(json.loads(row.indexed)),
            n_events=row.n_events,
            n_files=row.n_files,
            built_at=row.built_at,
            ranges={k: tuple(v) for k, v in json.loads(row.ranges or "{}").items()},
            missing_is_null=row.missing == MISSING_IS_NULL,
        )

    def collection(self, key: str) -> CollectionInfo:
        """The catalog entry of collection ``key``; NotFound if it was never published.

        A Parquet store reads it from the collection's manifest, so that it always goes
        with the files a query reads."""
        table_name(key)
        if self.parquet is not None:
            return self._manifest_info(self._manifest(key))
        self._ensure_catalog()
        with self._reading() as conn:
            row = conn.execute(sa.select(self.catalog).where(self.catalog.c.key == key)).first()
        if row is None:
            raise NotFound(f"TAG collection {key!r} does not exist", where=key)
        return self._info(row)

    def _manifest(self, key: str) -> Manifest:
        assert self.parquet is not None
        manifest = self.parquet.manifest(key)
        if manifest is None:
            raise NotFound(f"TAG collection {key!r} does not exist", where=key)
        return manifest

    def _manifest_info(self, manifest: Manifest) -> CollectionInfo:
        row = dict(manifest.info)
        if row["built_at"]:
            row["built_at"] = datetime.fromisoformat(row["built_at"])
        return self._info(SimpleNamespace(**row))

    def collections(self) -> list[CollectionInfo]:
        """Every published collection, by key."""
        self._ensure_catalog()
        with self._reading() as conn:
            rows = conn.execute(sa.select(self.catalog).order_by(self.catalog.c.key)).all()
        return [self._info(r) for r in rows]

    def attribute_types(self, key: str) -> dict[str, str]:
        """Names a selection on ``key`` may use (attributes and run/lumi/event numbers)."""
        return self.collection(key).attribute_types()

    # -- good-run lists

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A transaction on the session's connection when one is held (so that its later
        reads see what was written: a DuckDB session reads a snapshot), else its own."""
        held = getattr(self._held, "conn", None)
        if held is None:
            with self.engine.begin() as conn:
                yield conn
            return
        if held.in_transaction():
            held.commit()
        try:
            yield held
        except BaseException:
            held.rollback()
            raise
        held.commit()

    def _ensure_good_run_tables(self) -> None:
        if self._grl_ready:
            return
        try:
            with self.engine.begin() as conn:
                self.grl_lists.create(conn, checkfirst=True)
                self.grl_ranges.create(conn, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created them between our check and our CREATE.
            inspector = sa.inspect(self.engine)
            if not (inspector.has_table(GRL_LISTS_TABLE) and inspector.has_table(GRL_RANGES_TABLE)):
                raise
        self._grl_ready = True

    def store_good_runs(self, grl: GoodRunList) -> str:
        """Make ``grl``'s ranges available to queries; returns its id (its fingerprint).

        A list already stored is only marked as used. Lists nobody used for
        :data:`GRL_KEEP` are removed when a new one is stored."""
        fingerprint = grl.fingerprint
        seen = self._grl_seen.get(fingerprint)
        if seen is not None and time.monotonic() - seen < GRL_RECHECK_S:
            return fingerprint
        self._ensure_good_run_tables()
        lists = self.grl_lists
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        with self._writing() as conn:
            conn.execute(sa.update(lists).where(lists.c.grl == fingerprint).values(used_at=now))
            present = conn.execute(sa.select(lists.c.grl).where(lists.c.grl == fingerprint)).first()
        if present is None:
            try:
                with self._writing() as conn:
                    self._insert_good_runs(conn, grl, now)
            except sa.exc.DBAPIError:
                # Another process stored the same list at the same moment: fine if it is
                # there now.
                with self._reading() as conn:
                    if (
                        conn.execute(
                            sa.select(lists.c.grl).where(lists.c.grl == fingerprint)
                        ).first()
                        is None
                    ):
                        raise
            self._forget_unused_good_runs(now)
        self._grl_seen[fingerprint] = time.monotonic()
        return fingerprint

    def _insert_good_runs(self, conn: sa.Connection, grl: GoodRunList, now: datetime) -> None:
        runs, firsts, lasts = grl.rows()
        fingerprint = grl.fingerprint
        if self.engine.dialect.name == "duckdb":
            # DuckDB appends an Arrow table in one statement; row inserts are slow there.
            batch = pa.table(
                {
                    "grl": pa.array([fingerprint] * len(runs), pa.string()),
                    "run": pa.array(runs),
                    "lumi_lo": pa.array(firsts),
                    "lumi_hi": pa.array(lasts),
                }
            )
            duck = conn.connection.driver_connection
            view = f"dss_grl_{secrets.token_hex(4)}"
            duck.register(view, batch)
            try:
                names = ["grl", "run", "lumi_lo", "lumi_hi"]
                source = sa.select(*(sa.column(n) for n in names)).select_from(sa.table(view))
                conn.execute(sa.insert(self.grl_ranges).from_select(names, source))
            finally:
                duck.unregister(view)
        else:
            rows = [
                {"grl": fingerprint, "run": r, "lumi_lo": lo, "lumi_hi": hi}
                for r, lo, hi in zip(runs.tolist(), firsts.tolist(), lasts.tolist(), strict=True)
            ]
            for start in range(0, len(rows), _GRL_BATCH):
                conn.execute(sa.insert(self.grl_ranges), rows[start : start + _GRL_BATCH])
        # The list's row comes last: a list is listed only once all its ranges are in.
        conn.execute(
            sa.insert(self.grl_lists),
            [{"grl": fingerprint, "n_ranges": len(runs), "stored_at": now, "used_at": now}],
        )

    def _forget_unused_good_runs(self, now: datetime) -> None:
        lists, ranges = self.grl_lists, self.grl_ranges
        stale = sa.select(lists.c.grl).where(lists.c.used_at < now - GRL_KEEP)
        with self._reading() as conn:
            old = conn.execute(stale).scalars().all()
        if not old:
            return
        with self._writing() as conn:
            conn.execute(sa.delete(lists).where(lists.c.grl.in_(old)))
            conn.execute(sa.delete(ranges).where(ranges.c.grl.in_(old)))
        for fingerprint in old:
            self._grl_seen.pop(fingerprint, None)

    def _good_runs_condition(
        self, info: CollectionInfo, table: sa.Table, grl: GoodRunList | None
    ) -> sa.ColumnElement[bool] | None:
        """The condition keeping the rows of ``table`` inside ``grl``: an EXISTS over the
        list's stored ranges, on run and luminosity block (on run alone for a collection
        without luminosity blocks). None without a list."""
        if grl is None:
            return None
        if "run" not in info.numbering:
            raise InvalidInput(
                f"TAG collection {info.key!r} has no run numbers, so a good-run list cannot "
                "select from it",
                where=GRL_WHERE,
            )
        fingerprint = self.store_good_runs(grl)
        g = self._good_run_ranges(grl).alias("good_runs")
        conditions = [g.c.grl == fingerprint, g.c.run == table.c.run]
        if "lumi" in info.numbering:
            conditions += [g.c.lumi_lo <= table.c.lumi, g.c.lumi_hi >= table.c.lumi]
        return sa.exists().where(*conditions)

    def _good_run_ranges(self, grl: GoodRunList) -> sa.Table:
        """The table of stored good-run ranges queries join: the catalog's, or for a
        Parquet store a table of ``grl``'s ranges in this thread's DuckDB, made once."""
        if self.parquet is None:
            return self.grl_ranges
        name = f"dss_grl_{grl.fingerprint}"
        with self.rows_engine.connect() as conn:
            made = conn.connection.info.setdefault("dss_grl", set())
            if name not in made:
                runs, firsts, lasts = grl.rows()
                batch = pa.table(
                    {
                        "grl": pa.array([grl.fingerprint] * len(runs), pa.string()),
                        "run": pa.array(runs, pa.uint64()),
                        "lumi_lo": pa.array(firsts, pa.int64()),
                        "lumi_hi": pa.array(lasts, pa.int64()),
                    }
                )
                duck = conn.connection.driver_connection
                duck.register("dss_grl_batch", batch)
                try:
                    conn.exec_driver_sql(
                        f"CREATE OR REPLACE TABLE {_quote(conn, name)} AS "
                        "SELECT * FROM dss_grl_batch"
                    )
                finally:
                    duck.unregister("dss_grl_batch")
                conn.commit()
                made.add(name)
        return sa.Table(
            name,
            sa.MetaData(),
            sa.Column("grl", sa.String),
            sa.Column("run", UInt64()),
            sa.Column("lumi_lo", sa.BigInteger),
            sa.Column("lumi_hi", sa.BigInteger),
        )

    @_in_session
    def missing_runs(self, key: str, grl: GoodRunList) -> list[int]:
        """The runs of ``grl`` that collection ``key`` has no event of, in order."""
        info, table, _ = self._bound(key)
        self._good_runs_condition(info, table, grl)  # checks the numbering, stores the list
        g = self._good_run_ranges(grl)
        stmt = (
            sa.select(g.c.run)
            .where(
                g.c.grl == grl.fingerprint,
                ~sa.exists().where(table.c.run == g.c.run),
            )
            .group_by(g.c.run)
            .order_by(g.c.run)
        )
        with self._scanning() as conn:
            return [int(run) for run in conn.execute(stmt).scalars()]

    # -- building

    def begin_build(self, key: str, schema: Schema, token: str | None = None) -> TagBuilder:
        """Start (re)building collection ``key`` with ``schema`` in a staging table named
        with ``token`` (random unless given: a build attempt passes its lease's)."""
        table_name(key)
        self._ensure_catalog()
        return TagBuilder(self, key, schema, token)

    def discard_build(self, key: str, token: str) -> bool:
        """Drop what a build of ``key`` with ``token`` left (its staging table and sorted
        copies, or its Parquet files), e.g. after its worker died. True if there was
        something."""
        staging = staging_name(key, token)
        if self.parquet is not None:
            return self.parquet.discard(key, token)
        with self.engine.begin() as conn:
            found = sa.inspect(conn).has_table(staging)
            if found:
                _ddl(conn, "DROP TABLE {}", staging)
            copies = _sorted_copies(conn, staging)
            for copy in copies:
                _ddl(conn, "DROP TABLE {}", copy)
        return found or bool(copies)

    def staging_tables(self) -> list[str]:
        """Every staging table in the TAG DB (builds under way, or left by dead ones); for
        a Parquet store, the names of its unpublished builds."""
        if self.parquet is not None:
            return [staging_name(k, t) for k, t in self.parquet.unpublished_builds()]
        with self._reading() as conn:
            names = sa.inspect(conn).get_table_names()
        return sorted(n for n in names if re.fullmatch(r"tag_[a-z0-9_]+__[a-z0-9]+", n))

    def _swap_in(self, staging: str, info: CollectionInfo) -> None:
        final = info.table
        row = _catalog_row(info)
        if self.parquet is not None:
            # The manifest is what queries read: it is replaced first, in one step; the
            # catalog row follows for listings.
            token = staging.rpartition("__")[2]
            files = [str(self.parquet.build_dir(info.key, token) / "data.parquet")]
            written = dict(row, built_at=info.built_at.isoformat() if info.built_at else None)
            self.parquet.publish(info.key, token, files, written)
            with self.engine.begin() as conn:
                conn.execute(sa.delete(self.catalog).where(self.catalog.c.key == info.key))
                conn.execute(sa.insert(self.catalog), [row])
            return
        if self.dialect == "mysql":
            # MySQL commits around DDL; one multi-table RENAME swaps atomically instead.
            with self.engine.begin() as conn:
                exists = sa.inspect(conn).has_table(final)
                if exists:
                    retired = f"{staging}_old"
                    _ddl(conn, "RENAME TABLE {} TO {}, {} TO {}", final, retired, staging, final)
                    _ddl(conn, "DROP TABLE {}", retired)
                else:
                    _ddl(conn, "RENAME TABLE {} TO {}", staging, final)
            with self.engine.begin() as conn:
                conn.execute(sa.delete(self.catalog).where(self.catalog.c.key == info.key))
                conn.execute(sa.insert(self.catalog), [row])
            return
        with self.engine.begin() as conn:
            if sa.inspect(conn).has_table(final):
                _ddl(conn, "DROP TABLE {}", final)
            for copy in _sorted_copies(conn, final):
                _ddl(conn, "DROP TABLE {}", copy)
            _ddl(conn, "ALTER TABLE {} RENAME TO {}", staging, final)
            if self.dialect == "duckdb":
                for i in range(len(info.indexed)):
                    _ddl(
                        conn,
                        "ALTER TABLE {} RENAME TO {}",
                        sorted_copy_name(staging, i),
                        sorted_copy_name(final, i),
                    )
            conn.execute(sa.delete(self.catalog).where(self.catalog.c.key == info.key))
            conn.execute(sa.insert(self.catalog), [row])

    def drop(self, key: str) -> bool:
        """Remove collection ``key`` (table and catalog entry). True if it existed."""
        final = table_name(key)
        self._ensure_catalog()
        if self.parquet is not None:
            published = self.parquet.unpublish(key)
            for name in [n for n in self._views if n.startswith(f"tag_{key}__")]:
                self._views.pop(name, None)
            with self.engine.begin() as conn:
                conn.execute(sa.delete(self.catalog).where(self.catalog.c.key == key))
            return published
        with self.engine.begin() as conn:
            # Not DELETE's rowcount: DuckDB does not report one.
            listed = conn.execute(
                sa.select(self.catalog.c.key).where(self.catalog.c.key == key)
            ).first()
            conn.execute(sa.delete(self.catalog).where(self.catalog.c.key == key))
            exists = sa.inspect(conn).has_table(final)
            if exists:
                _ddl(conn, "DROP TABLE {}", final)
            for copy in _sorted_copies(conn, final):
                _ddl(conn, "DROP TABLE {}", copy)
        return listed is not None or exists

    # -- queries

    def _bound(self, key: str) -> tuple[CollectionInfo, sa.Table | sa.Subquery, dict[str, str]]:
        manifest = None
        if self.parquet is not None:
            # One read of the manifest gives the catalog entry and the files together.
            manifest = self._manifest(key)
            info = self._manifest_info(manifest)
        else:
            info = self.collection(key)
        # The catalog is read on every query, so a rebuild by another process is seen at
        # once; the Table objects are reused while the catalog entry stays the same,
        # which also lets SQLAlchemy reuse its compiled statements.
        cached = self._tables.get(key)
        if cached is None or cached[0] != info:
            table: sa.Table | sa.Subquery
            table = tag_table(info.table, info.attributes, dialect=self.dialect)
            if not info.missing_is_null:
                table = legacy_view(table, info.attributes)
            copies: dict[str, sa.Table | sa.Subquery] = {}
            if self.dialect == "duckdb" and self.parquet is None:
                types = info.attribute_types()
                with self._reading() as conn:
                    present = set(_sorted_copies(conn, info.table))
                for i, name in enumerate(info.indexed):
                    copy = sorted_copy_name(info.table, i)
                    if copy in present:
                        column = sa.Column(name, _SA_TYPES[types[name]]())
                        copies[name] = sa.Table(copy, sa.MetaData(), column)
                        if not info.missing_is_null:
                            copies[name] = legacy_view(copies[name], {name: types[name]})
            cached = (info, table, copies)
            self._tables[key] = cached
        if manifest is not None:
            for old in [n for n in self._views if n.startswith(f"tag_{key}__")]:
                if old != info.table:
                    self._views.pop(old, None)
            self._views[info.table] = manifest.files
            self._held.needed = info.table  # the view this thread's query reads
        return info, cached[1], info.attribute_types()

    def _source(
        self,
        key: str,
        tree: Node | None,
        attr: str | None = None,
        good_runs: GoodRunList | None = None,
    ) -> tuple[CollectionInfo, sa.Table | sa.Subquery, dict[str, str]]:
        """Like :meth:`_bound`, but where the selection (and the histogrammed ``attr``)
        names a single attribute that has a sorted copy, and no good-run list needs the
        run and luminosity block, that copy and its one type."""
        info, table, types = self._bound(key)
        copies = self._tables[key][2]
        if copies and tree is not None and good_runs is None:
            names = names_in(tree) | ({attr} if attr else set())
            if len(names) == 1:
                (name,) = names
                if name in copies:
                    return info, copies[name], {name: types[name]}
        return info, table, types

    def _scalar(self, stmt: sa.Executable) -> Any:
        with self._scanning() as conn:
            return conn.execute(stmt).scalar()

    @_in_session
    def count(
        self, key: str, tree: Node | None = None, good_runs: GoodRunList | None = None
    ) -> int:
        """How many events of ``key`` pass ``tree`` (all events for None), within the
        good-run list ``good_runs`` when one is given."""
        info, table, types = self._source(key, tree, good_runs=good_runs)
        also = self._good_runs_condition(info, table, good_runs)
        return int(self._scalar(select_count(table, types, tree, also)))

    @_in_session
    def histogram(
        self,
        key: str,
        attr: str,
        tree: Node | None = None,
        bins: int = 50,
        lo: float | None = None,
        hi: float | None = None,
        good_runs: GoodRunList | None = None,
    ) -> Histogram:
        """Histogram of ``attr`` over the events passing ``tree`` (within ``good_runs``
        when given), binned in the database.

        Passing events where ``attr`` is missing are counted in ``missing``, apart from
        the bins and the under- and overflow. With ``lo`` and ``hi``: ``bins`` equal bins
        between them, in one scan. Without them the range covers the passing events'
        values: one scan counts them on a fine grid over the
        collection's range of ``attr`` (:data:`GRID_CELLS` cells) and the cells are
        merged into ``bins`` bins of whole cells, starting at the lowest passing cell
        and ending less than one bin past the highest. Where the passing events span too
        few cells for that, a second scan bins them exactly between their lowest and
        highest cell. Integer and boolean attributes with few distinct values get one
        bin per integer.
        """
        info, table, types = self._source(key, tree, attr, good_runs)
        if attr not in types:
            raise InvalidInput(
                f"unknown attribute '{attr}'{suggest(attr, sorted(types))}", where="attribute"
            )
        if not isinstance(bins, int) or not 1 <= bins <= 10_000:
            raise InvalidInput("bins must be a whole number from 1 to 10000", where="bins")
        type_ = types[attr]
        also = self._good_runs_condition(info, table, good_runs)
        with self._scanning() as conn:
            if lo is None or hi is None:
                found: tuple[Any, Any] | None = None
                grid = None
                if lo is None and hi is None and type_ != BOOL:
                    grid = _grid(type_, *self._collection_range(info, key, attr))
                if grid is not None:
                    stmt = select_cells(
                        table,
                        types,
                        attr,
                        tree,
                        grid.origin,
                        grid.width,
                        guard_nulls=self.dialect == "sqlite",
                        also=also,
                    )
                    merged = _merge_cells(attr, conn.execute(stmt).all(), grid, bins)
                    if isinstance(merged, Histogram):
                        return merged
                    found = merged
                if found is None:
                    found = conn.execute(select_range(table, types, attr, tree, also)).one()
                found_lo, found_hi = found
                if found_lo is None:
                    found_lo, found_hi = 0.0, 1.0
                lo = found_lo if lo is None else lo
                hi = found_hi if hi is None else hi
                if type_ == BOOL:
                    lo, hi = 0, 1  # always both bins, false and true
                if type_ in (INT, BOOL) and hi - lo + 1 <= bins:
                    # One bin per integer value, centred on it.
                    bins = int(hi - lo + 1)
                    lo, hi = lo - 0.5, hi + 0.5
            lo, hi = float(lo), float(hi)
            if hi < lo:
                raise InvalidInput(f"histogram range {lo}..{hi} is empty", where="range")
            if hi == lo:
                lo, hi = lo - 0.5, hi + 0.5
            full_lo, full_hi = self._collection_range(info, key, attr)
            bounded = (
                type_ != BOOL
                and full_lo is not None
                and (float(full_hi) - float(full_lo)) * bins / (hi - lo) <= 4 * GRID_CELLS
            )
            stmt = select_histogram(
                table,
                types,
                attr,
                tree,
                bins,
                lo,
                hi,
                bounded=bounded,
                guard_nulls=self.dialect == "sqlite",
                also=also,
            )
            rows = conn.execute(stmt).all()
        counts = np.zeros(bins, dtype=np.int64)
        underflow = overflow = missing = 0
        for code, n in rows:
            if code is None:
                missing += n
                continue
            code = int(code)
            if code < 0:
                underflow += n
            elif code > bins:
                overflow += n
            else:
                counts[min(code, bins - 1)] += n  # a code of bins is hi itself
        return Histogram(
            attribute=attr,
            edges=np.linspace(lo, hi, bins + 1),
            counts=counts,
            underflow=underflow,
            overflow=overflow,
            missing=missing,
        )

    def _collection_range(self, info: CollectionInfo, key: str, attr: str) -> tuple[Any, Any]:
        ranges = info.ranges or self.attribute_ranges(key)
        return ranges.get(attr, (None, None))

    @_in_session
    def events(
        self,
        key: str,
        tree: Node | None = None,
        limit: int = 100,
        offset: int = 0,
        attributes: Sequence[str] = (),
        good_runs: GoodRunList | None = None,
    ) -> list[EventRef]:
        """A page of the passing events, in load order (file by file, entry by entry),
        with the values of ``attributes`` in ``.values`` (None where one is missing)."""
        info, table, types = self._bound(key)
        for name in attributes:
            if name not in types:
                raise InvalidInput(
                    f"unknown attribute '{name}'{suggest(name, sorted(types))}", where="attributes"
                )
        names = list(dict.fromkeys(attributes))
        also = self._good_runs_condition(info, table, good_runs)
        stmt = (
            sa.select(
                table.c.file_guid,
                table.c.entry,
                table.c.run,
                table.c.event,
                *(table.c[name].label(f"v{i}") for i, name in enumerate(names)),
            )
            .where(where_clause(table, types, tree, also))
            .order_by(table.c.id)
            .limit(int(limit))
            .offset(int(offset))
        )
        with self._scanning() as conn:
            return [
                EventRef(*row[:4], values=dict(zip(names, row[4:], strict=True)))
                for row in conn.execute(stmt)
            ]

    @_in_session
    def lumiblocks(
        self, key: str, tree: Node | None = None, good_runs: GoodRunList | None = None
    ) -> list[tuple[int | None, int | None, int]]:
        """(run, lumiblock, events) for each pair that the events of ``key`` passing ``tree``
        (within ``good_runs``) fall in: one grouped query. Events without a run or block
        number come as (None, …) rows. InvalidInput for a collection without both numbers."""
        info, table, types = self._bound(key)
        if "run" not in info.numbering or "lumi" not in info.numbering:
            raise InvalidInput(
                f"this collection has no luminosity-block numbers ({key}): its TAG schema "
                "names no run and lumi branches, so no luminosity can be computed",
                where="lumi_gt",
            )
        also = self._good_runs_condition(info, table, good_runs)
        stmt = sa.select(table.c.run, table.c.lumi, sa.func.count()).select_from(table)
        if tree is not None or also is not None:
            stmt = stmt.where(where_clause(table, types, tree, also))
        stmt = stmt.group_by(table.c.run, table.c.lumi)
        with self._scanning() as conn:
            return [(run, lb, int(n)) for run, lb, n in conn.execute(stmt).all()]

    @_in_session
    def count_missing(
        self,
        key: str,
        attr: str,
        tree: Node | None = None,
        good_runs: GoodRunList | None = None,
    ) -> int:
        """How many events passing ``tree`` (within ``good_runs``) have no value of ``attr``."""
        info, table, types = self._source(key, tree, attr, good_runs=good_runs)
        if attr not in types:
            raise InvalidInput(
                f"unknown attribute '{attr}'{suggest(attr, sorted(types))}", where="attribute"
            )
        also = self._good_runs_condition(info, table, good_runs)
        stmt = select_count(table, types, tree, also).where(table.c[attr].is_(None))
        return int(self._scalar(stmt))

    @_in_session
    def top(
        self,
        key: str,
        tree: Node | None,
        attr: str,
        n: int = 10,
        good_runs: GoodRunList | None = None,
    ) -> list[EventRef]:
        """The ``n`` passing events with the largest ``attr`` (its value in ``.value``);
        events where ``attr`` is missing are not among them (see :meth:`count_missing`)."""
        info, table, types = self._bound(key)
        if attr not in types:
            raise InvalidInput(
                f"unknown attribute '{attr}'{suggest(attr, sorted(types))}", where="attribute"
            )
        also = self._good_runs_condition(info, table, good_runs)
        col = table.c[attr]
        stmt = (
            sa.select(table.c.file_guid, table.c.entry, table.c.run, table.c.event, col)
            .where(where_clause(table, types, tree, also), col.is_not(None))
            .order_by(sort_key(col).desc(), table.c.id)
            .limit(int(n))
        )
        with self._scanning() as conn:
            return [EventRef(*row) for row in conn.execute(stmt)]

    @_in_session
    def files_touched(
        self, key: str, tree: Node | None = None, good_runs: GoodRunList | None = None
    ) -> tuple[int, int]:
        """(files with at least one passing event, files in the collection)."""
        info, table, types = self._bound(key)
        also = self._good_runs_condition(info, table, good_runs)
        stmt = sa.select(sa.func.count(sa.distinct(table.c.file_guid))).where(
            where_clause(table, types, tree, also)
        )
        return int(self._scalar(stmt)), info.n_files

    @_in_session
    def entries_by_file(
        self, key: str, tree: Node | None = None, good_runs: GoodRunList | None = None
    ) -> dict[str, np.ndarray]:
        """For each file with passing events (within ``good_runs`` when given), their
        entry numbers (sorted int64 array): exactly what a skim of this selection has to
        read."""
        info, table, types = self._bound(key)
        also = self._good_runs_condition(info, table, good_runs)
        stmt = (
            sa.select(table.c.file_guid, table.c.entry)
            .where(where_clause(table, types, tree, also))
            .order_by(table.c.file_guid, table.c.entry)
        )
        with self._scanning() as conn:
            result = conn.execute(stmt)
            if hasattr(result.cursor, "fetchnumpy"):
                # DuckDB hands over whole columns: no Python object per row (10x faster).
                columns = result.cursor.fetchnumpy()
                guid_array = np.asarray(columns["file_guid"], dtype=object)
                entry_array = np.asarray(columns["entry"], dtype=np.int64)
            else:
                rows = result.all()
                guid_array = np.fromiter((r[0] for r in rows), dtype=object, count=len(rows))
                entry_array = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        if len(entry_array) == 0:
            return {}
        starts = np.flatnonzero(np.r_[True, guid_array[1:] != guid_array[:-1]])
        stops = np.r_[starts[1:], len(guid_array)]
        return {
            str(guid_array[a]).strip(): entry_array[a:b] for a, b in zip(starts, stops, strict=True)
        }

    @_in_session
    def pick_events(self, keys: Sequence[str], pairs: Iterable[Sequence[int]]) -> PickResult:
        """Find events by (run, event) number in the collections ``keys``."""
        wanted: list[tuple[int, int]] = []
        for pair in pairs:
            try:
                run, event = (int(v) for v in pair)
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"{pair!r} is not a (run, event) pair of whole numbers", where="events"
                ) from None
            check_unsigned(run, "run", "events")
            wanted.append((run, check_unsigned(event, "event", "events")))
        wanted = list(dict.fromkeys(wanted))
        found: list[PickedEvent] = []
        for key in keys:
            info, table, _ = self._bound(key)
            if not {"run", "event"} <= set(info.numbering):
                raise InvalidInput(
                    f"TAG collection {key!r} has no run and event numbers to pick events by",
                    where=key,
                )
            pair_col = sa.tuple_(table.c.run, table.c.event)
            with self._scanning() as conn:
                for start in range(0, len(wanted), _PICK_BATCH):
                    chunk = wanted[start : start + _PICK_BATCH]
                    stmt = (
                        sa.select(table.c.run, table.c.event, table.c.file_guid, table.c.entry)
                        .where(pair_col.in_(chunk))
                        .order_by(table.c.id)
                    )
                    found.extend(
                        PickedEvent(key, int(r), int(e), str(g).strip(), int(n))
                        for r, e, g, n in conn.execute(stmt)
                    )
        hits = Counter((p.run, p.event) for p in found)
        return PickResult(
            found=found,
            missing=[p for p in wanted if hits[p] == 0],
            duplicates=[p for p in wanted if hits[p] > 1],
        )

    @_in_session
    def attribute_ranges(self, key: str) -> dict[str, tuple[Any, Any]]:
        """(min, max) of every attribute and run/lumi/event number, ignoring missing
        values; (None, None) where no event has one. Measured when the
        collection was published (for an older collection: now, once, and recorded)."""
        info, table, types = self._bound(key)
        if info.ranges:
            return dict(info.ranges)
        with self._scanning() as conn:
            ranges = _ranges_from_row(conn.execute(select_ranges(table, types)).one(), types)
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.catalog)
                .where(self.catalog.c.key == key, self.catalog.c.table_name == info.table)
                .values(ranges=json.dumps(ranges))
            )
        return ranges


@lru_cache(maxsize=8)
def open_store(url: str) -> TagStore:
    """A shared TagStore per URL, so that a process keeps one connection pool."""
    return TagStore(url)
