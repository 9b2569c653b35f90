"""TAG operations: the TAG DB connection, schemas, building collections, and queries."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from sqlalchemy.pool import NullPool

from dmu.actions import get_dataset
from dmu.models import Dataset, File, ReplicaState
from dss.errors import BadEventFile, Conflict, DSSError, InvalidInput, NotFound, StorageError
from dss.jobs import FINAL_STATES, JobState

from .models import CollectionState, SavedQuery, TagBuild, TagCollection, TagSchema
from .schema import Schema, auto_schema, compute_tags, load_schema
from .selection import INT, Node, check, normalise, parse, parse_good_run_list, suggest
from .store import EventRef, Histogram, TagStore

log = logging.getLogger(__name__)

# Entries computed per uproot read while tagging one file (bounds a worker's memory).
FILE_CHUNK_ENTRIES = 500_000
# How long a query waits for another process to release an embedded (DuckDB) TAG DB file.
BUSY_TIMEOUT_S = float(os.environ.get("DSS_TAGDB_BUSY_TIMEOUT", "20"))


class TagDBBusy(DSSError):
    """The embedded TAG DB file stayed locked by another process (a build is loading it)."""

    code = "tagdb_busy"
    exit_code = 8


# --------------------------------------------------------------------------- the TAG DB

_stores: dict[str, TagStore] = {}
_stores_lock = threading.Lock()


def _wait_for_duckdb_lock(engine: sa.Engine, url: str) -> None:
    """Retry opening a DuckDB file that another process holds, for BUSY_TIMEOUT_S.

    DuckDB lets one process at a time open a file read-write; the web process and the
    Celery workers take turns, each closing its connection after every operation.
    """
    import duckdb

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.02
        while True:
            try:
                return dialect.connect(*cargs, **dict(cparams))
            except duckdb.Error as exc:
                if "Could not set lock" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise TagDBBusy(
                        f"the TAG DB is busy: another process (a TAG build) has held it for "
                        f"{BUSY_TIMEOUT_S:.0f} s; try again in a moment",
                        where=sa.engine.make_url(url).database or "",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)


def _open_store(url: str) -> TagStore:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "duckdb":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # No pool: a connection that stays open would keep the file locked for this process.
        engine = sa.create_engine(url, poolclass=NullPool)
        _wait_for_duckdb_lock(engine, url)
        return TagStore(engine)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return TagStore(url, pool_pre_ping=True)


def get_store() -> TagStore:
    """The TAG store at ``settings.TAGDB_URL``: one per process (and URL)."""
    url = settings.TAGDB_URL
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = _open_store(url)
        return store


def _forget_pools_after_fork() -> None:
    # A forked Celery child must not share its parent's pooled sockets.
    for store in _stores.values():
        store.engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_after_fork)


# --------------------------------------------------------------------------- selections


@lru_cache(maxsize=64)
def _parsed_schema(definition: str) -> Schema:
    return load_schema(definition)


def collection_schema(collection: TagCollection) -> Schema:
    """The parsed schema of ``collection`` (cached by its definition text)."""
    return _parsed_schema(collection.schema.definition)


def attribute_types(collection: TagCollection) -> dict[str, str]:
    """Every name a selection on ``collection`` may use (run/lumi/event numbers and the
    schema's attributes), with its type. Needs no TAG DB access."""
    return collection_schema(collection).attribute_types()


def check_selection(collection: TagCollection, text: str) -> tuple[Node, str]:
    """Parse ``text`` and type-check it against ``collection``'s attributes.

    Returns the typed tree and the selection's normal form; raises
    :class:`tagdb.selection.SelectionError` naming the column of the bad token.
    """
    tree = check(parse(text), attribute_types(collection))
    return tree, normalise(tree)


def _all_events_or(collection: TagCollection, text: str | None) -> tuple[Node | None, str]:
    """A query's tree: blank text selects every event (None)."""
    if text is None or not str(text).strip():
        return None, ""
    return check_selection(collection, str(text))


def good_run_selection(collection: TagCollection, good_runs: str | bytes | dict) -> str:
    """The selection text that keeps the runs and luminosity blocks of a good-run list
    (``{"run": [[first, last], ...]}``). A collection without luminosity-block numbers
    keeps the listed runs whole. Raises InvalidInput for a bad list or a collection
    without run numbers."""
    grl = parse_good_run_list(good_runs)
    numbering = collection_schema(collection).numbering()
    if "run" not in numbering:
        raise InvalidInput(
            f"{collection} has no run numbers, so a good-run list cannot select from it",
            where="good-run list",
        )
    if not grl.runs:
        raise InvalidInput("the good-run list names no runs", where="good-run list")
    if "lumi" not in numbering:
        return f"run in [{', '.join(str(run) for run in sorted(grl.runs))}]"
    parts = []
    for run, blocks in sorted(grl.runs.items()):
        items = ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in blocks)
        parts.append(f"run == {run} && lumi in [{items}]")
    return " || ".join(parts)


