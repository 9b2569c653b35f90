"""The DSS portal from Python: TAG queries, skims and their outputs, for notebooks and scripts.

::

    import dss

    portal = dss.Portal()                      # DSS_URL/DSS_TOKEN or ~/.config/dss/client.ini
    tags = portal.tags("demo.hzz")
    tags.count("n_muon >= 2")                  # 1,413 of 2,421 events (58.4%) pass ...
    h = tags.histogram("met", "n_muon >= 2", bins=20)
    h.edges, h.counts                          # and h.to_hist(), h.plot()
    job = portal.skim(collections=[tags], selection="n_muon >= 2", branches=["NMuon", "Muon_*"],
                      format="parquet")        # output: a name in your scope, user.<you>.…
    job.wait(progress=True)                    # or: await job
    events = job.to_awkward()                  # or to_pandas(), to_arrow(), to_dask()
    job.provenance(), job.provenance("prov-json")

Everything goes through the portal's REST API with the ``dss`` command line's client
(:class:`dss.apiclient.ApiClient`): the same settings, the same requests. This module needs
only ``requests`` (and ``fsspec`` for downloads); counts, histograms, skims and waiting work
with nothing more. Arrays, tables, plots and progress bars need the ``notebook`` extra
(``pip install 'dss-portal[notebook]'``), and root:// outputs the ``xrootd`` extra; a call
that needs one that is missing raises :class:`MissingExtra` saying which. No Django import:
the portal's own code is never loaded.

Errors the portal answers with are :class:`APIError` subclasses carrying the portal's
``code``, ``detail``, ``where`` and HTTP ``status`` (:class:`BadSelection` also the
``column`` of the bad token); all of them are :class:`dss.errors.DSSError`. Warnings in an
answer (TAGs that no longer cover their dataset, runs of a good-run list the collection
lacks) are issued as :class:`DSSWarning` and kept on the result's ``warnings``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import html
import importlib
import importlib.util
import os
import re
import sys
import time
import uuid
import warnings as warnings_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from dss import errors
from dss.apiclient import (
    DEFAULT_TIMEOUT,
    ApiClient,
    config_path,
    error_from_response,
    resolve_settings,
)
from dss.errors import DSSError

__all__ = [
    "APIError",
    "BadRequest",
    "BadSelection",
    "Conflict",
    "DSSWarning",
    "Dataset",
    "Forbidden",
    "Histogram",
    "IdenticalSkim",
    "MissingExtra",
    "NotFound",
    "NotReady",
    "OutputFile",
    "Portal",
    "SkimFailed",
    "SkimJob",
    "StaleTags",
    "StaleTagsWarning",
    "StillRunning",
    "TagCount",
    "Tags",
    "Unauthorized",
    "Unavailable",
]

FINAL_STATES = ("succeeded", "partial", "failed", "cancelled")
FORMATS = ("root", "rntuple", "parquet")
EXTRA_HINT = "pip install 'dss-portal[{extra}]'"
# Rows per request when fetching an event list (the portal answers at most 1,000,000).
EVENT_PAGE = 50_000
# Replicas in the order worth reading from: local disk, then XRootD, then the web.
_SCHEME_ORDER = {"file": 0, "root": 1, "xroot": 1, "https": 2, "http": 2}


# --------------------------------------------------------------------------- errors


class APIError(DSSError):
    """An error answer of the portal. ``code`` is its ``error`` field (``bad_selection``,
    ``not_found``, ``forbidden``, ``identical_skim``, ``stale_tags``, …), ``detail`` its
    message, ``where`` what it names (a field, ``column 11``, a dataset), ``status`` the
    HTTP status and ``body`` the whole JSON answer."""

    def __init__(
        self,
        detail: str,
        *,
        where: str = "",
        code: str | None = None,
        status: int | None = None,
        body: dict | None = None,
    ):
        super().__init__(detail, where=where, code=code)
        self.status = status
        self.body = body or {}

    @property
    def detail(self) -> str:
        return self.message


class BadRequest(APIError, errors.InvalidInput):
    """The portal refused the request's content (HTTP 400): a bad name, option or list."""


class BadSelection(BadRequest):
    """A selection the portal cannot parse or type; ``column`` (1-based) is where the bad
    token starts."""

    code = "bad_selection"

    def __init__(self, detail: str, *, column: int | None = None, **kwargs: Any):
        super().__init__(detail, **kwargs)
        self.column = column


class Unauthorized(APIError):
    """The portal did not accept the token (missing, wrong, expired or revoked)."""

    code = "not_authorized"


class Forbidden(APIError, errors.Forbidden):
    """The token is good but its user may not do this (HTTP 403): a role they lack, a
    dataset name outside their scope, a storage element not open to users."""


class NotFound(APIError, errors.NotFound):
    """No such thing (HTTP 404, or a name the portal lists nothing for)."""


class Conflict(APIError, errors.Conflict):
    """The request contradicts what the portal holds (HTTP 409): a name already taken, a
    skim that cannot be cancelled or retried in its state."""


class IdenticalSkim(Conflict):
    """An identical skim already succeeded. ``existing`` is that skim (a :class:`SkimJob`,
    when raised by :meth:`Portal.skim`); submit with ``force=True`` to run anew."""

    code = "identical_skim"

    def __init__(self, detail: str, **kwargs: Any):
        super().__init__(detail, **kwargs)
        found = self.body.get("existing") or {}
        self.existing_id: int | None = found.get("skim")
        self.existing_dataset: str | None = found.get("dataset")
        self.existing: SkimJob | None = None


class StaleTags(Conflict):
    """The TAG collection does not cover its dataset as it is now (files added, changed or
    removed since the build); ``coverage`` says which. Rebuild the TAGs."""

    code = "stale_tags"

    def __init__(self, detail: str, **kwargs: Any):
        super().__init__(detail, **kwargs)
        self.coverage: dict = self.body.get("coverage") or {}


class Unavailable(APIError, errors.StorageError):
    """The portal or what it reaches is busy or failing (HTTP 5xx); ``retry_after`` is the
    seconds it asks to wait, when it says."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(detail, **kwargs)
        self.transient = True
        self.retry_after = retry_after


class SkimFailed(DSSError):
    """A skim ended failed or cancelled; ``job`` is the :class:`SkimJob`, ``state`` its
    state and the message the portal's."""

    def __init__(self, job: SkimJob):
        super().__init__(
            f"skim #{job.id} {job.state}: {job.message or 'no message'}",
            where=f"skim {job.id}",
            code=f"skim_{job.state}",
        )
        self.job = job
        self.state = job.state


class NotReady(DSSError):
    """What was asked for does not exist yet (a running skim's output or provenance)."""

    code = "not_ready"


class StillRunning(DSSError, TimeoutError):
    """``wait(timeout=…)`` ran out; the skim goes on on the portal."""

    code = "still_running"


