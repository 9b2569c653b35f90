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
from collections.abc import Iterator, Sequence
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

from conditions import actions as conditions_actions
from conditions import lumi as conditions_lumi
from conditions.models import GlobalTag
from dmu.actions import get_dataset
from dmu.audit import Finding
from dmu.eventfiles import open_event_file
from dmu.models import Dataset, File, ReplicaState
from dss import failpoints, leases
from dss.errors import (
    BadEventFile,
    Conflict,
    DSSError,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
)
from dss.jobs import FINAL_STATES, FileWorkState, JobState
from dss.roles import may_change

from .goodruns import WHERE as GRL_WHERE
from .goodruns import GoodRunList, missing_runs_warning, parse_good_run_list
from .models import (
    CollectionState,
    SavedQuery,
    TagBuild,
    TagBuildFile,
    TagCollection,
    TagSchema,
)
from .numbering import check_unsigned
from .schema import Schema, auto_schema, compute_tags, load_schema, pack_tags, unpack_tags
from .selection import INT, Node, check, normalise, parse, suggest
from .store import EventRef, Histogram, TagStore, parquet_url

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


def _open_store(url: str, parquet_dir: str = "") -> TagStore:
    """The TAG store at ``url``; with a Parquet folder (``parquet:///folder``, a URL with
    ``?parquet_dir=``, or ``parquet_dir``: settings.DSS_TAG_PARQUET_DIR) the URL's
    database holds only the catalog and the event rows are Parquet files there."""
    catalog_url, folder = parquet_url(url)
    folder = parquet_dir or folder
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
    parsed = sa.engine.make_url(catalog_url)
    if parsed.get_backend_name() == "duckdb":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # No pool: a connection that stays open would keep the file locked for this process.
        engine = sa.create_engine(catalog_url, poolclass=NullPool)
        _wait_for_duckdb_lock(engine, url)
        return TagStore(engine, parquet_dir=folder)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return TagStore(catalog_url, parquet_dir=folder, pool_pre_ping=True)


def get_store() -> TagStore:
    """The TAG store at ``settings.TAGDB_URL``: one per process (and URL)."""
    url = settings.TAGDB_URL
    parquet_dir = str(getattr(settings, "DSS_TAG_PARQUET_DIR", "") or "")
    with _stores_lock:
        store = _stores.get(url + parquet_dir)
        if store is None:
            store = _stores[url + parquet_dir] = _open_store(url, parquet_dir)
        return store


def _forget_pools_after_fork() -> None:
    # A forked Celery child must not share its parent's pooled sockets.
    for store in _stores.values():
        store.engine.dispose(close=False)
        if store.rows_engine is not store.engine:
            # The in-memory DuckDB of a Parquet store: the child opens its own.
            store.rows_engine.dispose(close=False)


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


def combine_selections(selection: str, extra: str) -> str:
    """``selection && extra``, either of them possibly blank."""
    selection, extra = (selection or "").strip(), (extra or "").strip()
    if not selection:
        return extra
    if not extra:
        return selection
    return f"({selection}) && ({extra})"


def query_selection(collection: TagCollection, selection: str | None) -> tuple[Node | None, str]:
    """The tree and normal form of ``selection`` (blank: every event)."""
    return _all_events_or(collection, selection)


# --------------------------------------------------------------------------- good-run lists


def good_runs_for(collection: TagCollection, good_runs: Any) -> GoodRunList | None:
    """The good-run list a query was given, read and checked for ``collection``: a
    :class:`GoodRunList`, its text (ATLAS XML or JSON) or a JSON object. None when none
    was given (None, blank text, an empty object). Raises InvalidInput naming the line or
    run of a bad list, or for a collection without run numbers."""
    if good_runs is None or good_runs == {}:
        return None
    if isinstance(good_runs, str | bytes) and not good_runs.strip():
        return None
    grl = good_runs if isinstance(good_runs, GoodRunList) else parse_good_run_list(good_runs)
    if "run" not in collection_schema(collection).numbering():
        raise InvalidInput(
            f"{collection} has no run numbers, so a good-run list cannot select from it",
            where=GRL_WHERE,
        )
    return grl


