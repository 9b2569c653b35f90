"""TAG schemas: which attributes a TAG row holds and how each is computed from an event tree.

A schema is YAML::

    name: hzz
    version: 1
    tree: events
    run: Run            # optional branches with the run, event and lumi-block numbers
    event: Event
    lumi: LumiBlock
    attributes:
      - name: n_muon
        type: int                       # int | float | bool
        expression: count(Muon_Px)      # over the tree's branches
        description: Number of muons
        unit: ""
        index: true                     # ask the TAG store for an index on it

Attribute expressions use the selection language's parser (``tagdb.selection.parse``)
with branch names instead of attribute names and this function library, evaluated
column-wise with awkward arrays (one call per node for the whole chunk of events):

==========================  =============================================================
``count(x)``                elements per event; of a condition, how many are true
``sum(x)``, ``any(x)``,     per-event sum / any true / all true of a list
``all(x)``
``max(x)``, ``min(x)``      per-event largest / smallest (missing for an empty list);
                            with two or more arguments, element-wise
``lead(x)``, ``sublead(x)`` largest / second-largest value in the event
``lead(x, by)``,            ``x`` of the object with the largest / second-largest ``by``
``sublead(x, by)``          (e.g. ``lead(eta(Muon_Px, Muon_Py, Muon_Pz), pt(Muon_Px, Muon_Py))``)
``pt(px, py)``              transverse momentum
``eta(px, py, pz)``         pseudorapidity
``phi(px, py)``             azimuth
``mass(E, px, py, pz)``     invariant mass of each object
``pair_mass(E, px, py, pz)`` invariant mass of the two highest-pt objects of the event
``abs``, ``sqrt``,          as in selections
``hypot``
==========================  =============================================================

Missing values: ``lead``, ``sublead``, per-event ``max``/``min`` and ``pair_mass`` have no
value when the event has too few objects (None in awkward), and results that are not
finite (``eta`` of an object along the beam, a division by zero) have none either.
:func:`compute_tags` returns every attribute as a numpy masked array whose mask marks
them, whatever the attribute's type; the TAG store keeps them as NULL. Conditions in
expressions follow the selection language's three-valued logic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import yaml

from dmu.eventfiles import EventTree, as_event_tree, open_event_file
from dss.errors import BadEventFile, InvalidInput
from tagdb.numbering import numbering_array
from tagdb.selection import (
    BOOL,
    FLOAT,
    INT,
    KEYWORDS,
    ArrayEvaluator,
    Call,
    Node,
    SelectionError,
    check_arity,
    names_in,
    parse,
    suggest,
    walk,
)

# Columns every TAG row has; attributes may not take these names.
RESERVED = frozenset({"id", "file_guid", "entry", "run", "lumi", "event"})
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,59}")
_BRANCH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEMA_KEYS = {"name", "version", "tree", "run", "event", "lumi", "description", "attributes"}
_ATTRIBUTE_KEYS = {"name", "type", "expression", "description", "unit", "index"}

SCHEMA_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "count": (1, 1),
    "sum": (1, 1),
    "any": (1, 1),
    "all": (1, 1),
    "max": (1, None),
    "min": (1, None),
    "lead": (1, 2),
    "sublead": (1, 2),
    "pt": (2, 2),
    "eta": (3, 3),
    "phi": (2, 2),
    "mass": (4, 4),
    "pair_mass": (4, 4),
    "abs": (1, 1),
    "sqrt": (1, 1),
    "hypot": (2, 2),
}


class SchemaError(InvalidInput):
    """A TAG schema is malformed, or does not fit the tree it is applied to."""

    code = "bad_schema"


@dataclass(frozen=True)
class Attribute:
    """One TAG attribute: its name, type, and the expression that computes it."""

    name: str
    type: str
    expression: str
    description: str = ""
    unit: str = ""
    index: bool = False
    tree: Node = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def branches(self) -> set[str]:
        """The branches the expression reads."""
        return names_in(self.tree)


@dataclass(frozen=True)
class Schema:
    """A named, versioned list of attributes over one tree."""

    name: str
    version: int
    tree: str
    attributes: tuple[Attribute, ...]
    run: str | None = None
    event: str | None = None
    lumi: str | None = None
    description: str = ""

    def branches(self) -> list[str]:
        """Every branch that computing this schema reads, sorted."""
        needed: set[str] = set()
        for attribute in self.attributes:
            needed |= attribute.branches()
        needed |= {b for b in (self.run, self.event, self.lumi) if b}
        return sorted(needed)

    def attribute(self, name: str) -> Attribute:
        """The attribute called ``name``; KeyError if there is none."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(name)

    def numbering(self) -> dict[str, str]:
        """Which of run/event/lumi this schema provides, mapped to their branches."""
        pairs = (("run", self.run), ("event", self.event), ("lumi", self.lumi))
        return {column: branch for column, branch in pairs if branch}

    def attribute_types(self) -> dict[str, str]:
        """Names a selection may use on a collection of this schema, with their types."""
        types = dict.fromkeys(self.numbering(), INT)
        types.update({a.name: a.type for a in self.attributes})
        return types

    def to_dict(self) -> dict[str, Any]:
        """The schema as plain data; ``load_schema(yaml.safe_dump(s.to_dict()))`` gives it back."""
        data: dict[str, Any] = {"name": self.name, "version": self.version, "tree": self.tree}
        data.update(self.numbering())
        if self.description:
            data["description"] = self.description
        data["attributes"] = [
            {
                "name": a.name,
                "type": a.type,
                "expression": a.expression,
                "description": a.description,
                "unit": a.unit,
                **({"index": True} if a.index else {}),
            }
            for a in self.attributes
        ]
        return data