class MissingExtra(ImportError):
    """A call needs packages that are not installed; the message says which extra brings
    them (``pip install 'dss-portal[notebook]'``)."""


class DSSWarning(UserWarning):
    """A warning in one of the portal's answers (e.g. runs of a good-run list that the
    collection does not have)."""


class StaleTagsWarning(DSSWarning):
    """The answer came from TAGs that no longer cover their dataset: it may be wrong."""


_CODE_CLASSES: dict[str, type[APIError]] = {
    "bad_selection": BadSelection,
    "identical_skim": IdenticalSkim,
    "stale_tags": StaleTags,
    "forbidden": Forbidden,
    "permission_denied": Forbidden,
    "not_found": NotFound,
}
_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}
# DRF's codes for a request without (valid) credentials, whatever status carries them.
_AUTH_CODES = ("not_authenticated", "authentication_failed")


def api_error(response: requests.Response) -> DSSError:
    """The :class:`APIError` an error answer of the portal describes, with its status and
    body; an answer that is not the portal's JSON stays the command line's PortalError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not ("error" in body or "detail" in body):
        return error_from_response(response)
    status = response.status_code
    code = str(body.get("error") or "")
    detail = str(body.get("detail") or error_from_response(response).message)
    where = str(body.get("where") or "")
    kwargs: dict[str, Any] = {"where": where, "code": code or None, "status": status, "body": body}
    if status == 401 or code in _AUTH_CODES:
        return Unauthorized(
            f"{detail} (check the API token: Portal(token=…), DSS_TOKEN or {config_path()})",
            **kwargs,
        )
    if status >= 500:
        retry = response.headers.get("Retry-After")
        return Unavailable(
            detail, retry_after=float(retry) if retry and retry.isdigit() else None, **kwargs
        )
    cls = _CODE_CLASSES.get(code) or _STATUS_CLASSES.get(status) or APIError
    if cls is BadSelection:
        column = body.get("column")
        if column is None:
            match = re.fullmatch(r"column (\d+)", where)
            column = int(match.group(1)) if match else None
        return BadSelection(detail, column=column, **kwargs)
    return cls(detail, **kwargs)


class _Api(ApiClient):
    """The command line's client, raising this module's error classes."""

    def error_from_response(self, response: requests.Response) -> DSSError:
        return api_error(response)


def _need(modules: Sequence[str], what: str, extra: str = "notebook") -> list[Any]:
    """Import ``modules``, or raise MissingExtra naming the missing ones and the extra."""
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(name.split(".")[0])
    if missing:
        raise MissingExtra(
            f"{what} needs {', '.join(dict.fromkeys(missing))}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: "
            + EXTRA_HINT.format(extra=extra)
        )
    return found


def _warn(answer: dict, stacklevel: int = 3) -> None:
    """Issue an answer's warnings; the stale-TAGs one (first when present) as
    StaleTagsWarning."""
    texts = list(answer.get("warnings") or [])
    if answer.get("stale") and texts:
        warnings_module.warn(texts.pop(0), StaleTagsWarning, stacklevel=stacklevel)
    for text in texts:
        warnings_module.warn(text, DSSWarning, stacklevel=stacklevel)


def _good_runs(value: Any) -> Any:
    """A good-run list as the portal takes it: XML or JSON text, a ``{"run": [[first,
    last], …]}`` object, or a file (a ``pathlib.Path``) holding either."""
    if isinstance(value, os.PathLike):
        try:
            return Path(value).read_bytes().decode("utf-8-sig")
        except OSError as exc:
            raise errors.InvalidInput(
                f"cannot read the good-run list: {exc.strerror or exc}", where=str(value)
            ) from None
        except UnicodeDecodeError as exc:
            raise errors.InvalidInput(
                f"the good-run list is not UTF-8 text (byte {exc.start + 1})", where=str(value)
            ) from None
    return value


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: Iterable[tuple[str, Any]], title: str = "") -> str:
    """A small two-column HTML table of facts (values already escaped)."""
    head = f"<strong>{title}</strong>" if title else ""
    body = "".join(
        f"<tr><th style='text-align:left'>{_esc(k)}</th><td style='text-align:left'>{v}</td></tr>"
        for k, v in rows
    )
    return f"<div class='dss'>{head}<table>{body}</table></div>"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


# --------------------------------------------------------------------------- the portal


class Portal:
    """A connection to a DSS portal.

    ``url`` and ``token`` default, as for the ``dss`` command line, to ``DSS_URL`` and
    ``DSS_TOKEN``, then to ``url =`` and ``token =`` under ``[dss]`` in
    ``~/.config/dss/client.ini``; your token is on the portal's ``/account/`` page.
    ``poll_interval`` is how often waiting asks the portal for a skim's state (seconds).
    Nothing is sent until the first call.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = 1.0,
    ):
        settings = resolve_settings(url, token)
        self.api = _Api(settings.url, settings.token, timeout=timeout)
        self.poll_interval = poll_interval
        self._me: dict | None = None

    @property
    def url(self) -> str:
        """The portal's base URL."""
        return self.api.url

    # -- who and what -------------------------------------------------------------------

    def whoami(self) -> dict:
        """Your user name, roles, dataset scope (``user.<name>.``) and the storage elements
        open to users' datasets."""
        if self._me is None:
            self._me = self.api.request("GET", "/api/whoami/")
        return self._me

    def datasets(self, pattern: str = "") -> list[Dataset]:
        """The datasets whose names match ``pattern``: a shell pattern (``demo.*``,
        ``user.alice.*dimuon*``), or plain text found in a name or description."""
        wildcard = any(c in pattern for c in "*?[")
        # The portal searches for text: send the longest literal piece of a pattern.
        search = max(re.split(r"[*?\[\]]", pattern), key=len) if wildcard else pattern
        found: list[Dataset] = []
        offset = 0
        while True:
            page = self.api.request(
                "GET", "/api/datasets/", params={"q": search, "limit": 500, "offset": offset}
            )
            rows = page["results"] if isinstance(page, dict) else page
            found += [
                Dataset(self, row)
                for row in rows
                if not wildcard or fnmatch.fnmatchcase(row["name"], pattern)
            ]
            if not isinstance(page, dict) or not page.get("next") or not rows:
                break
            offset += len(rows)
        return _DatasetList(found)

    def dataset(self, name: str) -> Dataset:
        """One dataset by name, with its files."""
        return Dataset(self, self.api.request("GET", f"/api/datasets/{quote(name, safe='')}/"))

    def tags(self, ref: int | str | Tags) -> Tags:
        """A TAG collection: by number, dataset name (its newest ready collection) or
        ``dataset/schema``."""
        if isinstance(ref, Tags):
            return ref
        from tagdb.cli import Client, resolve_collection

        try:
            row = resolve_collection(Client(self.api), str(ref))
        except errors.NotFound as exc:
            if isinstance(exc, APIError):
                raise
            raise NotFound(exc.message, where=exc.where) from None
        if "attributes" not in row:
            row = self.api.request("GET", f"/api/tags/{int(row['id'])}")
        return Tags(self, row)

    def tag_collections(self, dataset: str | None = None) -> list[Tags]:
        """Every TAG collection (of ``dataset``, when given), without their attributes."""
        from tagdb.cli import Client

        params = {"dataset": dataset} if dataset else None
        return [Tags(self, row) for row in Client(self.api).all("/api/tags", params=params)]

    # -- skims --------------------------------------------------------------------------

    def skim(
        self,
        collections: Sequence[int | str | Tags] = (),
        selection: str = "",
        *,
        datasets: Sequence[str] = (),
        branches: Sequence[str] | str | None = None,
        preset: str | None = None,
        output: str | None = None,
        format: str = "root",
        storage_element: str | None = None,
        limit: int | None = None,
        good_runs: Any = None,
        on_failure: str = "fail",
        force: bool = False,
    ) -> SkimJob:
        """Submit a skim and return its :class:`SkimJob` (it runs on the portal's workers).

        ``collections`` are TAG collections (:class:`Tags`, numbers or dataset names) to
        select through; ``datasets`` are datasets to select from (through their TAGs, or by
        a scan). ``branches`` are names or patterns (``"Muon_*"``) to keep, all by default,
        or a site ``preset``. ``output`` is the new dataset's name, which must be in your
        scope (``user.<you>.…``); by default one is made there from the first input and
        the time. ``format`` is ``"root"`` (TTree), ``"rntuple"`` or ``"parquet"``;
        ``storage_element`` the output's (default: the site's); ``limit`` stops after that
        many events; ``good_runs`` is a good-run list (XML or JSON text, a dict, or a
        ``pathlib.Path``); ``on_failure`` is ``"fail"`` or ``"partial"`` (keep the files that
        succeeded). An identical skim that already succeeded raises :class:`IdenticalSkim`
        with it as ``existing``, unless ``force``.
        """
        if isinstance(collections, (int, str, Tags)):
            collections = [collections]
        if isinstance(datasets, str):
            datasets = [datasets]
        ids = [c.id if isinstance(c, Tags) else int(c) for c in collections if _is_id(c)]
        named = [self.tags(c).id for c in collections if not _is_id(c)]
        if not ids + named and not datasets:
            raise errors.InvalidInput(
                "name at least one input: collections=[…] or datasets=[…]", where="inputs"
            )
        if format not in FORMATS:
            raise errors.InvalidInput(
                f"format must be one of {', '.join(FORMATS)}, not {format!r}", where="format"
            )
        if isinstance(branches, str):
            branches = [b.strip() for b in branches.split(",") if b.strip()]
        if output is None:
            first = datasets[0] if datasets else self.tags(ids[0] if ids else named[0]).dataset
            output = self.default_output_name(first)
        body: dict[str, Any] = {
            "collections": ids + named,
            "datasets": list(datasets),
            "selection": selection,
            "branches": list(branches or []),
            "output_name": output,
            "output_format": format,
            "failure_policy": on_failure,
            "force": force,
        }
        if preset:
            body["preset"] = preset
        if storage_element:
            body["output_se"] = storage_element
        if limit is not None:
            body["event_limit"] = limit
        if good_runs is not None:
            body["good_runs"] = _good_runs(good_runs)
        try:
            answer = self.api.request("POST", "/api/skims/", json=body)
        except IdenticalSkim as exc:
            if exc.existing_id is not None:
                exc.existing = self.job(exc.existing_id)
            raise
        _warn(answer)
        return SkimJob(self, answer)

    def default_output_name(self, input_dataset: str) -> str:
        """A new dataset name in your scope from an input's name and the time:
        ``user.<you>.hzz.skim-20260315-101530-3f2a``."""
        stem = input_dataset.split(".", 1)[-1]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".")[:80] or "skim"
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return f"{self.whoami()['scope']}{stem}.skim-{stamp}-{uuid.uuid4().hex[:4]}"

    def job(self, skim_id: int) -> SkimJob:
        """A skim by its number."""
        return SkimJob(self, self.api.request("GET", f"/api/skims/{int(skim_id)}/"))

    def jobs(
        self, *, mine: bool = True, state: str | None = None, limit: int = 50
    ) -> list[SkimJob]:
        """Skims, newest first: yours (``mine=False``: everyone's), in ``state`` if given.
        Their parts are not listed: ``refresh()`` one to see them."""
        params: dict[str, Any] = {"limit": limit}
        if mine:
            params["mine"] = "1"
        if state:
            params["state"] = state
        rows = self.api.request("GET", "/api/skims/", params=params)["results"]
        return [SkimJob(self, row) for row in rows]

    def __repr__(self) -> str:
        who = f" as {self._me['username']}" if self._me else ""
        return f"<dss.Portal {self.url}{who}>"

    def _repr_html_(self) -> str:
        rows = [("portal", f"<a href='{_esc(self.url)}/'>{_esc(self.url)}</a>")]
        if self._me:
            rows += [
                ("user", _esc(self._me["username"])),
                ("roles", _esc(", ".join(self._me["roles"]) or "none")),
                ("your scope", f"<code>{_esc(self._me['scope'])}*</code>"),
            ]
        return _table(rows, "DSS portal")