@dataclass(frozen=True)
class GoodRunsNote:
    """What an answer says about the good-run list it applied."""

    runs: int
    ranges: int
    format: str
    lumi_blocks: bool  # False: the collection has none, listed runs are kept whole
    missing_runs: tuple[int, ...]  # runs of the list the collection has no event of
    collection: str

    @property
    def warnings(self) -> list[str]:
        found = []
        if self.missing_runs:
            found.append(missing_runs_warning(self.missing_runs))
        if not self.lumi_blocks:
            found.append(
                f"{self.collection} has no luminosity-block numbers: the GRL's runs are kept whole"
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "ranges": self.ranges,
            "format": self.format,
            "lumi_blocks": self.lumi_blocks,
            "missing_runs": list(self.missing_runs),
        }


def good_runs_note(collection: TagCollection, grl: GoodRunList | None) -> GoodRunsNote | None:
    """What to tell the user with an answer that applied ``grl`` (None without one):
    its size, and which of its runs ``collection`` does not have."""
    if grl is None:
        return None
    require_ready(collection)
    missing = get_store().missing_runs(collection.key, grl)
    return GoodRunsNote(
        runs=grl.n_runs,
        ranges=grl.n_ranges,
        format=grl.format,
        lumi_blocks="lumi" in collection_schema(collection).numbering(),
        missing_runs=tuple(missing),
        collection=collection.dataset.name,
    )


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
    """The event tree (TTree, RNTuple or Parquet table, see dmu.eventfiles) of one dataset
    file, read from an available replica: through the local file system for a file://
    storage element, else by URL (root://, https://). Raises StorageError when no replica
    is available, BadEventFile when it cannot be read."""
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
        handle = open_event_file(source, where=file.lfn)
    except FileNotFoundError:
        raise StorageError(
            f"replica of {file.lfn} on {replica.storage_element.name} is missing ({source})",
            where=file.lfn,
        ) from None
    except DSSError:
        raise
    except Exception as exc:  # unreachable input raises many types
        raise BadEventFile(f"cannot open {source}: {exc}", where=file.lfn) from None
    try:
        yield handle.tree(name)
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


def tags_path(build: TagBuild, guid: str) -> Path:
    """The TAGs of one file of a build, once tagged."""
    return scratch_dir(build) / f"{guid}.npz"