def combine_selections(selection: str, extra: str) -> str:
    """``selection && extra``, either of them possibly blank."""
    selection, extra = (selection or "").strip(), (extra or "").strip()
    if not selection:
        return extra
    if not extra:
        return selection
    return f"({selection}) && ({extra})"


def query_selection(
    collection: TagCollection, selection: str | None, good_runs: Any = None
) -> tuple[Node | None, str]:
    """The tree and normal form of ``selection`` (blank: every event), narrowed to a
    good-run list when one is given."""
    if good_runs not in (None, "", {}):
        selection = combine_selections(selection or "", good_run_selection(collection, good_runs))
    return _all_events_or(collection, selection)


# --------------------------------------------------------------------------- schemas

BUILTIN_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def sync_builtin_schemas() -> tuple[list[TagSchema], list[str]]:
    """Record every schema file shipped in ``tagdb/schemas/`` as a TagSchema row at the
    version the file names. Returns the rows and, for a file whose attributes changed
    without a new version, a message saying so (the stored row is kept: collections
    built with it must still mean what they meant)."""
    rows, problems = [], []
    for path in sorted(BUILTIN_SCHEMA_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        schema = load_schema(text)
        row, created = TagSchema.objects.get_or_create(
            name=schema.name,
            version=schema.version,
            defaults={"tree": schema.tree, "description": schema.description, "definition": text},
        )
        if not created and row.definition != text:
            if _parsed_schema(row.definition).to_dict() != schema.to_dict():
                problems.append(
                    f"{path.name}: its attributes differ from the stored schema "
                    f"{schema.name} v{schema.version}; give the file a new version"
                )
        rows.append(row)
    return rows, problems


def _ensure_builtin_schemas() -> None:
    # Two lookups; cheap enough to do whenever schemas are listed, so that a fresh or
    # flushed portal DB always has the builtin ones.
    _, problems = sync_builtin_schemas()
    for problem in problems:
        log.warning("TAG schema: %s", problem)


def list_schemas():
    """Every TAG schema row, builtin ones recorded first if they were not yet."""
    _ensure_builtin_schemas()
    return TagSchema.objects.all()


def latest_schemas() -> list[TagSchema]:
    """The newest version of each named schema, builtin and automatic."""
    newest: dict[str, TagSchema] = {}
    for row in list_schemas().order_by("name", "-version"):
        newest.setdefault(row.name, row)
    return list(newest.values())


def get_schema(name: str, version: int | None = None) -> TagSchema:
    """The schema called ``name`` (its newest version unless ``version`` is given)."""
    rows = list_schemas().filter(name=name)
    if version is not None:
        rows = rows.filter(version=version)
    row = rows.order_by("-version").first()
    if row is None:
        known = sorted({r.name for r in latest_schemas()})
        raise NotFound(
            f"no TAG schema named {name!r}{suggest(name, known)}"
            + (f" with version {version}" if version is not None else ""),
            where="schema",
        )
    return row


@contextmanager
def open_event_tree(file: File, tree: str | None = None) -> Iterator[Any]:
    """The event tree of one dataset file, read from an available replica: through the
    local file system for a file:// storage element, else by URL (root://, https://).
    Raises StorageError when no replica is available, BadEventFile when it cannot be read."""
    import uproot

    replicas = sorted(
        (r for r in file.replicas.all() if r.state == ReplicaState.AVAILABLE),
        key=lambda r: not r.storage_element.url.startswith("file://"),
    )
    if not replicas:
        raise StorageError(f"file {file.lfn} has no available replica", where=file.lfn)
    replica = replicas[0]
    # through the endpoint: its checks (symbolic links, allowed hosts) apply to builds too
    endpoint = replica.storage_element.endpoint()
    source = endpoint.local_path(replica.path) or endpoint.url(replica.path)
    name = tree or file.tree
    try:
        handle = uproot.open(source)
    except FileNotFoundError:
        raise StorageError(
            f"replica of {file.lfn} on {replica.storage_element.name} is missing ({source})",
            where=file.lfn,
        ) from None
    except Exception as exc:  # uproot raises many types for damaged or unreachable input
        raise BadEventFile(f"cannot open {source}: {exc}", where=file.lfn) from None
    try:
        try:
            event_tree = handle[name]
        except Exception:
            raise BadEventFile(f"has no tree '{name}'", where=file.lfn) from None
        yield event_tree
    finally:
        handle.close()


def _schema_fits(schema: Schema, branches: set[str]) -> bool:
    return set(schema.branches()) <= branches


def do_auto_schema(dataset: Dataset) -> TagSchema:
    """The automatic schema of ``dataset``'s tree (every flat numeric branch, the count of
    every list branch), recorded as ``auto_<dataset>`` with a new version whenever the
    branches differ from the newest one."""
    first = _first_file(dataset)
    name = "auto_" + re.sub(r"[^a-z0-9]+", "_", dataset.name.lower()).strip("_")[:50]
    with open_event_tree(first) as tree:
        schema = auto_schema(tree, name=name)
    newest = TagSchema.objects.filter(name=name).order_by("-version").first()
    if newest is not None and _parsed_schema(newest.definition).attributes == schema.attributes:
        return newest
    version = newest.version + 1 if newest else 1
    data = schema.to_dict() | {"version": version}
    data["description"] = f"Every numeric branch of {dataset.name}'s tree '{schema.tree}'"
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    row, _ = TagSchema.objects.get_or_create(
        name=name,
        version=version,
        defaults={
            "tree": schema.tree,
            "description": data["description"],
            "definition": text,
            "automatic": True,
        },
    )
    return row


def schema_for_dataset(dataset: Dataset) -> TagSchema:
    """The schema to tag ``dataset`` with: the newest builtin schema whose tree and
    branches its first file has, else the dataset's automatic schema."""
    first = _first_file(dataset)
    with open_event_tree(first) as tree:
        branches = set(tree.keys())
        tree_name = tree.name
    for row in latest_schemas():
        if row.automatic or row.tree != tree_name:
            continue
        if _schema_fits(_parsed_schema(row.definition), branches):
            return row
    return do_auto_schema(dataset)


# --------------------------------------------------------------------------- collections


def _first_file(dataset: Dataset) -> File:
    first = dataset.files.prefetch_related("replicas__storage_element").order_by("lfn").first()
    if first is None:
        raise InvalidInput(
            f"dataset {dataset.name} has no files to build TAGs from", where=dataset.name
        )
    return first


def get_collection(pk: int | str) -> TagCollection:
    """A TAG collection by its number; NotFound names it."""
    try:
        return TagCollection.objects.select_related("dataset", "schema").get(pk=int(pk))
    except (TagCollection.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"no TAG collection number {pk}", where="collection") from None


def find_collection(ref: str) -> TagCollection:
    """A collection by number, or by dataset name (its newest schema's collection), or by
    ``dataset/schema``: what the command line accepts."""
    ref = str(ref).strip()
    if ref.isdigit():
        return get_collection(ref)
    dataset_name, _, schema_name = ref.partition("/")
    rows = TagCollection.objects.select_related("dataset", "schema").filter(
        dataset__name=dataset_name
    )
    if schema_name:
        rows = rows.filter(schema__name=schema_name)
    row = rows.order_by("-built_at", "-schema__version").first()
    if row is None:
        raise NotFound(f"no TAG collection of {ref!r}", where="collection")
    return row


def get_or_create_collection(dataset: Dataset, schema: TagSchema) -> TagCollection:
    """``dataset``'s collection under ``schema`` (made empty if it did not exist)."""
    collection, _ = TagCollection.objects.select_related("dataset", "schema").get_or_create(
        dataset=dataset, schema=schema
    )
    return collection


def collections_for_dataset(dataset: Dataset) -> list[TagCollection]:
    """``dataset``'s collections, each with ``latest_build`` (or None)."""
    rows = list(dataset.tag_collections.select_related("schema").order_by("schema__name"))
    latest: dict[int, TagBuild] = {}
    for build in TagBuild.objects.filter(collection__in=rows).order_by("-created_at"):
        latest.setdefault(build.collection_id, build)
    for row in rows:
        row.latest_build = latest.get(row.pk)
    return rows


def list_collections():
    """Every TAG collection with its dataset and schema (one query)."""
    return TagCollection.objects.select_related("dataset", "schema").order_by(
        "dataset__name", "schema__name", "-schema__version"
    )


def active_build(collection: TagCollection) -> TagBuild | None:
    """The build of ``collection`` still queued or running, if any."""
    return collection.builds.exclude(state__in=FINAL_STATES).order_by("-created_at").first()


def active_builds():
    """Every TAG build still queued or running."""
    return TagBuild.objects.exclude(state__in=FINAL_STATES)


def get_build(pk: int | str) -> TagBuild:
    try:
        return TagBuild.objects.select_related(
            "collection__dataset", "collection__schema", "owner"
        ).get(pk=int(pk))
    except (TagBuild.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"no TAG build number {pk}", where="build") from None


# --------------------------------------------------------------------------- building


def scratch_dir(build: TagBuild) -> Path:
    """Where the build's per-file TAGs wait for the publishing step (shared by workers)."""
    return Path(settings.DSS_SCRATCH_DIR) / "tagbuilds" / str(build.pk)


def _build_files(dataset: Dataset) -> list[File]:
    files = list(dataset.files.order_by("lfn"))
    if not files:
        raise InvalidInput(
            f"dataset {dataset.name} has no files to build TAGs from", where=dataset.name
        )
    seen: dict[str, str] = {}
    for f in files:
        guid = str(f.guid)
        if guid in seen:
            raise InvalidInput(
                f"files {seen[guid]} and {f.lfn} have the same GUID {guid}; TAG rows point at "
                "events by GUID, so the dataset must not hold the same file twice",
                where=dataset.name,
            )
        seen[guid] = f.lfn
    return files


def _new_build(dataset: Dataset, schema: TagSchema, user: Any) -> TagBuild:
    """Create the collection if needed and a queued build of it (in the caller's
    transaction); Conflict if one is already under way."""
    files = _build_files(dataset)
    collection, _ = TagCollection.objects.get_or_create(dataset=dataset, schema=schema)
    collection = TagCollection.objects.select_for_update().get(pk=collection.pk)
    running = active_build(collection)
    if running is not None:
        raise Conflict(
            f"the TAGs of {collection} are already being built (build #{running.pk})",
            where=str(collection),
        )
    build = TagBuild.objects.create(
        collection=collection,
        owner=user if getattr(user, "is_authenticated", False) else None,
        progress_total=len(files),
        file_ids=[f.pk for f in files],
    )
    if collection.state != CollectionState.READY:
        collection.state = CollectionState.BUILDING
        collection.save(update_fields=["state"])
    build.log("queued", f"{len(files)} file(s) of {dataset.name} with schema {schema}")
    return build


def do_start_build(dataset: Dataset, schema: TagSchema | None, user: Any = None) -> TagBuild:
    """Queue a (re)build of ``dataset``'s TAGs under ``schema`` (the fitting one when
    None): one Celery task per file, then a publishing step. The collection's previous
    TAGs stay queryable until the new ones replace them in one step."""
    from .tasks import build_file

    if schema is None:
        schema = schema_for_dataset(dataset)
    with transaction.atomic():
        build = _new_build(dataset, schema, user)
        build_id, file_ids = build.pk, list(build.file_ids)
        transaction.on_commit(lambda: [build_file.delay(build_id, fid) for fid in file_ids])
    return build


def do_tag_file(build: TagBuild, file: File) -> int:
    """Compute the TAGs of one file column-wise and leave them in the build's scratch
    folder (written under a temporary name, then renamed). Returns the file's events."""
    schema = collection_schema(build.collection)
    parts: list[dict[str, np.ndarray]] = []
    with open_event_tree(file, schema.tree) as tree:
        n = int(tree.num_entries)
        for start in range(0, max(n, 1), FILE_CHUNK_ENTRIES):
            parts.append(compute_tags(schema, tree, start, min(n, start + FILE_CHUNK_ENTRIES)))
    tags = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    folder = scratch_dir(build)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{file.guid}.npz"
    partial = folder / f".{file.guid}.{os.getpid()}.part"
    with open(partial, "wb") as fh:
        np.savez(fh, **tags)
    again = final.exists()  # a task that runs twice must not count its events twice
    os.replace(partial, final)
    if not again:
        TagBuild.objects.filter(pk=build.pk).update(n_events=F("n_events") + n)
    return n


def discard_scratch(build: TagBuild) -> None:
    """Remove the build's per-file TAGs."""
    shutil.rmtree(scratch_dir(build), ignore_errors=True)


def file_failure(file: File, exc: Exception) -> str:
    """Why a build failed on ``file``, naming the file."""
    if isinstance(exc, DSSError):
        return f"file {file.lfn}: {exc}"
    return f"file {file.lfn}: internal error: {type(exc).__name__}: {exc}"


def publish_failure(exc: Exception) -> str:
    """Why loading a build into the TAG DB failed."""
    if isinstance(exc, DSSError):
        return f"loading into the TAG DB failed: {exc}"
    return f"loading into the TAG DB failed: internal error: {type(exc).__name__}: {exc}"


def record_file_done(build: TagBuild) -> int:
    """Count the files whose TAGs are in the scratch folder, record it as the build's
    progress, and return it. Counting files (not incrementing) keeps a task that runs
    twice from counting its file twice."""
    done = len(list(scratch_dir(build).glob("*.npz")))
    TagBuild.objects.filter(pk=build.pk, progress_done__lt=done).update(progress_done=done)
    build.progress_done = max(build.progress_done, done)
    return done


def _settle_collection(collection: TagCollection, failed: bool = True) -> None:
    """After a build that did not publish: the old TAGs (if any) are still there."""
    collection.refresh_from_db(fields=["built_at"])
    if collection.built_at:
        state = CollectionState.READY
    else:
        state = CollectionState.FAILED if failed else CollectionState.EMPTY
    TagCollection.objects.filter(pk=collection.pk).update(state=state)
    collection.state = state


def do_fail_build(build: TagBuild, message: str) -> bool:
    """End ``build`` as failed with ``message``; the collection keeps its previous TAGs."""
    won = build.finish(JobState.FAILED, message)
    if won:
        _settle_collection(build.collection)
        discard_scratch(build)
    return won


def do_cancel_build(build: TagBuild, user: Any = None) -> bool:
    """Cancel a queued or running build; the collection keeps its previous TAGs."""
    who = f" by {user}" if getattr(user, "is_authenticated", False) else ""
    won = build.finish(JobState.CANCELLED, f"cancelled{who}")
    if won:
        _settle_collection(build.collection, failed=False)
        discard_scratch(build)
    return won


def do_publish_build(build: TagBuild) -> bool:
    """Load every file's TAGs into a staging table and swap it in as the collection.

    Only the first caller for a running build does anything (a conditional update
    claims the step), so a duplicate task is harmless. Returns True if it published.
    """
    now = timezone.now()
    won = TagBuild.objects.filter(
        pk=build.pk, state=JobState.RUNNING, publish_started_at=None
    ).update(publish_started_at=now)
    if not won:
        return False
    build.publish_started_at = now
    collection = build.collection
    schema = collection_schema(collection)
    files = list(File.objects.filter(pk__in=build.file_ids).order_by("lfn"))
    folder = scratch_dir(build)
    build.log("publishing", f"loading {len(files)} file(s) into the TAG DB")
    with get_store().begin_build(collection.key, schema) as builder:
        for f in files:
            path = folder / f"{f.guid}.npz"
            if not path.exists():
                raise InvalidInput(f"the TAGs of {f.lfn} are missing from {folder}", where=f.lfn)
            with np.load(path) as arrays:
                builder.load(str(f.guid), {name: arrays[name] for name in arrays.files})
        if not TagBuild.objects.filter(pk=build.pk, state=JobState.RUNNING).exists():
            return False  # cancelled meanwhile: leaving the block drops the staging table
        info = builder.publish()
    with transaction.atomic():
        TagCollection.objects.filter(pk=collection.pk).update(
            state=CollectionState.READY,
            n_events=info.n_events,
            n_files=info.n_files,
            built_at=timezone.now(),
        )
        build.finish(
            JobState.SUCCEEDED,
            f"{info.n_events:,} events from {info.n_files} file(s) published as {collection}",
        )
    discard_scratch(build)
    return True


def check_build_now(collection: TagCollection, user: Any = None) -> TagBuild:
    """Build ``collection`` in this process, file by file, and publish it: for the
    command line, the demo loader and tests. Raises the DSSError that failed it."""
    with transaction.atomic():
        build = _new_build(collection.dataset, collection.schema, user)
    build.claim()
    files = File.objects.filter(pk__in=build.file_ids).prefetch_related("replicas__storage_element")
    for f in files.order_by("lfn"):
        try:
            do_tag_file(build, f)
        except Exception as exc:
            do_fail_build(build, file_failure(f, exc))
            raise
        record_file_done(build)
    try:
        do_publish_build(build)
    except Exception as exc:
        do_fail_build(build, publish_failure(exc))
        raise
    build.refresh_from_db()
    collection.refresh_from_db()
    return build


def check_build_builtin(dataset_names: list[str], write: Any = print) -> list[TagCollection]:
    """Build the TAGs of each named dataset with its fitting schema, now, unless they
    are already built with it; ``write`` gets one line per dataset (the demo loader)."""
    done = []
    for name in dataset_names:
        dataset = get_dataset(name)
        schema = schema_for_dataset(dataset)
        collection = get_or_create_collection(dataset, schema)
        if collection.state == CollectionState.READY:
            write(f"TAGs of {name} ({schema}): {collection.n_events:,} events, already built")
        else:
            check_build_now(collection)
            write(f"TAGs of {name} ({schema}): {collection.n_events:,} events built")
        done.append(collection)
    return done


# --------------------------------------------------------------------------- queries

MAX_TOP = 1000
EXPORT_BATCH = 50_000


def require_ready(collection: TagCollection) -> None:
    """Conflict unless ``collection`` has published TAGs to query."""
    if collection.state != CollectionState.READY:
        raise Conflict(
            f"the TAGs of {collection} are not built yet ({collection.get_state_display()})",
            where=str(collection),
        )


@dataclass(frozen=True)
class AttributeInfo:
    """One name a selection may use, as the attribute list shows it."""

    name: str
    type: str
    description: str
    unit: str
    lo: Any = None
    hi: Any = None
    numbering: bool = False  # run / lumi / event rather than a schema attribute


def attribute_list(collection: TagCollection, ranges: bool = True) -> list[AttributeInfo]:
    """The collection's run/lumi/event numbers and attributes, with each one's range over
    the whole collection when ``ranges`` (recorded in the TAG DB's catalog when the
    collection was published)."""
    schema = collection_schema(collection)
    found: dict[str, tuple[Any, Any]] = {}
    if ranges and collection.state == CollectionState.READY:
        found = get_store().attribute_ranges(collection.key)
    rows = [
        AttributeInfo(column, INT, f"{column} number (branch {branch})", "", numbering=True)
        for column, branch in schema.numbering().items()
    ]
    rows += [AttributeInfo(a.name, a.type, a.description, a.unit) for a in schema.attributes]
    return [
        AttributeInfo(
            **{
                **r.__dict__,
                "lo": found.get(r.name, (None, None))[0],
                "hi": found.get(r.name, (None, None))[1],
            }
        )
        for r in rows
    ]


@dataclass(frozen=True)
class CountResult:
    selection: str  # the normal form ('' for every event)
    count: int
    total: int
    files_touched: int
    files_total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.count / self.total if self.total else 0.0


def count(collection: TagCollection, selection: str | None, good_runs: Any = None) -> CountResult:
    """How many events pass ``selection``, and how many of the dataset's files hold them."""
    tree, text = query_selection(collection, selection, good_runs)
    require_ready(collection)
    store = get_store()
    with store.session():  # one opening of an embedded TAG DB for all four queries
        n = store.count(collection.key, tree)
        touched, files = store.files_touched(collection.key, tree)
    return CountResult(text, n, collection.n_events, touched, files)


def count_only(collection: TagCollection, selection: str | None) -> int:
    """How many events pass ``selection`` (one query, no files-touched count)."""
    tree, _ = query_selection(collection, selection)
    require_ready(collection)
    return get_store().count(collection.key, tree)


def _attribute_name(collection: TagCollection, name: str) -> str:
    known = attribute_types(collection)
    name = (name or "").strip()
    if name not in known:
        raise InvalidInput(
            f"unknown attribute '{name}'{suggest(name, sorted(known))}", where="attribute"
        )
    return name


def histogram(
    collection: TagCollection,
    attribute: str,
    selection: str | None = None,
    bins: int | None = None,
    lo: float | None = None,
    hi: float | None = None,
    good_runs: Any = None,
) -> Histogram:
    """The distribution of ``attribute`` over the passing events, binned in the database:
    ``bins`` (default 50; integer attributes get one bin per value when they fit)
    between ``lo`` and ``hi`` (default: a range covering the passing events, see
    :meth:`tagdb.store.TagStore.histogram`)."""
    attribute = _attribute_name(collection, attribute)
    tree, _ = query_selection(collection, selection, good_runs)
    require_ready(collection)
    for bound, value in (("from", lo), ("to", hi)):
        if value is not None and not math.isfinite(value):
            raise InvalidInput(f"the histogram's '{bound}' must be a finite number", where=bound)
    if lo is not None and hi is not None and not (lo < hi and math.isfinite(hi - lo)):
        raise InvalidInput(f"the histogram range {lo:g} to {hi:g} is empty", where="range")
    if bins is not None and not 1 <= int(bins) <= 10_000:
        raise InvalidInput("bins must be a whole number from 1 to 10000", where="bins")
    return get_store().histogram(
        collection.key, attribute, tree, bins=50 if bins is None else int(bins), lo=lo, hi=hi
    )


def events(
    collection: TagCollection,
    selection: str | None,
    limit: int = 100,
    offset: int = 0,
    good_runs: Any = None,
) -> list[EventRef]:
    """A page of the passing events (file GUID, entry, run, event), file by file."""
    tree, _ = query_selection(collection, selection, good_runs)
    require_ready(collection)
    if limit < 0 or offset < 0:
        raise InvalidInput("limit and offset must not be negative", where="limit")
    return get_store().events(collection.key, tree, limit=limit, offset=offset)


def iter_events(
    collection: TagCollection, selection: str | None, good_runs: Any = None
) -> Iterator[EventRef]:
    """Every passing event, fetched a batch at a time (for exports). The selection is
    checked before the first event is asked for."""
    tree, _ = query_selection(collection, selection, good_runs)
    require_ready(collection)
    store = get_store()

    def generate() -> Iterator[EventRef]:
        offset = 0
        while True:
            batch = store.events(collection.key, tree, limit=EXPORT_BATCH, offset=offset)
            yield from batch
            if len(batch) < EXPORT_BATCH:
                return
            offset += EXPORT_BATCH

    return generate()


def top(
    collection: TagCollection,
    selection: str | None,
    attribute: str,
    n: int = 20,
    good_runs: Any = None,
) -> list[EventRef]:
    """The ``n`` passing events with the largest ``attribute`` (value in ``.value``)."""
    attribute = _attribute_name(collection, attribute)
    tree, _ = query_selection(collection, selection, good_runs)
    require_ready(collection)
    if not 1 <= int(n) <= MAX_TOP:
        raise InvalidInput(f"N must be from 1 to {MAX_TOP}", where="n")
    return get_store().top(collection.key, tree, attribute, int(n))


def files_touched(
    collection: TagCollection, selection: str | None, good_runs: Any = None
) -> dict[str, Any]:
    """Which of the dataset's files hold passing events, with how many each: what
    decides how much a skim of this selection must read."""
    tree, text = query_selection(collection, selection, good_runs)
    require_ready(collection)
    by_file = get_store().entries_by_file(collection.key, tree)
    lfns = dict(File.objects.filter(dataset=collection.dataset).values_list("guid", "lfn"))
    names = {str(guid): lfn for guid, lfn in lfns.items()}
    return {
        "selection": text,
        "files_touched": len(by_file),
        "files_total": collection.n_files,
        "files": [
            {"guid": guid, "lfn": names.get(guid, ""), "events": int(len(entries))}
            for guid, entries in sorted(by_file.items(), key=lambda kv: names.get(kv[0], kv[0]))
        ],
    }


_PAIR_RE = re.compile(r"^\s*(-?\d+)\s*[\s,:;]\s*(-?\d+)\s*$")
MAX_PICK = 100_000


def parse_event_pairs(text: str | bytes) -> list[tuple[int, int]]:
    """(run, event) pairs from text: one pair per line (``run event``, ``run,event`` or
    ``run:event``; ``#`` starts a comment), or JSON ``[[run, event], ...]``.
    Errors name the line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the event list is not UTF-8 text", where="events") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise InvalidInput(f"the event list is not valid JSON: {exc}", where="events") from None
        return pairs_from_json(data)
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0]
        if not line.strip():
            continue
        match = _PAIR_RE.match(line)
        if not match:
            raise InvalidInput(
                f"line {number}: {line.strip()[:60]!r} is not 'run event' (two whole numbers)",
                where=f"line {number}",
            )
        pairs.append((int(match[1]), int(match[2])))
    if not pairs:
        raise InvalidInput("the event list is empty", where="events")
    if len(pairs) > MAX_PICK:
        raise InvalidInput(f"at most {MAX_PICK:,} events can be picked at once", where="events")
    return pairs


def pairs_from_json(data: Any) -> list[tuple[int, int]]:
    """(run, event) pairs from parsed JSON: a list of two-number lists."""
    if not isinstance(data, list) or not data:
        raise InvalidInput("events must be a non-empty list of [run, event] pairs", where="events")
    if len(data) > MAX_PICK:
        raise InvalidInput(f"at most {MAX_PICK:,} events can be picked at once", where="events")
    pairs = []
    for i, item in enumerate(data):
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            raise InvalidInput(
                f"item {i + 1}: {str(item)[:60]} is not a [run, event] pair of whole numbers",
                where=f"item {i + 1}",
            )
        pairs.append((int(item[0]), int(item[1])))
    return pairs


@dataclass(frozen=True)
class PickedEventRow:
    run: int
    event: int
    dataset: str
    lfn: str
    file_guid: str
    entry: int


@dataclass(frozen=True)
class PickReport:
    found: list[PickedEventRow]
    missing: list[tuple[int, int]]
    duplicates: list[tuple[int, int]]
    asked: int


def pick_events(collection: TagCollection, pairs: list[tuple[int, int]]) -> PickReport:
    """Where each (run, event) lives in ``collection`` (dataset, file, entry), which
    pairs matched nothing and which matched more than one event."""
    require_ready(collection)
    if "run" not in attribute_types(collection) or "event" not in attribute_types(collection):
        raise InvalidInput(
            f"{collection} has no run and event numbers to pick events by", where="events"
        )
    result = get_store().pick_events([collection.key], pairs)
    names = {
        str(guid): lfn
        for guid, lfn in File.objects.filter(dataset=collection.dataset).values_list("guid", "lfn")
    }
    found = [
        PickedEventRow(
            p.run,
            p.event,
            collection.dataset.name,
            names.get(p.file_guid, ""),
            p.file_guid,
            p.entry,
        )
        for p in result.found
    ]
    return PickReport(found, result.missing, result.duplicates, len(dict.fromkeys(pairs)))


# --------------------------------------------------------------------------- saved queries


def saved_queries_for_user(user: Any, collection: TagCollection):
    """``user``'s saved queries on ``collection``, newest first."""
    if not getattr(user, "is_authenticated", False):
        return SavedQuery.objects.none()
    return SavedQuery.objects.filter(owner=user, collection=collection)


def check_save_query(user: Any, collection: TagCollection, name: str, selection: str) -> SavedQuery:
    """Save ``selection`` (checked first) under ``name``, replacing the user's query of
    the same name on this collection."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("give the query a name", where="name")
    if len(name) > 100:
        raise InvalidInput("a query name has at most 100 characters", where="name")
    if not (selection or "").strip():
        raise InvalidInput("there is no selection to save", where="selection")
    check_selection(collection, selection)
    query, _ = SavedQuery.objects.update_or_create(
        owner=user,
        collection=collection,
        name=name,
        defaults={"selection": selection.strip(), "created_at": timezone.now()},
    )
    return query


def get_saved_query_for_user(user: Any, pk: int | str) -> SavedQuery:
    """One of ``user``'s saved queries; NotFound for anyone else's."""
    try:
        return SavedQuery.objects.select_related("collection").get(pk=int(pk), owner=user)
    except (SavedQuery.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"you have no saved query number {pk}", where="query") from None


def do_delete_query(query: SavedQuery) -> None:
    """Forget a saved query."""
    query.delete()