def _is_id(ref: Any) -> bool:
    return isinstance(ref, (int, Tags)) or (isinstance(ref, str) and ref.isdigit())


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class OutputFile:
    """One file of a dataset: logical name, GUID, size, adler32, events, tree, replicas
    (``storage_element``, ``url``, ``path``, ``state``)."""

    lfn: str
    guid: str
    bytes: int
    adler32: str
    events: int | None
    tree: str
    replicas: tuple[dict, ...] = field(repr=False, default=())

    @classmethod
    def from_api(cls, row: dict) -> OutputFile:
        return cls(
            lfn=row["lfn"],
            guid=str(row.get("guid") or ""),
            bytes=int(row.get("bytes") or 0),
            adler32=str(row.get("adler32") or ""),
            events=row.get("events"),
            tree=str(row.get("tree") or ""),
            replicas=tuple(row.get("replicas") or ()),
        )

    @property
    def checksum(self) -> str:
        """``adler32:<8 hex digits>``, as ``dmu checksum`` prints it."""
        return f"adler32:{self.adler32}"

    @property
    def urls(self) -> list[str]:
        """The URLs of the available replicas, local disks first, then XRootD, then web."""
        return [r["url"] for r in self._available()]

    @property
    def url(self) -> str | None:
        """The URL of the best available replica (None without one)."""
        urls = self.urls
        return urls[0] if urls else None

    def _available(self) -> list[dict]:
        found = [r for r in self.replicas if r.get("state", "available") == "available"]
        return sorted(found, key=lambda r: _SCHEME_ORDER.get(_scheme(r["url"]), 9))

    def as_dict(self) -> dict:
        """The file as the catalog lists it (what ``dmu get`` fetches)."""
        return {
            "lfn": self.lfn,
            "guid": self.guid,
            "bytes": self.bytes,
            "adler32": self.adler32,
            "events": self.events,
            "tree": self.tree,
            "replicas": list(self.replicas),
        }