# --------------------------------------------------------------------------- loading


def _attribute_error(name: str, exc: SelectionError) -> SchemaError:
    return SchemaError(
        f"attribute '{name}': {exc.message}", where=f"attribute {name}, column {exc.column}"
    )


def _parse_expression(name: str, expression: str) -> Node:
    try:
        tree = parse(expression)
        for node in walk(tree):
            if isinstance(node, Call):
                check_arity(node, SCHEMA_FUNCTIONS)
    except SelectionError as exc:
        raise _attribute_error(name, exc) from None
    return tree


def _text(data: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise SchemaError(f"{where}: '{key}' must be text", where=where)
    return value


def _attribute(data: Any, position: int, seen: set[str]) -> Attribute:
    where = f"attribute #{position}"
    if not isinstance(data, Mapping):
        raise SchemaError(f"{where} must be a mapping with name, type and expression", where=where)
    name = _text(data, "name", where)
    where = f"attribute {name}"
    if not _NAME_RE.fullmatch(name) or name in KEYWORDS:
        raise SchemaError(
            f"attribute name '{name}' must be lower-case letters, digits and '_', "
            "start with a letter, and not be a keyword",
            where=where,
        )
    if name in RESERVED:
        raise SchemaError(
            f"attribute name '{name}' is reserved for the TAG row itself; the run, event and "
            "lumi numbers are named by the schema's 'run', 'event' and 'lumi' keys",
            where=where,
        )
    if name in seen:
        raise SchemaError(f"attribute '{name}' is defined twice", where=where)
    unknown = sorted(set(data) - _ATTRIBUTE_KEYS)
    if unknown:
        raise SchemaError(
            f"attribute '{name}': unknown key '{unknown[0]}'"
            f"{suggest(str(unknown[0]), sorted(_ATTRIBUTE_KEYS))}",
            where=where,
        )
    type_ = data.get("type")
    if type_ not in (INT, FLOAT, BOOL):
        raise SchemaError(
            f"attribute '{name}': type must be int, float or bool, not {type_!r}", where=where
        )
    expression = data.get("expression")
    if isinstance(expression, bool):  # YAML reads a bare `true` as a boolean
        expression = str(expression).lower()
    elif isinstance(expression, int | float):
        expression = str(expression)
    if not isinstance(expression, str):
        raise SchemaError(f"attribute '{name}': 'expression' must be text", where=where)
    index = data.get("index", False)
    if not isinstance(index, bool):
        raise SchemaError(f"attribute '{name}': 'index' must be true or false", where=where)
    return Attribute(
        name=name,
        type=type_,
        expression=expression,
        description=_text(data, "description", where, required=False),
        unit=_text(data, "unit", where, required=False),
        index=index,
        tree=_parse_expression(name, expression),
    )


def schema_from_dict(data: Any) -> Schema:
    """Validate plain data (as read from YAML) and build a :class:`Schema`."""
    if not isinstance(data, Mapping):
        raise SchemaError("a TAG schema must be a mapping with name, version, tree, attributes")
    unknown = sorted(set(data) - _SCHEMA_KEYS)
    if unknown:
        raise SchemaError(
            f"unknown schema key '{unknown[0]}'{suggest(str(unknown[0]), sorted(_SCHEMA_KEYS))}",
            where=str(unknown[0]),
        )
    name = _text(data, "name", "schema")
    if not _NAME_RE.fullmatch(name):
        raise SchemaError(f"schema name '{name}' must be lower-case letters, digits and '_'")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaError(f"schema '{name}': version must be a whole number >= 1", where="version")
    tree = _text(data, "tree", f"schema {name}")
    numbering = {}
    for key in ("run", "event", "lumi"):
        branch = data.get(key)
        if branch is not None and not (isinstance(branch, str) and _BRANCH_RE.fullmatch(branch)):
            raise SchemaError(f"schema '{name}': '{key}' must be a branch name", where=key)
        numbering[key] = branch
    attributes_data = data.get("attributes")
    if not isinstance(attributes_data, list) or not attributes_data:
        raise SchemaError(
            f"schema '{name}' needs a non-empty list of attributes", where="attributes"
        )
    attributes: list[Attribute] = []
    seen: set[str] = set()
    for position, item in enumerate(attributes_data, start=1):
        attribute = _attribute(item, position, seen)
        seen.add(attribute.name)
        attributes.append(attribute)
    return Schema(
        name=name,
        version=version,
        tree=tree,
        attributes=tuple(attributes),
        description=_text(data, "description", f"schema {name}", required=False),
        **numbering,
    )


def load_schema(path_or_text: str | Path | Mapping[str, Any]) -> Schema:
    """Load a schema from a YAML file, YAML text, or already-parsed data.

    A ``Path`` is a file; so is a one-line string ending in ``.yaml`` or ``.yml``. Any
    other string is YAML text.
    """
    if isinstance(path_or_text, Mapping):
        return schema_from_dict(path_or_text)
    if isinstance(path_or_text, Path) or (
        "\n" not in path_or_text and path_or_text.endswith((".yaml", ".yml"))
    ):
        path = Path(path_or_text)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read schema file: {exc.strerror}", where=str(path)) from None
    else:
        text = path_or_text
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SchemaError(f"schema is not valid YAML: {exc}", where=where) from None
    return schema_from_dict(data)


def builtin_schemas() -> dict[str, Schema]:
    """The schemas shipped with DSS (``tagdb/schemas/*.yaml``), by name."""
    found = {}
    folder = resources.files("tagdb") / "schemas"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            schema = load_schema(entry.read_text(encoding="utf-8"))
            found[schema.name] = schema
    return found


# --------------------------------------------------------------------------- evaluation


def _is_list(x: Any) -> bool:
    return isinstance(x, ak.Array) and x.ndim > 1


def _kind(x: Any) -> str:
    """'b', 'i', 'u' or 'f': the numpy kind of the values inside ``x``."""
    if isinstance(x, ak.Array):
        return ak.to_numpy(ak.ravel(x)[:0]).dtype.kind
    return np.asarray(x).dtype.kind


class _SchemaEvaluator(ArrayEvaluator):
    def __init__(self, arrays: ak.Array):
        super().__init__(lambda node: arrays[node.name], {})

    # Kleene's logic over awkward arrays, whose missing values are None.
    def fill(self, x: Any, value: bool) -> Any:
        return ak.fill_none(x, value) if isinstance(x, ak.Array) else super().fill(x, value)

    def known_where(self, values: Any, known: Any) -> Any:
        if isinstance(values, ak.Array) or isinstance(known, ak.Array):
            values, known = ak.broadcast_arrays(values, known)
            return ak.mask(values, known)
        return super().known_where(values, known)

    def divide(self, left: Any, right: Any) -> Any:
        return left / right  # NaN/inf here become NULL in the store, as documented

    def visit(self, node: Node) -> Any:
        if not isinstance(node, Call):
            return super().visit(node)
        args = [self.visit(a) for a in node.args]
        try:
            return getattr(self, f"fn_{node.function}")(*args)
        except _Misuse as exc:
            raise SelectionError(
                f"{node.function}() at column {node.column} {exc}", node.column
            ) from None

    @staticmethod
    def need_list(x: Any) -> None:
        if not _is_list(x):
            raise _Misuse("needs a branch with a list per event (like Muon_Px)")

    def fn_count(self, x: Any) -> Any:
        self.need_list(x)
        return ak.sum(x, axis=1) if _kind(x) == "b" else ak.num(x, axis=1)

    def fn_sum(self, x: Any) -> Any:
        self.need_list(x)
        return ak.sum(x, axis=1)

    def fn_any(self, x: Any) -> Any:
        self.need_list(x)
        return ak.any(x, axis=1)

    def fn_all(self, x: Any) -> Any:
        self.need_list(x)
        return ak.all(x, axis=1)

    def fn_max(self, *args: Any) -> Any:
        if len(args) == 1:
            x = args[0]
            return ak.max(x, axis=1) if _is_list(x) else x  # None for no objects
        result = args[0]
        for other in args[1:]:
            result = np.maximum(result, other)
        return result

    def fn_min(self, *args: Any) -> Any:
        if len(args) == 1:
            x = args[0]
            return ak.min(x, axis=1) if _is_list(x) else x
        result = args[0]
        for other in args[1:]:
            result = np.minimum(result, other)
        return result

    @staticmethod
    def ranked(x: Any, by: Any, rank: int) -> Any:
        """x of the object ranked ``rank`` (0 = first) by descending ``by``."""
        _SchemaEvaluator.need_list(x)
        _SchemaEvaluator.need_list(by)
        if not ak.all(ak.num(x, axis=1) == ak.num(by, axis=1)):
            raise _Misuse("needs both arguments to have the same number of objects per event")
        ordered = x[ak.argsort(by, axis=1, ascending=False, stable=True)]
        return ak.pad_none(ordered, rank + 1, axis=1)[:, rank]  # None: too few objects

    def fn_lead(self, x: Any, by: Any = None) -> Any:
        return self.ranked(x, x if by is None else by, 0)

    def fn_sublead(self, x: Any, by: Any = None) -> Any:
        return self.ranked(x, x if by is None else by, 1)

    @staticmethod
    def fn_pt(px: Any, py: Any) -> Any:
        return np.hypot(px, py)

    @staticmethod
    def fn_eta(px: Any, py: Any, pz: Any) -> Any:
        return np.arcsinh(pz / np.hypot(px, py))

    @staticmethod
    def fn_phi(px: Any, py: Any) -> Any:
        return np.arctan2(py, px)

    @staticmethod
    def fn_mass(e: Any, px: Any, py: Any, pz: Any) -> Any:
        # Rounding can make a massless object's m^2 slightly negative: clip at zero.
        return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))

    def fn_pair_mass(self, e: Any, px: Any, py: Any, pz: Any) -> Any:
        for x in (e, px, py, pz):
            self.need_list(x)
        order = ak.argsort(np.hypot(px, py), axis=1, ascending=False, stable=True)
        two = [x[order][:, :2] for x in (e, px, py, pz)]
        e2, px2, py2, pz2 = (ak.sum(x, axis=1) for x in two)
        mass = self.fn_mass(e2, px2, py2, pz2)
        return ak.mask(mass, ak.num(e, axis=1) >= 2)

    @staticmethod
    def fn_abs(x: Any) -> Any:
        return np.abs(x)

    @staticmethod
    def fn_sqrt(x: Any) -> Any:
        return np.sqrt(x)

    @staticmethod
    def fn_hypot(x: Any, y: Any) -> Any:
        return np.hypot(x, y)