def partial_tags_path(build: TagBuild, guid: str, token: str) -> Path:
    """Where attempt ``token`` writes one file's TAGs before the attempt commits them."""
    return scratch_dir(build) / f".{guid}.{token}.part"


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
    """Create the collection if needed and a queued build of it with one unit per file (in
    the caller's transaction); Conflict if one is already under way."""
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
    )
    TagBuildFile.objects.bulk_create(
        TagBuildFile(build=build, file=f, lfn=f.lfn, guid=str(f.guid), adler32=f.adler32)
        for f in files
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
    if schema is None:
        schema = schema_for_dataset(dataset)
    with transaction.atomic():
        build = _new_build(dataset, schema, user)
        for unit in build.files.all():
            leases.send(unit)
    return build


def do_tag_file(lease: leases.Lease) -> int:
    """Compute the TAGs of one file of a build, column-wise, a chunk at a time (checking
    the lease between chunks), and commit them to the build's scratch folder: written under
    a name of this attempt's, renamed only while it still holds the file. Returns the
    file's events."""
    unit: TagBuildFile = lease.unit
    build, file = unit.build, unit.file
    build.claim()
    if file is None:
        raise InvalidInput(f"file {unit.lfn} left the dataset during the build", where=unit.lfn)
    schema = collection_schema(build.collection)
    parts: list[dict[str, np.ndarray]] = []
    with open_event_tree(file, schema.tree) as tree:
        n = int(tree.num_entries)
        for start in range(0, max(n, 1), FILE_CHUNK_ENTRIES):
            lease.check()
            parts.append(compute_tags(schema, tree, start, min(n, start + FILE_CHUNK_ENTRIES)))
    tags = {name: np.ma.concatenate([p[name] for p in parts]) for name in parts[0]}
    scratch_dir(build).mkdir(parents=True, exist_ok=True)
    partial = partial_tags_path(build, unit.guid, lease.token)
    with open(partial, "wb") as fh:
        np.savez(fh, **pack_tags(tags))  # values and the masks of missing ones
    failpoints.reach("tags.file")
    with lease.committing():
        os.replace(partial, tags_path(build, unit.guid))
        TagBuildFile.objects.filter(pk=unit.pk).update(
            state=FileWorkState.SUCCEEDED, n_events=n, finished_at=timezone.now()
        )
        TagBuild.objects.filter(pk=build.pk).update(
            n_events=F("n_events") + n, progress_done=F("progress_done") + 1
        )
        build.log("file", f"{file.lfn}: {n:,} events tagged")
    return n


def fail_file_attempt(lease: leases.Lease, exc: Exception) -> None:
    """Tagging a file raised ``exc``: the file fails, and with it the build."""
    unit: TagBuildFile = lease.unit
    if lease.release(state=FileWorkState.FAILED, message=str(exc)[:4000]):
        do_fail_build(unit.build, file_failure(unit.lfn, exc))


def fail_publish_attempt(lease: leases.Lease, exc: Exception) -> None:
    """Publishing raised ``exc``: the build fails; the collection keeps its TAGs."""
    if lease.release():
        do_fail_build(lease.unit, publish_failure(exc))


def discard_scratch(build: TagBuild) -> None:
    """Remove the build's per-file TAGs."""
    shutil.rmtree(scratch_dir(build), ignore_errors=True)


def discard_publish_attempt(build: TagBuild, token: str) -> None:
    """Drop the staging table that publishing attempt ``token`` may have left."""
    get_store().discard_build(build.collection.key, _staging_token(token))


def _staging_token(token: str) -> str:
    return token[:16]


def file_failure_message(lfn: str, reason: str) -> str:
    return f"file {lfn}: {reason}"


def file_failure(lfn: str, exc: Exception) -> str:
    """Why a build failed on file ``lfn``, naming the file."""
    if isinstance(exc, DSSError):
        return file_failure_message(lfn, str(exc))
    return file_failure_message(lfn, f"internal error: {type(exc).__name__}: {exc}")


def publish_failure(exc: Exception) -> str:
    """Why loading a build into the TAG DB failed."""
    if isinstance(exc, DSSError):
        return f"loading into the TAG DB failed: {exc}"
    return f"loading into the TAG DB failed: internal error: {type(exc).__name__}: {exc}"


def _settle_collection(collection: TagCollection, failed: bool = True) -> None:
    """After a build that did not publish: the old TAGs (if any) are still there."""
    collection.refresh_from_db(fields=["built_at"])
    if collection.built_at:
        state = CollectionState.READY
    else:
        state = CollectionState.FAILED if failed else CollectionState.EMPTY
    TagCollection.objects.filter(pk=collection.pk).update(state=state)
    collection.state = state


def _end_build(build: TagBuild, state: str, message: str) -> bool:
    """End a build that will not publish: files not yet tagged are cancelled (running ones
    see it at their next heartbeat), the collection keeps its previous TAGs, the scratch
    folder goes."""
    with transaction.atomic():
        won = build.finish(state, message, lease_token="", lease_expires_at=None)
        if not won:
            return False
        held = list(build.files.filter(state__in=[FileWorkState.QUEUED, FileWorkState.RUNNING]))
        TagBuildFile.objects.filter(pk__in=[f.pk for f in held]).update(
            state=FileWorkState.CANCELLED, lease_token="", lease_expires_at=None
        )
        _settle_collection(build.collection, failed=state == JobState.FAILED)
    for f in held:
        if f.lease_token:
            f.discard_attempt(f.lease_token)
    discard_scratch(build)
    return True


def do_fail_build(build: TagBuild, message: str) -> bool:
    """End ``build`` as failed with ``message``; the collection keeps its previous TAGs."""
    return _end_build(build, JobState.FAILED, message)


def do_cancel_build(build: TagBuild, user: Any = None) -> bool:
    """Cancel a queued or running build; the collection keeps its previous TAGs."""
    who = f" by {user}" if getattr(user, "is_authenticated", False) else ""
    return _end_build(build, JobState.CANCELLED, f"cancelled{who}")


def check_cancel_build(build: TagBuild, user: Any) -> bool:
    """Cancel a build on behalf of ``user``: the build's owner or an admin may; anyone else
    gets Forbidden and the build goes on."""
    if not may_change(user, build):
        raise Forbidden(
            f"build #{build.pk} belongs to {build.owner or 'nobody'}: only its owner or an "
            "admin may cancel it",
            where=f"build {build.pk}",
        )
    return do_cancel_build(build, user)


def do_publish_build(lease: leases.Lease) -> bool:
    """Load every file's TAGs into a staging table named with this attempt's token and
    swap it in as the collection, in a transaction that still holds the build (checked
    between files). A publishing step that dies leaves a staging table that the sweep or
    the next attempt drops. Returns True if it published."""
    build: TagBuild = lease.unit
    collection = build.collection
    schema = collection_schema(collection)
    units = list(build.files.order_by("lfn"))
    build.log("publishing", f"loading {len(units)} file(s) into the TAG DB")
    store = get_store()
    with store.begin_build(collection.key, schema, _staging_token(lease.token)) as builder:
        for unit in units:
            lease.check()
            path = tags_path(build, unit.guid)
            if not path.exists():
                raise InvalidInput(
                    f"the TAGs of {unit.lfn} are missing from {scratch_dir(build)}",
                    where=unit.lfn,
                )
            with np.load(path) as arrays:
                builder.load(unit.guid, unpack_tags(arrays, unit.lfn))
        failpoints.reach("tags.publish")
        lease.check()
        info = builder.prepare()
        with lease.committing():
            builder.swap(info)
            TagCollection.objects.filter(pk=collection.pk).update(
                state=CollectionState.READY,
                n_events=info.n_events,
                n_files=info.n_files,
                built_at=timezone.now(),
                published_build=build,
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
    for unit in build.files.select_related("file").order_by("lfn"):
        lease = leases.acquire(TagBuildFile, unit.pk)
        with lease:
            try:
                do_tag_file(lease)
            except Exception as exc:
                with transaction.atomic():
                    fail_file_attempt(lease, exc)
                raise
    lease = leases.acquire(TagBuild, build.pk)
    with lease:
        try:
            do_publish_build(lease)
        except Exception as exc:
            with transaction.atomic():
                fail_publish_attempt(lease, exc)
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


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class Coverage:
    """Which of its dataset's files a collection's published TAGs were built from.

    ``added``: files of the dataset the TAGs do not cover; ``changed``: files whose content
    (adler32) differs from what was tagged; ``removed``: files tagged that the dataset no
    longer has. A collection with any of them is *stale*: its answers would leave out, or
    misplace, events of the dataset as it is now."""

    collection: str
    dataset: str
    covered: int
    total: int
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    build: int | None = None

    @property
    def stale(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    @property
    def message(self) -> str:
        """What is wrong, in one sentence a physicist can act on ('' when nothing is)."""
        if not self.stale:
            return ""
        parts = []
        if self.added:
            parts.append(f"not tagged: {_names(self.added)}")
        if self.changed:
            parts.append(f"changed since they were tagged: {_names(self.changed)}")
        if self.removed:
            parts.append(f"no longer in the dataset: {_names(self.removed)}")
        return (
            f"the TAGs of {self.dataset} cover {self.covered} of its {self.total} file(s) "
            f"({'; '.join(parts)}); rebuild them, or skim the dataset without TAGs"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "stale": self.stale,
            "covered": self.covered,
            "total": self.total,
            "added": list(self.added),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "build": self.build,
            "message": self.message,
        }


def _names(lfns: tuple[str, ...], shown: int = 5) -> str:
    more = f" and {len(lfns) - shown} more" if len(lfns) > shown else ""
    return ", ".join(lfns[:shown]) + more


def coverage(collection: TagCollection) -> Coverage:
    """Compare the files the collection's published TAGs were built from (GUID and
    adler32, recorded by the build) with its dataset's files now."""
    current = {
        str(guid): (lfn, adler32)
        for guid, lfn, adler32 in collection.dataset.files.values_list("guid", "lfn", "adler32")
    }
    build_id = collection.published_build_id
    if build_id is None:
        # Never published: nothing is covered (queries refuse it anyway).
        return Coverage(str(collection), collection.dataset.name, 0, len(current), build=None)
    tagged = {
        guid: (lfn, adler32)
        for guid, lfn, adler32 in TagBuildFile.objects.filter(build_id=build_id).values_list(
            "guid", "lfn", "adler32"
        )
    }
    added = tuple(sorted(lfn for g, (lfn, _) in current.items() if g not in tagged))
    removed = tuple(sorted(lfn for g, (lfn, _) in tagged.items() if g not in current))
    changed = tuple(
        sorted(lfn for g, (lfn, a) in current.items() if g in tagged and tagged[g][1] != a)
    )
    covered = len(current) - len(added) - len(changed)
    return Coverage(
        str(collection),
        collection.dataset.name,
        covered,
        len(current),
        added,
        changed,
        removed,
        build_id,
    )


def require_current(collection: TagCollection) -> Coverage:
    """Conflict (naming the files) unless the collection's TAGs cover its dataset exactly:
    what a skim through TAGs needs, so that no file is ever skipped silently."""
    found = coverage(collection)
    if found.stale:
        raise StaleTags(found)
    return found


def uncovered(collection: TagCollection, records: Sequence[dict]) -> list[str]:
    """The files among ``records`` (lfn, guid, adler32) that the collection's published
    TAGs were not built from, with that content: [] when they cover them all."""
    tagged = set(
        TagBuildFile.objects.filter(build_id=collection.published_build_id).values_list(
            "guid", "adler32"
        )
    )
    return [r["lfn"] for r in records if (r["guid"], r["adler32"]) not in tagged]


class StaleTags(Conflict):
    """The TAGs of a collection do not cover its dataset as it is now."""

    code = "stale_tags"

    def __init__(self, found: Coverage):
        super().__init__(found.message, where=found.dataset)
        self.coverage = found

    def as_dict(self) -> dict:
        return {**super().as_dict(), "coverage": self.coverage.as_dict()}


def check_collections(*, fix: bool = False) -> list[Finding]:
    """Every ready collection covers its dataset exactly (else it is stale: rebuild it);
    no staging table or per-file TAGs are left by a build that no worker runs any more
    (``fix`` drops and removes them)."""
    findings: list[Finding] = []
    for collection in TagCollection.objects.filter(state=CollectionState.READY).select_related(
        "dataset", "schema"
    ):
        found = coverage(collection)
        if found.stale:
            findings.append(Finding("stale", str(collection), found.message))
    store = get_store()
    collections = {c.key: c for c in TagCollection.objects.all()}
    for table in store.staging_tables():
        key, _, token = table[len("tag_") :].partition("__")
        collection = collections.get(key)
        held = collection is not None and (
            TagBuild.objects.filter(
                collection=collection, state=JobState.RUNNING, lease_token__startswith=token
            ).exists()
        )
        if held:
            continue
        fixed = fix and store.discard_build(key, token)
        findings.append(
            Finding(
                "leftover", f"TAG DB:{table}", "a staging table no build uses", fixed=bool(fixed)
            )
        )
    folder = Path(settings.DSS_SCRATCH_DIR) / "tagbuilds"
    active = {str(pk) for pk in active_builds().values_list("pk", flat=True)}
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        if path.name in active:
            continue
        if fix:
            shutil.rmtree(path, ignore_errors=True)
        findings.append(
            Finding("leftover", f"scratch:{path}", "per-file TAGs of an ended build", fixed=fix)
        )
    return findings


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
    """How many events pass ``selection`` (within the good-run list ``good_runs``, see
    :func:`good_runs_for`), and how many of the dataset's files hold them."""
    tree, text = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    store = get_store()
    with store.session():  # one opening of an embedded TAG DB for all four queries
        n = store.count(collection.key, tree, good_runs=grl)
        touched, files = store.files_touched(collection.key, tree, good_runs=grl)
    return CountResult(text, n, collection.n_events, touched, files)


def count_only(collection: TagCollection, selection: str | None, good_runs: Any = None) -> int:
    """How many events pass ``selection`` (one query, no files-touched count)."""
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    return get_store().count(collection.key, tree, good_runs=grl)


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
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    for bound, value in (("from", lo), ("to", hi)):
        if value is not None and not math.isfinite(value):
            raise InvalidInput(f"the histogram's '{bound}' must be a finite number", where=bound)
    if lo is not None and hi is not None and not (lo < hi and math.isfinite(hi - lo)):
        raise InvalidInput(f"the histogram range {lo:g} to {hi:g} is empty", where="range")
    if bins is not None and not 1 <= int(bins) <= 10_000:
        raise InvalidInput("bins must be a whole number from 1 to 10000", where="bins")
    return get_store().histogram(
        collection.key,
        attribute,
        tree,
        bins=50 if bins is None else int(bins),
        lo=lo,
        hi=hi,
        good_runs=grl,
    )


MAX_EVENT_ATTRIBUTES = 50


def event_attributes(collection: TagCollection, names: Sequence[str] | None) -> list[str]:
    """The attribute names an event list was asked to carry, checked against the
    collection (each once, in the order given)."""
    names = list(names or [])
    if len(names) > MAX_EVENT_ATTRIBUTES:
        raise InvalidInput(
            f"at most {MAX_EVENT_ATTRIBUTES} attributes per event list", where="attributes"
        )
    known = attribute_types(collection)
    for name in names:
        if not isinstance(name, str) or name.strip() not in known:
            raise InvalidInput(
                f"unknown attribute '{name}'{suggest(str(name).strip(), sorted(known))}",
                where="attributes",
            )
    return list(dict.fromkeys(name.strip() for name in names))


def events(
    collection: TagCollection,
    selection: str | None,
    limit: int = 100,
    offset: int = 0,
    good_runs: Any = None,
    attributes: Sequence[str] | None = None,
) -> list[EventRef]:
    """A page of the passing events (file GUID, entry, run, event), file by file, with
    the values of ``attributes`` in ``.values`` (None where the event has none)."""
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    names = event_attributes(collection, attributes)
    require_ready(collection)
    if limit < 0 or offset < 0:
        raise InvalidInput("limit and offset must not be negative", where="limit")
    return get_store().events(
        collection.key, tree, limit=limit, offset=offset, attributes=names, good_runs=grl
    )


def iter_events(
    collection: TagCollection,
    selection: str | None,
    good_runs: Any = None,
    attributes: Sequence[str] | None = None,
) -> Iterator[EventRef]:
    """Every passing event, fetched a batch at a time (for exports), with the values of
    ``attributes``. The selection is checked before the first event is asked for."""
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    names = event_attributes(collection, attributes)
    require_ready(collection)
    store = get_store()

    def generate() -> Iterator[EventRef]:
        offset = 0
        while True:
            batch = store.events(
                collection.key,
                tree,
                limit=EXPORT_BATCH,
                offset=offset,
                attributes=names,
                good_runs=grl,
            )
            yield from batch
            if len(batch) < EXPORT_BATCH:
                return
            offset += EXPORT_BATCH

    return generate()


# --------------------------------------------------------------------------- luminosity

LUMI_WHERE = "lumi_gt"


def lumi_global_tag(name: str | None) -> GlobalTag | None:
    """The global tag a query names for its luminosity (None for none), or InvalidInput."""
    name = (name or "").strip()
    if not name:
        return None
    try:
        return conditions_actions.get_global_tag(name)
    except NotFound:
        raise InvalidInput(f"no global tag named {name!r}", where=LUMI_WHERE) from None


def lumi_global_tag_names() -> list[str]:
    """The global tags that hold a lumi payload list, by name."""
    return list(
        GlobalTag.objects.filter(payload_lists__payload_type__name=conditions_lumi.LUMI)
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )


def selected_lumiblocks(
    collection: TagCollection, selection: str | None, good_runs: Any = None
) -> tuple[set[tuple[int, int]], int]:
    """The distinct (run, lumiblock) pairs the passing events fall in (within the good-run
    list ``good_runs``), and how many passing events have no run or lumiblock number.
    InvalidInput for a collection whose TAGs hold no luminosity-block numbers.

    One grouped query in the TAG DB (``SELECT run, lumi, count(*) … GROUP BY run, lumi``),
    on whichever store holds the rows, with the good-run list applied as counts apply it."""
    numbering = collection_schema(collection).numbering()
    if "run" not in numbering or "lumi" not in numbering:
        raise InvalidInput(
            f"this collection has no luminosity-block numbers ({collection}): its TAG schema "
            "names no run and lumi branches, so no luminosity can be computed",
            where=LUMI_WHERE,
        )
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    blocks: set[tuple[int, int]] = set()
    unnumbered = 0
    for run, lb, n in get_store().lumiblocks(collection.key, tree, grl):
        if run is None or lb is None:
            unnumbered += n
        else:
            blocks.add((int(run), int(lb)))
    return blocks, unnumbered


def selection_luminosity(
    collection: TagCollection, selection: str | None, good_runs: Any, gt: GlobalTag
) -> dict:
    """The integrated luminosity of the lumiblocks the passing events fall in, from
    ``gt``'s lumi payloads (see :func:`conditions.lumi.luminosity_of_blocks`), with
    ``events_without_numbers``; and with a good-run list, the list's own luminosity in
    ``good_run_list``."""
    grl = good_runs_for(collection, good_runs)
    blocks, unnumbered = selected_lumiblocks(collection, selection, grl)
    result = conditions_lumi.luminosity_of_blocks(gt, blocks)
    result["events_without_numbers"] = unnumbered
    result["good_run_list"] = (
        conditions_lumi.integrated_luminosity(gt, grl.to_json()) if grl is not None else None
    )
    return result


@dataclass(frozen=True)
class TopList:
    """The passing events with the largest value of ``attribute``, and how many passing
    events have no value of it (they are not in the list)."""

    attribute: str
    events: list[EventRef]
    missing: int


def top(
    collection: TagCollection,
    selection: str | None,
    attribute: str,
    n: int = 20,
    good_runs: Any = None,
) -> TopList:
    """The ``n`` passing events with the largest ``attribute`` (value in ``.value``), and
    the count of passing events where ``attribute`` is missing."""
    attribute = _attribute_name(collection, attribute)
    tree, _ = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    if not 1 <= int(n) <= MAX_TOP:
        raise InvalidInput(f"N must be from 1 to {MAX_TOP}", where="n")
    store = get_store()
    with store.session():
        events = store.top(collection.key, tree, attribute, int(n), good_runs=grl)
        missing = store.count_missing(collection.key, attribute, tree, good_runs=grl)
    return TopList(attribute, events, missing)


def files_touched(
    collection: TagCollection, selection: str | None, good_runs: Any = None
) -> dict[str, Any]:
    """Which of the dataset's files hold passing events, with how many each: what
    decides how much a skim of this selection must read."""
    tree, text = query_selection(collection, selection)
    grl = good_runs_for(collection, good_runs)
    require_ready(collection)
    by_file = get_store().entries_by_file(collection.key, tree, good_runs=grl)
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
        pairs.append(_number_pair(int(match[1]), int(match[2]), f"line {number}"))
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
        pairs.append(_number_pair(int(item[0]), int(item[1]), f"item {i + 1}"))
    return pairs


def _number_pair(run: int, event: int, where: str) -> tuple[int, int]:
    """(run, event) if both are unsigned 64-bit numbers; else InvalidInput naming ``where``."""
    try:
        return check_unsigned(run, "run", where), check_unsigned(event, "event", where)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", where=where) from None


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