class _FileList(list):
    def _repr_html_(self) -> str:
        head = "<tr><th>file</th><th>events</th><th>size</th><th>checksum</th><th>URL</th></tr>"
        rows = "".join(
            f"<tr><td>{_esc(f.lfn)}</td><td>{_esc(f'{f.events:,}' if f.events is not None else '?')}"
            f"</td><td>{_size(f.bytes)}</td><td><code>{_esc(f.checksum)}</code></td>"
            f"<td><code>{_esc(f.url or 'no replica')}</code></td></tr>"
            for f in self
        )
        return f"<table>{head}{rows}</table>"


class Dataset:
    """A dataset of the portal's catalog: ``name``, ``n_files``, ``events``, ``bytes``,
    ``description``; :meth:`files` lists its files, :meth:`tags` its TAG collection."""

    def __init__(self, portal: Portal, data: dict):
        self.portal = portal
        self.data = data
        self.name: str = data["name"]
        self.description: str = data.get("description") or ""
        files = data.get("files")
        self.n_files: int = data.get(
            "n_files", files if isinstance(files, int) else len(files or [])
        )
        self.events: int | None = data.get("events")
        self.bytes: int | None = data.get("bytes")

    def files(self) -> list[OutputFile]:
        """The dataset's files with their checksums and replicas."""
        rows = self.data.get("files")
        if not isinstance(rows, list):
            self.data = self.portal.api.request(
                "GET", f"/api/datasets/{quote(self.name, safe='')}/"
            )
            rows = self.data["files"]
        return _FileList(OutputFile.from_api(r) for r in rows)

    def tags(self) -> Tags:
        """The dataset's (newest ready) TAG collection."""
        return self.portal.tags(self.name)

    def __repr__(self) -> str:
        events = f"{self.events:,} events" if self.events is not None else "events unknown"
        return f"<Dataset {self.name}: {self.n_files} file(s), {events}, {_size(self.bytes)}>"

    def _repr_html_(self) -> str:
        return _table(
            [
                ("files", _esc(self.n_files)),
                ("events", _esc(f"{self.events:,}" if self.events is not None else "?")),
                ("size", _size(self.bytes)),
                ("description", _esc(self.description)),
            ],
            f"Dataset {_esc(self.name)}",
        )


class _DatasetList(list):
    def _repr_html_(self) -> str:
        head = "<tr><th>dataset</th><th>files</th><th>events</th><th>size</th></tr>"
        rows = "".join(
            f"<tr><td>{_esc(d.name)}</td><td>{d.n_files}</td>"
            f"<td>{_esc(f'{d.events:,}' if d.events is not None else '?')}</td>"
            f"<td>{_size(d.bytes)}</td></tr>"
            for d in self
        )
        return f"<table>{head}{rows}</table>" if self else "<em>no dataset matches</em>"


# --------------------------------------------------------------------------- TAG queries


class TagCount(int):
    """How many events pass a selection: an ``int`` that also knows ``total``,
    ``files_touched``, ``files_total``, the normalised ``selection``, ``warnings``,
    ``stale`` (None while the TAGs cover their dataset) and ``good_runs``."""

    answer: dict
    dataset: str

    def __new__(cls, answer: dict, dataset: str = "") -> TagCount:
        self = super().__new__(cls, int(answer["count"]))
        self.answer = answer
        self.dataset = dataset
        return self

    selection = property(lambda self: self.answer["selection"])
    total = property(lambda self: int(self.answer["total"]))
    files_touched = property(lambda self: int(self.answer["files_touched"]))
    files_total = property(lambda self: int(self.answer["files_total"]))
    warnings = property(lambda self: list(self.answer.get("warnings") or []))
    stale = property(lambda self: self.answer.get("stale"))
    good_runs = property(lambda self: self.answer.get("good_runs"))

    @property
    def fraction(self) -> float:
        """The passing fraction of the collection's events (0 when it has none)."""
        return int(self) / self.total if self.total else 0.0

    def _sentence(self) -> str:
        within = " within the good-run list" if self.good_runs else ""
        where = f" in {self.dataset}" if self.dataset else ""
        return (
            f"{int(self):,} of {self.total:,} events ({100 * self.fraction:.1f}%) pass "
            f"{self.selection or 'no selection'}{within}{where} "
            f"({self.files_touched} of {self.files_total} file(s))"
        )

    def __repr__(self) -> str:
        return self._sentence() + "".join(f"\nwarning: {w}" for w in self.warnings)

    __str__ = int.__repr__

    def _repr_html_(self) -> str:
        notes = "".join(f"<div style='color:#a40'>⚠ {_esc(w)}</div>" for w in self.warnings)
        return f"<div class='dss'><strong>{_esc(self._sentence())}</strong>{notes}</div>"