class _Misuse(Exception):
    """A schema function got arguments of the wrong shape."""


# What a masked array holds under its mask: never read as a value, but deterministic.
_FILL = {BOOL: False, INT: 0, FLOAT: np.nan}


def _as_column(attribute: Attribute, value: Any, n: int) -> np.ma.MaskedArray:
    """The attribute's values as a flat masked array of its declared type, masked where
    the event has no value (too few objects, or a result that is not finite)."""
    where = f"attribute {attribute.name}"
    if _is_list(value):
        raise SchemaError(
            f"attribute '{attribute.name}': the expression gives a list per event; reduce it "
            "with count(), sum(), lead(), sublead(), max() or min()",
            where=where,
        )
    if isinstance(value, ak.Array):
        value = ak.to_numpy(value, allow_missing=True)
    array = np.broadcast_to(np.ma.getdata(value), (n,))
    missing = np.broadcast_to(np.ma.getmaskarray(value), (n,))
    kind = array.dtype.kind
    wanted = attribute.type
    if wanted == BOOL and kind != "b":
        raise SchemaError(
            f"attribute '{attribute.name}' is declared bool but its expression gives numbers",
            where=where,
        )
    if wanted != BOOL and kind == "b":
        raise SchemaError(
            f"attribute '{attribute.name}' is declared {wanted} but its expression gives "
            "true/false; declare it bool",
            where=where,
        )
    if wanted == INT and kind == "f":
        raise SchemaError(
            f"attribute '{attribute.name}' is declared int but its expression gives "
            "floating-point numbers; declare it float",
            where=where,
        )
    if wanted == INT:
        _check_fits_int64(attribute, array)
    dtype = {BOOL: np.bool_, INT: np.int64, FLOAT: np.float64}[wanted]
    array = np.asarray(array, dtype=dtype)
    if wanted == FLOAT:
        missing = missing | ~np.isfinite(array)
    return np.ma.array(np.where(missing, _FILL[wanted], array), mask=missing.copy())


