"""Good-run lists: the runs and luminosity blocks certified for analysis.

A list is read from either format the experiments publish, told apart by its content:

- ATLAS XML: ``<LumiRangeCollection><NamedLumiRange>…<LumiBlockCollection><Run>N</Run>
  <LBRange Start="a" End="b"/>…</LumiBlockCollection>…`` (every NamedLumiRange in the
  file counts);
- JSON ``{"run": [[first, last], …], …}``: CMS "golden JSON", whose lumi sections are the
  luminosity-block numbers of a TAG collection.

The list is applied as data, never as selection text: :mod:`tagdb.store` loads its ranges
into a range table of the TAG DB and joins on run and luminosity block, so its size is not
limited; :meth:`GoodRunList.mask` applies it to numpy arrays (a scan of files without TAGs).
A collection without luminosity-block numbers keeps the listed runs whole.

Plain Python (no Django), like the selection language: files from users are parsed with
defusedxml, which refuses entity declarations and external references.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from dss.errors import InvalidInput

WHERE = "good-run list"
# Far beyond any real list (a whole LHC run is some thousands of runs and tens of
# thousands of ranges); it bounds what one request can make the server hold.
MAX_RANGES = 2_000_000
MAX_BYTES = 50_000_000
# Run and luminosity-block numbers are stored as BIGINT.
_MAX_NUMBER = 2**63 - 1
# How many missing runs a warning names before it says "and N more".
WARN_RUNS = 20


@dataclass(frozen=True)
class GoodRunList:
    """Runs and their certified luminosity-block ranges (inclusive, sorted, disjoint)."""

    runs: Mapping[int, tuple[tuple[int, int], ...]]
    format: str = "JSON"  # which format it was read from: "JSON" or "ATLAS XML"
    name: str = field(default="", compare=False)  # an ATLAS list's NamedLumiRange name

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @cached_property
    def n_ranges(self) -> int:
        return sum(len(r) for r in self.runs.values())

    def to_json(self) -> dict[str, list[list[int]]]:
        """The list as JSON ``{"run": [[first, last], …]}``, runs in order: what a skim
        records and a page sends back."""
        return {str(run): [[lo, hi] for lo, hi in self.runs[run]] for run in sorted(self.runs)}

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the runs and ranges alone (not the format or name): two lists that
        certify the same blocks have the same fingerprint."""
        text = json.dumps(self.to_json(), separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Three int64 arrays, one element per range: run, first block, last block."""
        runs, firsts, lasts = [], [], []
        for run in sorted(self.runs):
            for lo, hi in self.runs[run]:
                runs.append(run)
                firsts.append(lo)
                lasts.append(hi)
        as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
        return as_array(runs), as_array(firsts), as_array(lasts)

    def describe(self) -> str:
        """``500 runs, 10,000 luminosity-block ranges``."""
        runs = f"{self.n_runs:,} run{'s' if self.n_runs != 1 else ''}"
        ranges = f"{self.n_ranges:,} luminosity-block range{'s' if self.n_ranges != 1 else ''}"
        return f"{runs}, {ranges}"

    def mask(self, run_array: Any, lumi_array: Any = None) -> np.ndarray:
        """Which events the list keeps, as a bool array. Without ``lumi_array`` (data
        without luminosity blocks) every event of a listed run is kept.

        Columnar: one binary search per distinct run, never a loop over events."""
        runs = np.asarray(run_array, dtype=np.int64)
        if lumi_array is None:
            return np.isin(runs, np.fromiter(self.runs, dtype=np.int64, count=len(self.runs)))
        lumis = np.asarray(lumi_array, dtype=np.int64)
        keep = np.zeros(runs.shape, dtype=bool)
        order = np.argsort(runs, kind="stable")
        distinct, starts = np.unique(runs[order], return_index=True)
        stops = np.r_[starts[1:], len(order)]
        for run, a, b in zip(distinct.tolist(), starts, stops, strict=True):
            ranges = self.runs.get(run)
            if not ranges:
                continue
            firsts = np.fromiter((lo for lo, _ in ranges), dtype=np.int64, count=len(ranges))
            lasts = np.fromiter((hi for _, hi in ranges), dtype=np.int64, count=len(ranges))
            where = order[a:b]
            values = lumis[where]
            i = np.searchsorted(firsts, values, side="right") - 1
            keep[where] = (i >= 0) & (values <= lasts[np.maximum(i, 0)])
        return keep


def missing_runs_warning(missing: Sequence[int], where: str = "this collection") -> str:
    """``3 runs of the GRL are not in this collection: 1, 2, 3`` (at most
    :data:`WARN_RUNS` named, then how many more)."""
    missing = sorted(missing)
    named = ", ".join(str(run) for run in missing[:WARN_RUNS])
    more = f" and {len(missing) - WARN_RUNS:,} more" if len(missing) > WARN_RUNS else ""
    verb = "runs of the GRL are" if len(missing) != 1 else "run of the GRL is"
    return f"{len(missing):,} {verb} not in {where}: {named}{more}"


def canonical_ranges(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, with overlapping and touching ranges merged."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


# --------------------------------------------------------------------------- reading


def parse_good_run_list(source: str | bytes | Mapping[str, Any]) -> GoodRunList:
    """Read a good-run list: ATLAS XML or JSON text (the format told from the content),
    or an already parsed JSON object. Raises :class:`dss.errors.InvalidInput` naming the
    line (or the run) of the first problem; a list that names no runs is an error."""
    if isinstance(source, Mapping):
        grl = _from_json_object(source, text=None)
    elif not isinstance(source, str | bytes):
        raise InvalidInput(
            'a good-run list is text (ATLAS XML or JSON) or a JSON object {"run": [[first, '
            "last], …]}",
            where=WHERE,
        )
    else:
        if len(source) > MAX_BYTES:
            raise InvalidInput(
                f"the good-run list is larger than {MAX_BYTES // 1_000_000} MB", where=WHERE
            )
        if isinstance(source, bytes):
            try:
                source = source.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"the good-run list is not UTF-8 text (byte {exc.start + 1})", where=WHERE
                ) from None
        text = source.lstrip("\ufeff")
        head = text.lstrip()
        if head.startswith("<"):
            grl = _from_atlas_xml(text)
        elif head.startswith("{"):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    f"the good-run list is not valid JSON: {exc.msg} (line {exc.lineno}, "
                    f"column {exc.colno})",
                    where=f"line {exc.lineno}",
                ) from None
            grl = _from_json_object(obj, text=text)
        elif not head:
            raise InvalidInput("the good-run list is empty", where=WHERE)
        else:
            raise InvalidInput(
                "a good-run list is ATLAS XML (<LumiRangeCollection>…) or JSON "
                '({"run": [[first, last], …]}); this is neither',
                where="line 1",
            )
    if not grl.runs:
        raise InvalidInput("the good-run list names no runs", where=WHERE)
    if grl.n_ranges > MAX_RANGES:
        raise InvalidInput(
            f"the good-run list has {grl.n_ranges:,} ranges; at most {MAX_RANGES:,} are taken",
            where=WHERE,
        )
    return grl


def _number(value: str, what: str, where: str) -> int:
    text = value.strip()
    if not re.fullmatch(r"\d+", text) or int(text) > _MAX_NUMBER:
        raise InvalidInput(f"{what} {value!r} is not a whole number", where=where)
    return int(text)


def _line_of_key(text: str | None, key: str) -> int | None:
    """The line where ``"key":`` appears in JSON ``text`` (for errors), if it does."""
    if text is None:
        return None
    match = re.search(r'"' + re.escape(key) + r'"\s*:', text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _from_json_object(obj: Any, text: str | None) -> GoodRunList:
    if not isinstance(obj, Mapping):
        raise InvalidInput(
            'a good-run list in JSON is an object {"run": [[first, last], …]}', where=WHERE
        )
    runs: dict[int, tuple[tuple[int, int], ...]] = {}
    for key, blocks in obj.items():

        def error(message: str, key: Any = key) -> InvalidInput:
            # The line is looked for only when there is an error to report.
            line = _line_of_key(text, str(key))
            return InvalidInput(message, where=f"line {line}" if line else f"run {key!r}")

        if not (isinstance(key, str) and re.fullmatch(r"\s*\d+\s*", key)):
            raise error(f"run number {key!r} is not a whole number")
        if int(key) > _MAX_NUMBER:
            raise error(f"run number {key!r} is too large")
        run = int(key)
        if not isinstance(blocks, list):
            raise error(f"run {run}: expected a list of [first, last] luminosity blocks")
        ranges = []
        for block in blocks:
            if (
                not isinstance(block, list | tuple)
                or len(block) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in block)
                or not all(0 <= b <= _MAX_NUMBER for b in block)
            ):
                raise error(f"run {run}: block {json.dumps(block)} is not a pair of whole numbers")
            if block[0] > block[1]:
                raise error(f"run {run}: block {json.dumps(block)} ends before it starts")
            ranges.append((block[0], block[1]))
        merged = list(runs.get(run, ())) + ranges
        runs[run] = canonical_ranges(merged)
    return GoodRunList({run: runs[run] for run in sorted(runs)}, format="JSON")


class _AtlasReader:
    """An ElementTree parser target that reads the runs and ranges of an ATLAS list as
    the parser goes, knowing the line of each element (for errors)."""

    def __init__(self) -> None:
        self.parser: DefusedXMLParser | None = None
        self.path: list[str] = []
        self.text: list[str] = []
        self.runs: dict[int, list[tuple[int, int]]] = {}
        self.names: list[str] = []
        self.run: int | None = None
        self.run_line = 0
        self.ranges: list[tuple[int, int]] = []
        self.n_ranges = 0

    def line(self) -> int:
        return self.parser.parser.CurrentLineNumber if self.parser else 0

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        where = f"line {self.line()}"
        if not self.path and tag != "LumiRangeCollection":
            raise InvalidInput(
                f"an ATLAS good-run list starts with <LumiRangeCollection>, not <{tag}>",
                where=where,
            )
        self.path.append(tag)
        self.text = []
        if tag == "LumiBlockCollection":
            self.run, self.ranges, self.run_line = None, [], self.line()
        elif tag == "LBRange" and self.path[-2:-1] == ["LumiBlockCollection"]:
            if self.run is None:
                raise InvalidInput("<LBRange> comes before its <Run>", where=where)
            missing = [name for name in ("Start", "End") if name not in attrib]
            if missing:
                raise InvalidInput(
                    f"run {self.run}: <LBRange> has no {missing[0]} attribute", where=where
                )
            lo = _number(attrib["Start"], f"run {self.run}: LBRange Start", where)
            hi = _number(attrib["End"], f"run {self.run}: LBRange End", where)
            if lo > hi:
                raise InvalidInput(
                    f'run {self.run}: <LBRange Start="{lo}" End="{hi}"> ends before it starts',
                    where=where,
                )
            self.ranges.append((lo, hi))
            self.n_ranges += 1
            if self.n_ranges > MAX_RANGES:
                raise InvalidInput(
                    f"the good-run list has more than {MAX_RANGES:,} ranges", where=where
                )

    def data(self, text: str) -> None:
        self.text.append(text)

    def end(self, tag: str) -> None:
        where = f"line {self.line()}"
        inside = self.path[-2:-1]
        if tag == "Run" and inside == ["LumiBlockCollection"]:
            if self.run is not None:
                raise InvalidInput(
                    f"a <LumiBlockCollection> names two runs ({self.run} and another)",
                    where=where,
                )
            self.run = _number("".join(self.text), "run number", where)
        elif tag == "Name" and inside == ["NamedLumiRange"]:
            self.names.append("".join(self.text).strip())
        elif tag == "LumiBlockCollection":
            if self.run is None:
                raise InvalidInput(
                    "a <LumiBlockCollection> has no <Run>", where=f"line {self.run_line}"
                )
            if not self.ranges:
                raise InvalidInput(
                    f"run {self.run} has no <LBRange>", where=f"line {self.run_line}"
                )
            self.runs.setdefault(self.run, []).extend(self.ranges)
            self.run = None
        self.path.pop()
        self.text = []

    def close(self) -> GoodRunList:
        runs = {run: canonical_ranges(self.runs[run]) for run in sorted(self.runs)}
        return GoodRunList(runs, format="ATLAS XML", name=", ".join(n for n in self.names if n))


def _from_atlas_xml(text: str) -> GoodRunList:
    reader = _AtlasReader()
    parser = DefusedXMLParser(target=reader)
    reader.parser = parser
    try:
        parser.feed(text)
        return parser.close()
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        detail = re.sub(r": line \d+, column \d+$", "", str(exc))
        raise InvalidInput(
            f"the good-run list is not well-formed XML: {detail} (line {line}, column {column + 1})",
            where=f"line {line}",
        ) from None
    except DefusedXmlException:
        raise InvalidInput(
            "the good-run list declares XML entities or external references, which are not "
            "accepted",
            where=f"line {reader.line()}",
        ) from None