@dataclass
class Histogram:
    """An attribute's distribution under a selection, binned by the TAG DB.

    ``edges`` (``len(counts) + 1`` floats) and ``counts``; ``underflow``/``overflow``
    outside the edges, ``missing`` events without a value (in no bin), ``total`` passing
    events. :meth:`to_hist` gives a ``hist.Hist``, :meth:`to_numpy` ``(counts, edges)``
    arrays, :meth:`plot` draws it with matplotlib.
    """

    attribute: str
    unit: str
    selection: str
    edges: list[float]
    counts: list[int]
    underflow: int
    overflow: int
    missing: int
    total: int
    warnings: list[str] = field(default_factory=list)
    stale: dict | None = None
    good_runs: dict | None = None
    dataset: str = ""

    @classmethod
    def from_api(cls, h: dict, dataset: str = "") -> Histogram:
        return cls(
            attribute=h["attribute"],
            unit=h.get("unit") or "",
            selection=h.get("selection") or "",
            edges=[float(e) for e in h["edges"]],
            counts=[int(c) for c in h["counts"]],
            underflow=int(h.get("underflow") or 0),
            overflow=int(h.get("overflow") or 0),
            missing=int(h.get("missing") or 0),
            total=int(h["total"]),
            warnings=list(h.get("warnings") or []),
            stale=h.get("stale"),
            good_runs=h.get("good_runs"),
            dataset=dataset,
        )

    @property
    def label(self) -> str:
        """The axis label: the attribute and its unit."""
        return f"{self.attribute} [{self.unit}]" if self.unit else self.attribute

    def to_numpy(self) -> tuple[Any, Any]:
        """``(counts, edges)`` as numpy arrays, as ``numpy.histogram`` returns them."""
        (np,) = _need(["numpy"], "Histogram.to_numpy()")
        return np.asarray(self.counts, dtype=np.int64), np.asarray(self.edges, dtype=float)

    def to_hist(self) -> Any:
        """A ``hist.Hist`` with these bins and counts (flow bins: under- and overflow)."""
        (hist,) = _need(["hist"], "Histogram.to_hist()")
        h = hist.Hist(
            hist.axis.Variable(self.edges, name=self.attribute, label=self.label),
            storage=hist.storage.Int64(),
            label=self.selection or "all events",
        )
        h.view(flow=True)[...] = [self.underflow, *self.counts, self.overflow]
        return h

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Draw the histogram on ``ax`` (a new figure's axes by default) with matplotlib;
        returns the axes. ``kwargs`` go to ``Axes.stairs``."""
        if ax is None:
            (plt,) = _need(["matplotlib.pyplot"], "Histogram.plot()")
            _, ax = plt.subplots()
        self._draw(ax, **kwargs)
        return ax

    def _draw(self, ax: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fill", True)
        kwargs.setdefault("alpha", 0.7)
        ax.stairs(self.counts, self.edges, **kwargs)
        ax.set_xlabel(self.label)
        ax.set_ylabel("events")
        where = f"{self.dataset}: " if self.dataset else ""
        ax.set_title(f"{where}{self.selection or 'all events'}", fontsize="medium")

    def _svg(self) -> str | None:
        """The plot as inline SVG, when matplotlib is installed (no pyplot state)."""
        try:
            from io import StringIO

            from matplotlib.figure import Figure
        except ImportError:
            return None
        fig = Figure(figsize=(6, 3.5))
        self._draw(fig.subplots())
        fig.tight_layout()
        out = StringIO()
        fig.savefig(out, format="svg")
        return out.getvalue()

    def _facts(self) -> str:
        lo, hi = (self.edges[0], self.edges[-1]) if self.edges else (0.0, 0.0)
        text = (
            f"{self.attribute} for {self.selection or 'all events'}: {len(self.counts)} bins "
            f"in [{lo:.4g}, {hi:.4g}], {self.total:,} events"
        )
        extra = [
            f"{n:,} {what}"
            for n, what in (
                (self.underflow, "below"),
                (self.overflow, "above"),
                (self.missing, "without a value"),
            )
            if n
        ]
        return text + (f" ({', '.join(extra)})" if extra else "")

    def __repr__(self) -> str:
        return f"<Histogram {self._facts()}>" + "".join(f"\nwarning: {w}" for w in self.warnings)

    def _repr_html_(self) -> str:
        notes = "".join(f"<div style='color:#a40'>⚠ {_esc(w)}</div>" for w in self.warnings)
        picture = self._svg()
        if picture is None:
            picture = _table(
                (f"[{self.edges[i]:.4g}, {self.edges[i + 1]:.4g})", f"{c:,}")
                for i, c in enumerate(self.counts)
            )
        return f"<div class='dss'><strong>{_esc(self._facts())}</strong>{notes}{picture}</div>"


class Tags:
    """A TAG collection: one TAG row per event of a dataset, queried in the TAG DB.

    ``id``, ``dataset``, ``schema``, ``state``, ``n_events``, ``attributes`` (each with its
    ``name``, ``type``, ``unit``, ``description`` and range). Every query takes a selection
    (``"n_muon >= 2 && met > 40"``; empty: every event) and, optionally, ``good_runs``: a
    good-run list (XML or JSON text, a dict, or a ``pathlib.Path``).
    """

    def __init__(self, portal: Portal, data: dict):
        self.portal = portal
        self.data = data
        self.id: int = int(data["id"])
        self.dataset: str = data["dataset"]
        self.schema: str = data["schema"]
        self.state: str = data.get("state", "")
        self.n_events: int | None = data.get("n_events")

    @property
    def attributes(self) -> list[dict]:
        """The collection's attributes (fetched once)."""
        if "attributes" not in self.data:
            self.data = self.portal.api.request("GET", f"/api/tags/{self.id}")
        return list(self.data["attributes"])

    def _query(self, what: str, body: dict, good_runs: Any, *, warn: bool = True) -> dict:
        if good_runs is not None:
            body["good_runs"] = _good_runs(good_runs)
        answer = self.portal.api.request("POST", f"/api/tags/{self.id}/{what}", json=body)
        if warn:
            _warn(answer, stacklevel=4)
        return answer

    def count(self, selection: str = "", *, good_runs: Any = None) -> TagCount:
        """How many events pass ``selection`` (an ``int``, with the total and the files
        that hold them)."""
        return TagCount(self._query("count", {"selection": selection}, good_runs), self.dataset)

    def histogram(
        self,
        attribute: str,
        selection: str = "",
        *,
        bins: int | None = None,
        range: tuple[float, float] | None = None,  # noqa: A002 - numpy's name for it
        good_runs: Any = None,
    ) -> Histogram:
        """The distribution of ``attribute`` over the events passing ``selection``, counted
        in the TAG DB. ``bins`` (default: automatic) and ``range=(lo, hi)`` (default: the
        passing events' range) as numpy takes them."""
        body: dict[str, Any] = {"attribute": attribute, "selection": selection}
        if bins is not None:
            body["bins"] = bins
        if range is not None:
            body["lo"], body["hi"] = (float(x) for x in range)
        return Histogram.from_api(self._query("histogram", body, good_runs), self.dataset)

    def events(
        self,
        selection: str = "",
        *,
        attributes: Sequence[str] = (),
        good_runs: Any = None,
        limit: int | None = None,
        library: str = "pd",
    ) -> Any:
        """The passing events: file GUID, entry, run and event number, and the values of
        ``attributes`` (a missing value is None). ``library``: ``"pd"`` a pandas DataFrame,
        ``"arrow"`` a pyarrow Table, ``"python"`` a list of dicts; ``limit`` stops after
        that many."""
        if library not in ("pd", "pandas", "arrow", "pyarrow", "python"):
            raise errors.InvalidInput(
                f"library must be 'pd', 'arrow' or 'python', not {library!r}", where="library"
            )
        module = None
        if library in ("pd", "pandas"):
            (module,) = _need(["pandas"], "Tags.events(library='pd')")
        elif library in ("arrow", "pyarrow"):
            (module,) = _need(["pyarrow"], "Tags.events(library='arrow')")
        names = list(dict.fromkeys(attributes))
        good_runs = _good_runs(good_runs)
        rows: list[dict] = []
        offset: int | None = 0
        while offset is not None and (limit is None or len(rows) < limit):
            body: dict[str, Any] = {
                "selection": selection,
                "format": "json",
                "limit": EVENT_PAGE if limit is None else min(EVENT_PAGE, limit - len(rows)),
                "offset": offset,
                "attributes": names,
            }
            # every page's answer carries the same warnings: issue them once
            page = self._query("events", body, good_runs, warn=offset == 0)
            rows += page["events"]
            offset = page["next_offset"]
        columns = ["file_guid", "entry", "run", "event", *names]
        if library == "python":
            return rows
        if library in ("arrow", "pyarrow"):
            return (
                module.Table.from_pylist(rows) if rows else module.table({c: [] for c in columns})
            )
        return module.DataFrame.from_records(rows, columns=columns)

    def top(
        self, attribute: str, selection: str = "", *, n: int = 20, good_runs: Any = None
    ) -> list[dict]:
        """The ``n`` passing events with the largest ``attribute`` (rank, value, file GUID,
        entry, run, event)."""
        body = {"attribute": attribute, "selection": selection, "n": n}
        return self._query("top", body, good_runs)["events"]

    def files_touched(self, selection: str = "", *, good_runs: Any = None) -> dict:
        """How many of the dataset's files hold passing events, and which (GUID, name,
        events)."""
        return self._query("files-touched", {"selection": selection}, good_runs)

    def skim(self, selection: str = "", **options: Any) -> SkimJob:
        """Skim the events passing ``selection`` out of this collection's dataset (see
        :meth:`Portal.skim` for the options)."""
        return self.portal.skim(collections=[self], selection=selection, **options)

    def __repr__(self) -> str:
        events = f"{self.n_events:,} events" if self.n_events is not None else "no events yet"
        return f"<Tags #{self.id} {self.dataset} ({self.schema}): {events}, {self.state}>"

    def _repr_html_(self) -> str:
        rows = [
            ("dataset", _esc(self.dataset)),
            ("schema", _esc(f"{self.schema} v{self.data.get('schema_version', '?')}")),
            ("state", _esc(self.state)),
            ("events", _esc(f"{self.n_events:,}" if self.n_events is not None else "?")),
        ]
        if "attributes" in self.data:
            rows.append(
                (
                    "attributes",
                    ", ".join(
                        f"<code title='{_esc(a.get('description', ''))}'>{_esc(a['name'])}</code>"
                        for a in self.data["attributes"]
                    ),
                )
            )
        return _table(rows, f"TAG collection #{self.id}")


# --------------------------------------------------------------------------- skims


class _Progress:
    """A skim's progress bar (tqdm.auto: a widget in Jupyter, text elsewhere), or a line
    per change when tqdm is not installed."""

    def __init__(self, job: SkimJob, enabled: bool):
        self.job = job
        self.bar: Any = None
        self.last: tuple | None = None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        try:
            self.bar = tqdm(total=max(job.progress_total, 1), unit="ev", desc=f"skim #{job.id}")
        except ImportError:  # tqdm.auto in Jupyter without ipywidgets
            from tqdm.std import tqdm as text_tqdm

            self.bar = text_tqdm(
                total=max(job.progress_total, 1), unit="ev", desc=f"skim #{job.id}"
            )

    def update(self) -> None:
        job = self.job
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.total = max(job.progress_total, 1)
            self.bar.n = job.progress_done
            self.bar.set_postfix_str(job.state, refresh=False)
            self.bar.refresh()
        elif (job.state, job.progress_done) != self.last:
            print(
                f"skim #{job.id}: {job.state} {job.progress_done:,}/{job.progress_total:,} events",
                file=sys.stderr,
            )
            self.last = (job.state, job.progress_done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SkimJob:
    """A skim on the portal: its ``state`` (queued, running, succeeded, partial, failed,
    cancelled), ``progress_done`` of ``progress_total`` selected events written so far,
    ``events_selected`` and
    ``events_written``, ``message``, ``output_name`` and, once it has ended well,
    ``output_dataset``. The attributes are those of the last :meth:`refresh` (or wait).

    ``await job`` (in Jupyter, or any asyncio code) waits as :meth:`wait` does without
    blocking the event loop, so ``await asyncio.gather(job1, job2)`` waits for both.
    """

    def __init__(self, portal: Portal, data: dict):
        self.portal = portal
        self.data: dict = {}
        self._update(data)

    def _update(self, data: dict) -> None:
        if "parts" not in data and "parts" in self.data:
            data = {**data, "parts": self.data["parts"]}
        self.data = data
        self.id: int = int(data["id"])

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data") or {}
        if name in _JOB_FIELDS and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def done(self) -> bool:
        """Whether the skim has ended (succeeded, partial, failed or cancelled)."""
        return self.data.get("state") in FINAL_STATES

    @property
    def parts(self) -> list[dict]:
        """One entry per input file: its state, events written, output file and message."""
        return list(self.data.get("parts") or [])

    @property
    def provenance_id(self) -> int | None:
        """The number of the skim's provenance record (once it has ended)."""
        return self.data.get("provenance")

    def refresh(self) -> SkimJob:
        """Ask the portal for the skim's state now; returns the job."""
        self._update(self.portal.api.request("GET", f"/api/skims/{self.id}/"))
        return self

    # -- waiting ------------------------------------------------------------------------

    def wait(
        self, *, progress: bool = False, timeout: float | None = None, interval: float | None = None
    ) -> SkimJob:
        """Wait until the skim ends; returns the job. ``progress=True`` shows a progress
        bar (a widget in Jupyter). A failed or cancelled skim raises :class:`SkimFailed`, a
        partial one issues a :class:`DSSWarning`; ``timeout`` (seconds) raises
        :class:`StillRunning` while the skim goes on."""
        interval = self.portal.poll_interval if interval is None else interval
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _Progress(self, progress)
        try:
            while True:
                self.refresh()
                bar.update()
                if self.done:
                    break
                self._check_deadline(deadline, timeout)
                time.sleep(interval)
        finally:
            bar.close()
        return self._outcome()

    async def wait_async(
        self, *, progress: bool = False, timeout: float | None = None, interval: float | None = None
    ) -> SkimJob:
        """:meth:`wait` for asyncio: the requests run in a thread, the waits are
        ``asyncio.sleep``, so other tasks (and Jupyter) go on meanwhile."""
        interval = self.portal.poll_interval if interval is None else interval
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _Progress(self, progress)
        try:
            while True:
                await asyncio.to_thread(self.refresh)
                bar.update()
                if self.done:
                    break
                self._check_deadline(deadline, timeout)
                await asyncio.sleep(interval)
        finally:
            bar.close()
        return self._outcome()

    def __await__(self):
        return self.wait_async().__await__()

    def _check_deadline(self, deadline: float | None, timeout: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise StillRunning(
                f"skim #{self.id} is still {self.state} after {timeout:g} s; it goes on on "
                "the portal (wait again, or cancel it)",
                where=f"skim {self.id}",
            )

    def _outcome(self) -> SkimJob:
        if self.state in ("failed", "cancelled"):
            raise SkimFailed(self)
        if self.state == "partial":
            warnings_module.warn(
                f"skim #{self.id} ended partial: {self.message or 'some files failed'}",
                DSSWarning,
                stacklevel=3,
            )
        return self

    # -- changing it --------------------------------------------------------------------

    def cancel(self) -> SkimJob:
        """Cancel the skim: queued parts never start, running ones stop within seconds and
        its stored outputs are removed. Returns the job."""
        self._update(self.portal.api.request("POST", f"/api/skims/{self.id}/cancel/"))
        return self.refresh()

    def retry(self) -> SkimJob:
        """Run again every file of an ended, unsuccessful skim whose output is not stored
        whole and verified; then wait for it as before. Returns the job."""
        self._update(self.portal.api.request("POST", f"/api/skims/{self.id}/retry/"))
        return self.refresh()

    def rerun(self, output: str | None = None) -> SkimJob:
        """A new skim from this one's provenance record that selects the same events
        (into ``output``, default ``<name>_rerunN`` in your scope; needs the operator
        role). Returns the new job."""
        body = {"output_name": output} if output else {}
        answer = self.portal.api.request(
            "POST", f"/api/provenance/{self._record()}/rerun/", json=body
        )
        return SkimJob(self.portal, answer)

    # -- its output ---------------------------------------------------------------------

    def _require_output(self) -> str:
        if not self.done:
            self.refresh()
        if self.state in ("failed", "cancelled"):
            raise SkimFailed(self)
        if not self.done or not self.data.get("output_dataset"):
            raise NotReady(
                f"skim #{self.id} is {self.state}: its output is not registered yet "
                "(job.wait() or await job first)",
                where=f"skim {self.id}",
            )
        return self.data["output_dataset"]

    def files(self) -> list[OutputFile]:
        """The output dataset's files: name, GUID, size, adler32, events and replica URLs."""
        return self.portal.dataset(self._require_output()).files()

    def download(self, dest: str | os.PathLike | None = None) -> list[Path]:
        """Copy the output files into ``dest`` (default: the cache directory, see
        :func:`cache_dir`, under the dataset's name), each verified against the catalog's
        adler32 and size, as ``dmu get`` does; a file already there with the right content
        is not copied again, a damaged one is replaced. Returns the local paths."""
        return self._download(self.files(), dest)

    def _download(self, files: Sequence[OutputFile], dest: str | os.PathLike | None) -> list[Path]:
        from dmu.cli import fetch_file

        dataset = self._require_output()
        target_dir = (Path(dest) if dest is not None else cache_dir() / dataset).resolve()
        target_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in files:
            target = target_dir / _local_name(f.lfn)
            # overwrite: a cached copy that differs from the catalog is damaged, not another file
            fetch_file(f.as_dict(), str(target), overwrite=True)
            paths.append(target)
        return paths

    def _sources(self, via: str, cache: str | os.PathLike | None) -> list[tuple[str, OutputFile]]:
        """Where to read each output file from: a local path, or a URL to stream."""
        if via not in ("auto", "stream", "download"):
            raise errors.InvalidInput(
                f"via must be 'auto', 'stream' or 'download', not {via!r}", where="via"
            )
        files = self.files()
        if via == "download":
            return list(zip(map(str, self._download(files, cache)), files, strict=True))
        found: list[tuple[str, OutputFile]] = []
        fetch: list[OutputFile] = []
        for f in files:
            source = _readable_source(f, strict=via == "stream")
            if source is None:
                fetch.append(f)
            else:
                found.append((source, f))
        if fetch:
            found += list(zip(map(str, self._download(fetch, cache)), fetch, strict=True))
        order = {f.lfn: i for i, f in enumerate(files)}
        return sorted(found, key=lambda pair: order[pair[1].lfn])

    def to_awkward(
        self,
        branches: Sequence[str] | None = None,
        *,
        via: str = "auto",
        cache: str | os.PathLike | None = None,
    ) -> Any:
        """The output events as one awkward array (all files, in order), read with uproot
        (ROOT) or pyarrow (Parquet). ``branches``: names or patterns (default: all).

        ``via``: ``"auto"`` reads a replica on a local disk where it is, streams one on
        XRootD through fsspec-xrootd when that is installed, and else downloads;
        ``"stream"`` reads from the best replica's URL; ``"download"`` copies the files
        into ``cache`` (default: :func:`cache_dir`) with checksum verification first.
        """
        ak, _ = _need(["awkward", "uproot"], "job.to_awkward()")
        from dmu.eventfiles import open_event_file

        arrays = []
        for source, f in self._sources(via, cache):
            with open_event_file(source, where=f.lfn) as opened:
                tree = opened.tree(f.tree or None)
                arrays.append(tree.arrays(_match_branches(tree.keys(), branches, f.lfn)))
        if not arrays:
            return ak.Array([])
        return arrays[0] if len(arrays) == 1 else ak.concatenate(arrays)

    def to_arrow(
        self,
        branches: Sequence[str] | None = None,
        *,
        via: str = "auto",
        cache: str | os.PathLike | None = None,
    ) -> Any:
        """The output events as a pyarrow Table, one row per event (list branches as
        list columns). Options as for :meth:`to_awkward`."""
        ak, _ = _need(["awkward", "pyarrow"], "job.to_arrow()")
        return ak.to_arrow_table(
            self.to_awkward(branches, via=via, cache=cache), extensionarray=False
        )

    def to_pandas(
        self,
        branches: Sequence[str] | None = None,
        *,
        via: str = "auto",
        cache: str | os.PathLike | None = None,
    ) -> Any:
        """The output events as a pandas DataFrame, one row per event (a list branch holds
        an array per row). Options as for :meth:`to_awkward`."""
        _need(["pandas", "pyarrow"], "job.to_pandas()")
        return self.to_arrow(branches, via=via, cache=cache).to_pandas()

    def to_dask(
        self,
        branches: Sequence[str] | None = None,
        *,
        via: str = "auto",
        cache: str | os.PathLike | None = None,
    ) -> Any:
        """The output events as a lazy dask-awkward array, one partition per file or more:
        ``uproot.dask`` for ROOT files, ``dask_awkward.from_parquet`` for Parquet. Nothing
        is read until ``.compute()``. Options as for :meth:`to_awkward`."""
        _need(["dask_awkward", "uproot"], "job.to_dask()")
        import dask_awkward
        import uproot

        from dmu.eventfiles import open_event_file

        sources = self._sources(via, cache)
        if not sources:
            raise NotReady(f"skim #{self.id} wrote no files", where=f"skim {self.id}")
        first, f0 = sources[0]
        with open_event_file(first, where=f0.lfn) as opened:
            tree = opened.tree(f0.tree or None)
            names = _match_branches(tree.keys(), branches, f0.lfn)
        if self.output_format == "parquet":
            return dask_awkward.from_parquet([s for s, _ in sources], columns=names)
        files = {s: (f.tree or "events") for s, f in sources}
        return uproot.dask(files, filter_name=names, open_files=False)

    # -- provenance ---------------------------------------------------------------------

    def _record(self) -> int:
        if self.provenance_id is None:
            self.refresh()
        if self.provenance_id is None:
            raise NotReady(
                f"skim #{self.id} has no provenance record yet (it is {self.state})",
                where=f"skim {self.id}",
            )
        return int(self.provenance_id)

    def provenance(self, format: str = "json") -> dict:
        """The skim's provenance record: who ran it, inputs (files, GUIDs, checksums),
        selection (as typed, normalised, as a tree), options, outputs, software, workers
        and timing. ``format="prov-json"`` gives it as W3C PROV-JSON. Reading provenance
        needs the operator role; without it the portal answers :class:`Forbidden`."""
        if format not in ("json", "prov-json"):
            raise errors.InvalidInput(
                f"format must be 'json' or 'prov-json', not {format!r}", where="format"
            )
        return self.portal.api.request(
            "GET", f"/api/provenance/{self._record()}/", params={"export": format}
        )

    # -- display ------------------------------------------------------------------------

    def _progress_text(self) -> str:
        return (
            f"{self.data.get('percent', 0)}% ({self.data.get('progress_done', 0):,}/"
            f"{self.data.get('progress_total', 0):,} events)"
        )

    def __repr__(self) -> str:
        state = self.data.get("state", "?")
        text = (
            f"<SkimJob #{self.id} {state} {self._progress_text()} → {self.data.get('output_name')}"
        )
        if self.done:
            text += f": {self.data.get('events_written', 0):,} of {self.data.get('events_selected', 0):,} events written"
        if self.data.get("message") and state != "succeeded":
            text += f" — {self.data['message']}"
        return text + ">"

    def _repr_html_(self) -> str:
        d = self.data
        colour = {"succeeded": "#070", "partial": "#a60", "failed": "#a00", "cancelled": "#666"}
        state = f"<strong style='color:{colour.get(d.get('state'), '#036')}'>{_esc(d.get('state'))}</strong>"
        bar = (
            f"<progress value='{int(d.get('progress_done') or 0)}' "
            f"max='{max(int(d.get('progress_total') or 0), 1)}'></progress> {_esc(self._progress_text())}"
        )
        inputs = ", ".join(i["dataset"] for i in d.get("inputs") or [])
        rows = [
            ("state", state),
            ("progress", bar),
            ("inputs", _esc(inputs)),
            ("selection", f"<code>{_esc(d.get('selection', ''))}</code>"),
            (
                "events",
                _esc(
                    f"{d.get('events_written', 0):,} written of {d.get('events_selected', 0):,} selected"
                ),
            ),
            (
                "output",
                _esc(f"{d.get('output_name')} ({d.get('output_format')}) on {d.get('output_se')}"),
            ),
        ]
        if d.get("message"):
            rows.append(("message", _esc(d["message"])))
        parts = d.get("parts") or []
        if parts:
            counts: dict[str, int] = {}
            for p in parts:
                counts[p["state"]] = counts.get(p["state"], 0) + 1
            rows.append(("files", _esc(", ".join(f"{n} {s}" for s, n in counts.items()))))
        return _table(rows, f"Skim #{self.id}")


_JOB_FIELDS = frozenset(
    [
        "state",
        "percent",
        "progress_done",
        "progress_total",
        "events_selected",
        "events_written",
        "message",
        "inputs",
        "selection",
        "selection_normalised",
        "branches",
        "preset",
        "output_format",
        "output_name",
        "output_se",
        "event_limit",
        "good_runs",
        "failure_policy",
        "output_dataset",
        "owner",
        "created_at",
        "started_at",
        "finished_at",
    ]
)


# --------------------------------------------------------------------------- reading outputs


def cache_dir() -> Path:
    """Where downloaded outputs go: ``DSS_CACHE_DIR``, else ``$XDG_CACHE_HOME/dss``, else
    ``~/.cache/dss``; one folder per dataset inside."""
    if os.environ.get("DSS_CACHE_DIR"):
        return Path(os.environ["DSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dss"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _local_name(lfn: str) -> str:
    """A file's logical name as a file name in a local folder: a name from the portal
    is still checked, so that it cannot point outside that folder."""
    name = os.path.basename(lfn)
    if name != lfn or name in ("", ".", "..") or "\\" in name or "\0" in name:
        raise errors.InvalidInput(f"not a plain file name: {lfn!r}", where=lfn)
    return name


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _readable_source(f: OutputFile, *, strict: bool) -> str | None:
    """A local path or URL to read ``f`` from without copying it, or None (download it).
    ``strict``: the best replica or an error (``via="stream"``)."""
    replicas = f._available()
    if not replicas:
        raise NotFound(f"no available replica of {f.lfn}", where=f.lfn)
    for r in replicas:
        scheme = _scheme(r["url"])
        if scheme == "file":
            path = unquote(urlsplit(r["url"]).path)
            if os.path.isfile(path):
                return path
            if strict and r is replicas[0]:
                raise NotFound(
                    f"{path} is not on this machine (a replica on another machine's disk)",
                    where=f.lfn,
                )
        elif scheme in ("root", "xroot"):
            if _has_module("fsspec_xrootd"):
                return r["url"]
            if strict:
                raise MissingExtra(
                    f"reading {r['url']} needs fsspec-xrootd and xrootd: "
                    + EXTRA_HINT.format(extra="xrootd")
                )
        elif scheme in ("http", "https"):
            return r["url"]
    return None


def _match_branches(
    available: Sequence[str], wanted: Sequence[str] | None, where: str
) -> list[str] | None:
    """The branches named or matched (``Muon_*``) by ``wanted``, in the file's order; None
    for all. A name or pattern that matches nothing is an error naming the branches."""
    if wanted is None:
        return None
    if isinstance(wanted, str):
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    chosen: set[str] = set()
    for pattern in wanted:
        hits = [b for b in available if fnmatch.fnmatchcase(b, pattern)]
        if not hits:
            raise errors.InvalidInput(
                f"no branch matches {pattern!r} (branches: {', '.join(available)})", where=where
            )
        chosen.update(hits)
    return [b for b in available if b in chosen]