def _check_fits_int64(attribute: Attribute, array: np.ndarray) -> None:
    """Int attributes are signed 64-bit: an unsigned value beyond that would wrap around
    to a negative number, so it is an error naming the entry instead."""
    if array.dtype.kind == "u" and array.size:
        beyond = np.flatnonzero(array > np.iinfo(np.int64).max)
        if len(beyond):
            raise SchemaError(
                f"attribute '{attribute.name}' is {array[beyond[0]]} at entry {beyond[0]}, "
                "beyond a signed 64-bit int attribute; only the run, lumi and event numbers "
                "are unsigned 64-bit",
                where=f"attribute {attribute.name}",
            )


def _tree_where(tree: Any) -> str:
    if isinstance(tree, EventTree):
        return tree.where
    path = getattr(getattr(tree, "file", None), "file_path", "")
    return f"{path}:{tree.name}" if path else str(getattr(tree, "name", "tree"))


def compute_tags(
    schema: Schema,
    tree: Any,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> dict[str, np.ndarray]:
    """Compute every attribute of ``schema`` for the entries of an event ``tree``: a
    :class:`dmu.eventfiles.EventTree` (TTree, RNTuple or Parquet table) or an uproot TTree
    or RNTuple.

    Reads only the branches the schema needs. Returns one flat numpy masked array per
    attribute (int64, float64 or bool), masked where the event has no value, plus
    ``run``, ``event`` and ``lumi`` (plain uint64 arrays) for those the schema names.
    ``tree`` may also be a file path, opened at ``schema.tree``. Join the tags of
    several chunks with ``np.ma.concatenate`` (``np.concatenate`` drops the masks).
    """
    if isinstance(tree, str | Path):
        try:
            source = open_event_file(str(tree))
        except OSError as exc:
            raise BadEventFile(
                f"cannot read tree '{schema.tree}': {exc}", where=str(tree)
            ) from None
        with source:
            return compute_tags(schema, source.tree(schema.tree), entry_start, entry_stop)
    tree = as_event_tree(tree)
    available = set(tree.keys())
    users: dict[str, str] = {}
    for attribute in schema.attributes:
        for branch in sorted(attribute.branches()):
            users.setdefault(branch, f"attribute '{attribute.name}'")
    for column, branch in schema.numbering().items():
        users.setdefault(branch, f"the {column} number")
    for branch, user in sorted(users.items()):
        if branch not in available:
            raise SchemaError(
                f"{user} reads branch '{branch}', which tree '{tree.name}' does not have"
                f"{suggest(branch, sorted(available))}",
                where=_tree_where(tree),
            )
    needed = set(users)
    arrays = tree.arrays(sorted(needed), entry_start, entry_stop)
    n = len(arrays)
    # Single-precision branches are widened first, so derived quantities such as masses
    # are computed in double precision.
    widened = {}
    for branch in needed:
        values = arrays[branch]
        if _kind(values) == "f":
            values = ak.values_astype(values, np.float64)
        widened[branch] = values
    columns: dict[str, np.ndarray] = {}
    for column, branch in schema.numbering().items():
        values = widened[branch]
        if _is_list(values) or _kind(values) not in "iu":
            raise SchemaError(
                f"the {column} number branch '{branch}' must hold one whole number per event",
                where=_tree_where(tree),
            )
        columns[column] = _numbering_column(column, branch, values, _tree_where(tree))
    evaluator = _SchemaEvaluator(widened)  # type: ignore[arg-type]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for attribute in schema.attributes:
            try:
                value = evaluator.visit(attribute.tree)
            except SelectionError as exc:
                raise _attribute_error(attribute.name, exc) from None
            columns[attribute.name] = _as_column(attribute, value, n)
    return columns


def pack_tags(tags: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain arrays for ``np.savez``, which would drop masks: each array's values, and
    its mask under ``<name>.missing`` (a name no attribute can have)."""
    packed = {}
    for name, values in tags.items():
        packed[name] = np.ma.getdata(values)
        packed[f"{name}{_MASK_SUFFIX}"] = np.ma.getmaskarray(values)
    return packed


def unpack_tags(arrays: Mapping[str, np.ndarray], where: str = "") -> dict[str, Any]:
    """The tags that :func:`pack_tags` packed, as masked arrays again.

    Raises InvalidInput for arrays packed without masks (by a DSS from before missing
    values were kept apart), whose missing values cannot be told from real ones.
    """
    names = [name for name in arrays if not name.endswith(_MASK_SUFFIX)]
    lacking = [name for name in names if f"{name}{_MASK_SUFFIX}" not in arrays]
    if lacking:
        raise InvalidInput(
            f"the TAGs of {where or 'a file'} were saved without the marks of missing values "
            f"(first: '{lacking[0]}'); build them again",
            where=where or lacking[0],
        )
    return {name: np.ma.array(arrays[name], mask=arrays[f"{name}{_MASK_SUFFIX}"]) for name in names}


_MASK_SUFFIX = ".missing"


def _numbering_column(column: str, branch: str, values: Any, where: str) -> np.ndarray:
    """The run/lumi/event numbers of a chunk as unsigned 64-bit integers."""
    try:
        return numbering_array(values, f"the {column} number branch '{branch}'", where)
    except InvalidInput as exc:
        raise SchemaError(exc.message, where=exc.where) from None


# --------------------------------------------------------------------------- auto


_RUN_NAMES = {"run", "runnumber", "run_number", "runnr"}
_EVENT_NAMES = {"event", "eventnumber", "event_number", "evt", "evtnum"}
_LUMI_NAMES = {"lumi", "lumiblock", "lumi_block", "lumiblocknumber", "luminosityblock", "lb"}


def _sanitise(name: str) -> str:
    clean = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "branch"
    if not clean[0].isalpha():
        clean = f"b_{clean}"
    clean = clean[:55]
    if clean in KEYWORDS or clean in RESERVED:
        clean = f"{clean}_b"
    return clean


def auto_schema(tree: Any, name: str | None = None) -> Schema:
    """A schema for any event tree (TTree, RNTuple or Parquet table): every flat numeric
    branch as an attribute (name lower-cased and sanitised), and ``n_<branch>`` counting
    every list branch.

    Integer branches called run/event/lumi (``Run``, ``EventNumber``, ``LumiBlock``, …)
    become the schema's run/event/lumi numbers. Branches whose names are not plain
    identifiers, strings and objects are left out.
    """
    tree = as_event_tree(tree)
    numbering: dict[str, str] = {}
    attributes: list[dict[str, Any]] = []
    used: set[str] = set()

    def unique(base: str) -> str:
        candidate, k = base, 2
        while candidate in used:
            candidate, k = f"{base}_{k}", k + 1
        used.add(candidate)
        return candidate

    for branch in tree.branches():
        branch_name = branch.name
        if not _BRANCH_RE.fullmatch(branch_name) or branch.dtype is None:
            continue
        if branch.jagged:
            attributes.append(
                {
                    "name": unique(_sanitise(f"n_{branch_name}")),
                    "type": INT,
                    "expression": f"count({branch_name})",
                    "description": f"Number of entries in {branch_name}",
                }
            )
            continue
        kind = branch.dtype.kind
        if kind not in "biuf":
            continue
        lowered = branch_name.lower()
        if kind in "iu":
            for column, names in (
                ("run", _RUN_NAMES),
                ("event", _EVENT_NAMES),
                ("lumi", _LUMI_NAMES),
            ):
                if lowered in names and column not in numbering:
                    numbering[column] = branch_name
                    break
            else:
                column = ""
            if column:
                continue
        attributes.append(
            {
                "name": unique(_sanitise(branch_name)),
                "type": BOOL if kind == "b" else INT if kind in "iu" else FLOAT,
                "expression": branch_name,
                "description": f"Branch {branch_name}",
            }
        )
    if not attributes:
        raise SchemaError(
            f"tree '{tree.name}' has no numeric branches to build TAGs from",
            where=_tree_where(tree),
        )
    return schema_from_dict(
        {
            "name": name or _sanitise(f"auto_{tree.name}"),
            "version": 1,
            "tree": tree.name,
            **numbering,
            "attributes": attributes,
        }
    )
