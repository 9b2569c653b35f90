"""The skim service: submit, plan, run parts, finish, cancel, retry, re-run, provenance.

A skim runs as Celery tasks (dss/tasks.py): a planning step asks the TAG DB (or scans the
files of a dataset without TAGs) which entries pass, and records one part per input file;
one task per part reads just those entries, writes an output file to scratch and copies it
to the output storage element with checksum verification; a finishing step registers the
output dataset only when the parts allow it, and writes the provenance record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import socket
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from dmu import actions as dmu_actions
from dmu import catalogs as dmu_catalogs
from dmu.checksum import file_checksum
from dmu.models import Dataset, File, Replica, ReplicaState, StorageElement
from dmu.names import check_dataset_name, scope_of
from dmu.storage import deterministic_path
from dmu.transfer import copy
from dss.errors import ChecksumMismatch, Conflict, DSSError, InvalidInput, NotFound, StorageError
from dss.jobs import JobState
from tagdb.actions import check_selection, get_store
from tagdb.models import CollectionState, TagCollection
from tagdb.schema import auto_schema, builtin_schemas, compute_tags
from tagdb.selection import check, evaluate, normalise, parse, tree_to_json

from . import eventio
from .models import (
    BranchPreset,
    FailurePolicy,
    OutputFormat,
    PartState,
    ProvenanceRecord,
    SkimInput,
    SkimJob,
    SkimPart,
)

log = logging.getLogger(__name__)

DSS_VERSION = "0.1.0"


class IdenticalSkim(Conflict):
    """An identical request already succeeded; its output can be used instead."""

    code = "identical_skim"

    def __init__(self, existing: SkimJob):
        super().__init__(
            f"an identical skim (#{existing.pk}) already produced {existing.output_dataset.name}; "
            "use it, or submit again with force to run anew",
            where="selection",
        )
        self.existing = existing

    def as_dict(self) -> dict:
        body = super().as_dict()
        body["existing"] = {"skim": self.existing.pk, "dataset": self.existing.output_dataset.name}
        return body


@dataclass(frozen=True)
class InputSpec:
    """What the user names as an input: a dataset, and optionally its TAG collection."""

    dataset: Dataset
    collection: TagCollection | None


# --------------------------------------------------------------------------- helpers


def get_skim_for_user(pk: int, user) -> SkimJob:
    """A skim the user may see: everyone logged in may read skims (they are the site's data)."""
    try:
        return SkimJob.objects.select_related("output_se", "output_dataset", "owner").get(pk=pk)
    except SkimJob.DoesNotExist:
        raise NotFound(f"no skim #{pk}", where="skim") from None


def _may_change(skim: SkimJob, user) -> None:
    if user is not None and not (user.is_superuser or skim.owner_id == user.pk):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("only the skim's owner may change it")


def _scan_schema(file: File):
    """The schema that a dataset without TAGs is selected with: a shipped schema that
    fits the tree (so attribute names are the same as with TAGs), else the automatic one."""

    with _open_event_file(file) as (tree, _):
        available = set(tree.keys())
        for schema in builtin_schemas().values():
            if schema.tree == file.tree and set(schema.branches()) <= available:
                return schema
        return auto_schema(tree)


def _check_selection_for(inp: InputSpec, text: str, first_file: File | None):
    """Parse and type-check ``text`` for one input; returns (tree, normalised text)."""

    if inp.collection is not None:
        return check_selection(inp.collection, text)
    if first_file is None:
        raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
    schema = _scan_schema(first_file)
    tree = check(parse(text), schema.attribute_types())
    return tree, normalise(tree)


def _require_present(file: File) -> None:
    replica = available_replica(file)
    if not replica.storage_element.endpoint().exists(replica.path):
        raise NotFound(
            f"input file {file.lfn} is missing",
            where=f"{replica.storage_element.name}:{replica.path}",
        )


def _branches_of(file: File) -> list[str]:
    with _open_event_file(file) as (tree, _):
        return list(tree.keys(recursive=False))


def available_replica(file: File) -> Replica:
    """An available replica of ``file``; NotFound naming the file when there is none."""
    replica = (
        file.replicas.select_related("storage_element")
        .filter(state=ReplicaState.AVAILABLE)
        .order_by("storage_element__name")
        .first()
    )
    if replica is None:
        raise NotFound(
            f"no available replica of {file.lfn}", where=f"{file.dataset.name}/{file.lfn}"
        )
    return replica


class _open_event_file:
    """Open a file's tree with uproot from its first available replica."""

    def __init__(self, file: File):
        self.file = file
        self.handle = None

    def __enter__(self):
        import uproot

        replica = available_replica(self.file)
        endpoint = replica.storage_element.endpoint()
        where = f"{replica.storage_element.name}:{replica.path}"
        try:
            self.handle = uproot.open(
                endpoint.local_path(replica.path) or endpoint.url(replica.path)
            )
            tree = self.handle[self.file.tree]
        except FileNotFoundError:
            raise NotFound(f"input file {self.file.lfn} is missing", where=where) from None
        except Exception as e:
            raise DSSError(
                f"cannot open {self.file.lfn}: {type(e).__name__}: {e}", where=where
            ) from None
        return tree, where

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()


def request_hash(
    inputs: Sequence[InputSpec], normalised: str, patterns: list[str], fmt: str, limit
) -> str:
    """What makes two skim requests identical: inputs, normalised selection, options."""
    key = {
        "inputs": sorted(
            (i.dataset.name, i.collection.pk if i.collection else None) for i in inputs
        ),
        "selection": normalised,
        "branches": sorted(patterns),
        "format": fmt,
        "limit": limit,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def resolve_inputs(
    collections: Sequence[int] = (), datasets: Sequence[str] = ()
) -> list[InputSpec]:
    """Inputs named by TAG collection ids and/or dataset names (a dataset named without a
    collection uses its ready collection when it has exactly one, else a scan)."""
    specs: list[InputSpec] = []
    seen: set[int] = set()
    for pk in collections:
        try:
            c = TagCollection.objects.select_related("dataset", "schema").get(pk=pk)
        except (TagCollection.DoesNotExist, ValueError, TypeError):
            raise NotFound(f"no TAG collection #{pk}", where="collections") from None
        if c.state != CollectionState.READY:
            raise InvalidInput(
                f"the TAG collection of {c.dataset.name} is {c.get_state_display()}, not ready",
                where="collections",
            )
        if c.dataset_id in seen:
            raise InvalidInput(f"{c.dataset.name} is named twice", where="collections")
        seen.add(c.dataset_id)
        specs.append(InputSpec(c.dataset, c))
    for name in datasets:
        ds = dmu_actions.get_dataset(name)
        if ds.pk in seen:
            raise InvalidInput(f"{ds.name} is named twice", where="datasets")
        seen.add(ds.pk)
        ready = list(
            TagCollection.objects.select_related("schema").filter(
                dataset=ds, state=CollectionState.READY
            )
        )
        specs.append(InputSpec(ds, ready[0] if len(ready) == 1 else None))
    if not specs:
        raise InvalidInput("name at least one TAG collection or dataset to skim", where="inputs")
    return specs


def output_name_taken(name: str) -> bool:
    if Dataset.objects.filter(name=name).exists():
        return True
    return (
        SkimJob.objects.filter(output_name=name)
        .exclude(state__in=[JobState.FAILED, JobState.CANCELLED])
        .exists()
    )


# --------------------------------------------------------------------------- submit


# The largest event limit a skim may ask for: more than any dataset holds, and within
# the database column.
MAX_EVENT_LIMIT = 10**12


def check_submit_skim(
    *,
    user,
    inputs: Sequence[InputSpec],
    selection: str,
    output_name: str,
    output_se: StorageElement | None = None,
    branches: Sequence[str] = (),
    preset: BranchPreset | None = None,
    output_format: str = OutputFormat.ROOT,
    event_limit: int | None = None,
    failure_policy: str = FailurePolicy.FAIL,
    force: bool = False,
    rerun_of: ProvenanceRecord | None = None,
) -> SkimJob:
    """Validate a skim request and queue it. Raises InvalidInput (naming the field),
    Conflict when the output name is taken, IdenticalSkim when the same request already
    succeeded and ``force`` is not set."""
    check_dataset_name(output_name)
    if output_format not in OutputFormat.values:
        raise InvalidInput(f"unknown output format {output_format!r}", where="output_format")
    if failure_policy not in FailurePolicy.values:
        raise InvalidInput(f"unknown failure policy {failure_policy!r}", where="failure_policy")
    if event_limit is not None and (
        not isinstance(event_limit, int) or not 1 <= event_limit <= MAX_EVENT_LIMIT
    ):
        raise InvalidInput(
            f"the event limit must be a whole number from 1 to {MAX_EVENT_LIMIT}",
            where="event_limit",
        )
    if not (selection or "").strip():
        raise InvalidInput(
            "empty selection: write a condition such as n_muon >= 2", where="selection"
        )
    if output_se is None:
        output_se = dmu_actions.get_storage_element(settings.DSS_SKIM_OUTPUT_SE)
    patterns = list(preset.patterns) if preset else [b.strip() for b in branches if b.strip()]

    normalised, tree_json = None, None
    for inp in inputs:
        first = inp.dataset.files.order_by("lfn").first()
        if first is None:
            raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
        tree, norm = _check_selection_for(inp, selection, first)
        if normalised is None:
            normalised, tree_json = norm, tree_to_json(tree)
        if patterns:  # every pattern must match a branch (this opens the file)
            eventio.resolve_branches(_branches_of(first), patterns)
        else:  # "all branches" needs only to know the input is there
            _require_present(first)

    digest = request_hash(inputs, normalised, patterns, output_format, event_limit)
    if not force:
        existing = (
            SkimJob.objects.filter(
                request_hash=digest, state=JobState.SUCCEEDED, output_dataset__isnull=False
            )
            .select_related("output_dataset")
            .order_by("-created_at")
            .first()
        )
        if existing is not None:
            raise IdenticalSkim(existing)

    with transaction.atomic():
        if output_name_taken(output_name):
            raise Conflict(f"the dataset name {output_name} is already taken", where="output_name")
        skim = SkimJob.objects.create(
            owner=user,
            selection=selection,
            selection_normalised=normalised,
            selection_tree=tree_json,
            preset=preset,
            branches=patterns,
            output_format=output_format,
            output_name=output_name,
            output_se=output_se,
            event_limit=event_limit,
            failure_policy=failure_policy,
            request_hash=digest,
            rerun_of=rerun_of,
        )
        for inp in inputs:
            SkimInput.objects.create(
                skim=skim,
                dataset=inp.dataset,
                collection=inp.collection,
                schema_name=inp.collection.schema.name if inp.collection else "",
                schema_version=inp.collection.schema.version if inp.collection else None,
            )
        skim.log(
            "queued", f"selection {normalised!r} on {', '.join(i.dataset.name for i in inputs)}"
        )
        from .tasks import plan_skim

        transaction.on_commit(lambda: plan_skim.delay(skim.pk))
    return skim


# --------------------------------------------------------------------------- planning


def selected_entries(inp: SkimInput, tree) -> dict[str, np.ndarray]:
    """Entries passing ``tree`` in one input, by file GUID: from the TAG DB, or by scanning
    the event files of a dataset without TAGs."""
    if inp.collection is not None:
        return get_store().entries_by_file(inp.collection.key, tree)

    found: dict[str, np.ndarray] = {}
    for file in inp.dataset.files.order_by("lfn"):
        with _open_event_file(file) as (t, where):
            schema = _scan_schema(file)
            checked = check(tree, schema.attribute_types())
            tags = compute_tags(schema, t)
            mask = np.asarray(evaluate(checked, tags), dtype=bool)
        entries = np.nonzero(mask)[0].astype(np.int64)
        if len(entries):
            found[str(file.guid)] = entries
    return found


def do_plan_skim(skim: SkimJob) -> list[SkimPart]:
    """Record one part per input file that holds selected entries (applying the event
    limit in file order). Ends the skim at once when nothing would be written."""
    parts: list[SkimPart] = []
    remaining = skim.event_limit
    number = 0
    for inp in skim.inputs.select_related("dataset", "collection"):
        files = {str(f.guid): f for f in inp.dataset.files.all()}
        if not files:
            raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
        tree = parse(skim.selection)
        if inp.collection is not None:
            tree = check(tree, get_store().attribute_types(inp.collection.key))
        by_file = selected_entries(inp, tree)
        for guid in sorted(by_file, key=lambda g: files[g].lfn if g in files else g):
            if guid not in files:
                raise DSSError(
                    f"the TAG collection names file {guid}, which {inp.dataset.name} no longer has; "
                    "rebuild its TAGs",
                    where=inp.dataset.name,
                )
            entries = np.asarray(by_file[guid], dtype=np.int64)
            if remaining is not None:
                entries = entries[:remaining]
                remaining -= len(entries)
            if len(entries) == 0:
                continue
            number += 1
            parts.append(
                SkimPart(
                    skim=skim,
                    number=number,
                    input_file=files[guid],
                    entries=zlib.compress(entries.tobytes()),
                    n_entries=len(entries),
                )
            )
    total = sum(p.n_entries for p in parts)
    with transaction.atomic():
        SkimPart.objects.bulk_create(parts)
        SkimJob.objects.filter(pk=skim.pk).update(events_selected=total, progress_total=total)
    skim.events_selected = skim.progress_total = total
    skim.log("planned", f"{total} events selected in {len(parts)} file(s)")
    return list(skim.parts.all())


def part_entries(part: SkimPart) -> np.ndarray:
    return np.frombuffer(zlib.decompress(bytes(part.entries)), dtype=np.int64)


# --------------------------------------------------------------------------- one part


def claim_part(part_id: int, task_id: str) -> SkimPart | None:
    """Take a part for this worker; None when another worker has it or it is over.

    A part left ``running`` by the same task message may be taken again: that is the
    broker redelivering the task of a worker that died."""
    mine = Q(state=PartState.QUEUED) | Q(state=PartState.RUNNING, task_id=task_id or "-")
    won = SkimPart.objects.filter(mine, pk=part_id, skim__state=JobState.RUNNING).update(
        state=PartState.RUNNING,
        attempts=F("attempts") + 1,
        task_id=task_id or "",
        worker=socket.gethostname(),
        started_at=timezone.now(),
        message="",
    )
    if not won:
        return None
    return SkimPart.objects.select_related(
        "skim", "skim__output_se", "input_file", "input_file__dataset"
    ).get(pk=part_id)


def _scratch_dir(skim: SkimJob) -> Path:
    d = Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk)
    d.mkdir(parents=True, exist_ok=True)
    return d


def output_lfn(skim: SkimJob, number: int) -> str:
    return f"{skim.output_name}._{number:05d}{eventio.EXTENSIONS[skim.output_format]}"


def verify_input(file: File, replica: Replica) -> None:
    """The input's bytes must still match the catalog (size and adler32) before we use it."""
    endpoint = replica.storage_element.endpoint()
    where = f"{replica.storage_element.name}:{replica.path}"
    if not endpoint.exists(replica.path):
        raise NotFound(f"input file {file.lfn} is missing from its storage element", where=where)
    size = endpoint.size(replica.path)
    if size != file.bytes:
        raise StorageError(
            f"input file {file.lfn} has {size} bytes, the catalog says {file.bytes}", where=where
        )
    with endpoint.open_read(replica.path) as fh:
        adler32, _, _ = file_checksum(fh)
    if adler32 != file.adler32:
        raise ChecksumMismatch(
            f"input file {file.lfn} has adler32 {adler32}, the catalog says {file.adler32}",
            where=where,
        )


def do_run_part(part: SkimPart) -> SkimPart:
    """Read the part's selected entries, write its output file and store it, verified.

    The output goes to scratch under a temporary name, then to the output storage element
    at the name derived from the output dataset; nothing is registered here."""
    skim = part.skim
    file = part.input_file
    replica = available_replica(file)
    verify_input(file, replica)
    entries = part_entries(part)
    lfn = output_lfn(skim, part.number)
    scratch = _scratch_dir(skim)
    tmp = scratch / f"{lfn}.{part.attempts}.tmp"
    try:
        with _open_event_file(file) as (tree, where):
            branches = eventio.resolve_branches(list(tree.keys(recursive=False)), skim.branches)
            arrays = eventio.read_entries(tree, branches, entries, where)
        written = eventio.write_events(arrays, str(tmp), skim.output_format)
        if _cancelled(skim.pk):
            return part
        rel = deterministic_path(scope_of(skim.output_name), lfn)
        # the copy computes the adler32 as it reads and checks the stored file against it
        stored = copy(
            str(tmp.resolve()),
            (skim.output_se.endpoint(), rel),
            expected_bytes=written.bytes,
            overwrite=True,
        )
        adler32, nbytes = stored.adler32, stored.bytes
    except OSError as e:
        raise StorageError(
            f"writing the output of {file.lfn} failed: {e.strerror or e}", where=lfn
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    won = SkimPart.objects.filter(pk=part.pk, state=PartState.RUNNING, task_id=part.task_id).update(
        state=PartState.SUCCEEDED,
        output_lfn=lfn,
        output_path=rel,
        output_guid=written.guid,
        output_bytes=nbytes,
        output_adler32=adler32,
        events_written=written.events,
        finished_at=timezone.now(),
    )
    if not won:  # cancelled meanwhile, or another delivery of this task finished it first
        part.refresh_from_db()
        return part
    SkimJob.objects.filter(pk=skim.pk).update(
        events_written=F("events_written") + written.events,
        progress_done=F("progress_done") + part.n_entries,
    )
    skim.log("part", f"{file.lfn}: {written.events} events → {lfn}", part=part.number)
    part.refresh_from_db()
    return part


def do_fail_part(part: SkimPart, err: Exception) -> None:
    message = str(err) if isinstance(err, DSSError) else f"{type(err).__name__}: {err}"
    SkimPart.objects.filter(pk=part.pk, state=PartState.RUNNING).update(
        state=PartState.FAILED, message=message[:4000], finished_at=timezone.now()
    )
    part.skim.log("part-failed", message, part=part.number)


def _cancelled(skim_id: int) -> bool:
    return SkimJob.objects.filter(pk=skim_id, state=JobState.CANCELLED).exists()


# --------------------------------------------------------------------------- finishing


def parts_settled(skim: SkimJob) -> bool:
    return not skim.parts.filter(state__in=[PartState.QUEUED, PartState.RUNNING]).exists()


def claim_finishing(skim_id: int) -> SkimJob | None:
    """The one worker that finishes the skim; None if not all parts are done or another got it."""
    skim = SkimJob.objects.select_related("output_se").get(pk=skim_id)
    if skim.state != JobState.RUNNING or not parts_settled(skim):
        return None
    won = SkimJob.objects.filter(pk=skim_id, state=JobState.RUNNING, finishing=False).update(
        finishing=True
    )
    return skim if won else None


def do_finish_skim(skim: SkimJob) -> SkimJob:
    """Register the output dataset (all parts, or the good ones under the 'partial' policy),
    write the provenance record and end the skim."""
    parts = list(skim.parts.select_related("input_file", "input_file__dataset").order_by("number"))
    good = [p for p in parts if p.state == PartState.SUCCEEDED]
    bad = [p for p in parts if p.state != PartState.SUCCEEDED]
    if bad and (skim.failure_policy == FailurePolicy.FAIL or not good):
        _remove_outputs(skim, good)
        reasons = "; ".join(f"{p.input_file.lfn}: {p.message or p.state}" for p in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        state = JobState.FAILED
        message = f"{len(bad)} of {len(parts)} file(s) failed: {reasons}{more}"
        SkimJob.objects.filter(pk=skim.pk).update(finishing=False)
        skim.finish(state, message)
        write_provenance(skim)
        return skim
    with transaction.atomic():
        dataset = Dataset.objects.create(
            name=skim.output_name,
            created_by=skim.owner,
            description=f"Skim #{skim.pk}: {skim.selection_normalised} on "
            + ", ".join(i.dataset.name for i in skim.inputs.select_related("dataset")),
        )
        for p in good:
            f = File.objects.create(
                dataset=dataset,
                lfn=p.output_lfn,
                guid=p.output_guid,
                bytes=p.output_bytes,
                adler32=p.output_adler32,
                events=p.events_written,
                tree="events",
            )
            Replica.objects.create(file=f, storage_element=skim.output_se, path=p.output_path)
        SkimJob.objects.filter(pk=skim.pk).update(output_dataset=dataset, finishing=False)
        skim.output_dataset = dataset
        dmu_catalogs.queue_rucio_registration(dataset)
    written = sum(p.events_written for p in good)
    if bad:
        names = ", ".join(p.input_file.lfn for p in bad)
        skim.finish(JobState.PARTIAL, f"{written:,} events in {len(good)} file(s); failed: {names}")
    else:
        skim.finish(
            JobState.SUCCEEDED, f"{written:,} events in {len(good)} file(s) → {dataset.name}"
        )
    write_provenance(skim)
    shutil.rmtree(Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk), ignore_errors=True)
    return skim


def _remove_outputs(skim: SkimJob, parts: Sequence[SkimPart]) -> None:
    """Delete output files that parts stored but that will not be registered."""
    endpoint = skim.output_se.endpoint()
    for p in parts:
        if p.output_path:
            try:
                endpoint.delete(p.output_path, missing_ok=True)
            except (DSSError, OSError) as e:
                log.warning("could not remove %s: %s", p.output_path, e)
    shutil.rmtree(Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk), ignore_errors=True)


def do_fail_skim(skim: SkimJob, err: Exception) -> None:
    message = (
        str(err) if isinstance(err, DSSError) else f"internal error: {type(err).__name__}: {err}"
    )
    skim.finish(JobState.FAILED, message)
    write_provenance(skim)


# --------------------------------------------------------------------------- cancel, retry, re-run


def do_cancel_skim(skim: SkimJob, user=None) -> SkimJob:
    """Stop a skim: queued parts never start, running ones are revoked, outputs removed."""
    _may_change(skim, user)
    if skim.is_final:
        raise Conflict(f"skim #{skim.pk} has already {skim.state}", where="skim")
    if not skim.finish(JobState.CANCELLED, f"cancelled by {user or 'the system'}"):
        skim.refresh_from_db()
        raise Conflict(f"skim #{skim.pk} has already {skim.state}", where="skim")
    running = list(
        skim.parts.filter(state=PartState.RUNNING)
        .exclude(task_id="")
        .values_list("task_id", flat=True)
    )
    skim.parts.filter(state__in=[PartState.QUEUED, PartState.RUNNING]).update(
        state=PartState.CANCELLED, finished_at=timezone.now()
    )
    if running:
        from dss.celery import app

        app.control.revoke(running, terminate=True, signal="SIGTERM")
    _remove_outputs(skim, list(skim.parts.exclude(output_path="")))
    write_provenance(skim)
    return skim


def do_retry_skim(skim: SkimJob, user=None) -> SkimJob:
    """Run again only the parts that failed (or were cancelled) of a failed/partial skim."""
    _may_change(skim, user)
    if skim.state not in (JobState.FAILED, JobState.PARTIAL, JobState.CANCELLED):
        raise Conflict(
            f"skim #{skim.pk} is {skim.state}; only an ended, unsuccessful skim can be retried",
            where="skim",
        )
    if skim.output_dataset_id:
        raise Conflict(
            f"skim #{skim.pk} already registered {skim.output_name}; re-run it under a new name instead",
            where="skim",
        )
    retry = list(skim.parts.exclude(state=PartState.SUCCEEDED).values_list("pk", flat=True))
    if not retry and skim.parts.exists():
        raise Conflict("no part failed: nothing to retry", where="skim")
    with transaction.atomic():
        SkimPart.objects.filter(pk__in=retry).update(state=PartState.QUEUED, message="", task_id="")
        SkimJob.objects.filter(pk=skim.pk).update(
            state=JobState.RUNNING if skim.parts.exists() else JobState.QUEUED,
            finished_at=None,
            message="",
            finishing=False,
        )
        ProvenanceRecord.objects.filter(skim=skim).delete()
        skim.refresh_from_db()
        skim.log("retry", f"{len(retry)} part(s) queued again by {user or 'the system'}")
        from .tasks import plan_skim, run_part

        if skim.state == JobState.QUEUED:
            transaction.on_commit(lambda: plan_skim.delay(skim.pk))
        else:
            transaction.on_commit(lambda: [run_part.delay(pk) for pk in retry])
    return skim


def do_rerun(record: ProvenanceRecord, user, output_name: str | None = None) -> SkimJob:
    """A new skim from a provenance record: same inputs, selection and options."""
    old = record.skim
    name = output_name or _rerun_name(old.output_name)
    inputs = []
    for i in old.inputs.select_related("dataset", "collection", "collection__schema"):
        collection = (
            i.collection if i.collection and i.collection.state == CollectionState.READY else None
        )
        inputs.append(InputSpec(i.dataset, collection))
    return check_submit_skim(
        user=user,
        inputs=inputs,
        selection=old.selection,
        output_name=name,
        output_se=old.output_se,
        branches=old.branches,
        output_format=old.output_format,
        event_limit=old.event_limit,
        failure_policy=old.failure_policy,
        force=True,
        rerun_of=record,
    )


def _rerun_name(name: str) -> str:
    base = name.split("_rerun")[0]
    n = 1
    while output_name_taken(f"{base}_rerun{n}"):
        n += 1
    return f"{base}_rerun{n}"


# --------------------------------------------------------------------------- provenance


def software_versions() -> dict[str, str]:
    import awkward
    import numpy
    import sqlalchemy
    import uproot

    return {
        "dss": DSS_VERSION,
        "python": platform.python_version(),
        "uproot": uproot.__version__,
        "awkward": awkward.__version__,
        "numpy": numpy.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "platform": platform.platform(),
    }


def write_provenance(skim: SkimJob) -> ProvenanceRecord:
    """Write (or rewrite) the skim's provenance record from what it did."""
    skim = SkimJob.objects.select_related("owner", "output_se", "output_dataset", "preset").get(
        pk=skim.pk
    )
    inputs = []
    for i in skim.inputs.select_related("dataset", "collection"):
        inputs.append(
            {
                "dataset": i.dataset.name,
                "collection": i.collection_id,
                "schema": i.schema_name or None,
                "schema_version": i.schema_version,
                "method": "tags" if i.collection_id else "scan",
                "files": [
                    {"lfn": f.lfn, "guid": str(f.guid), "adler32": f.adler32, "events": f.events}
                    for f in i.dataset.files.order_by("lfn")
                ],
            }
        )
    parts = list(skim.parts.select_related("input_file").order_by("number"))
    outputs = [
        {
            "lfn": p.output_lfn,
            "guid": p.output_guid,
            "adler32": p.output_adler32,
            "bytes": p.output_bytes,
            "events": p.events_written,
            "input_guid": str(p.input_file.guid),
            "input_lfn": p.input_file.lfn,
            "state": p.state,
        }
        for p in parts
        if p.state == PartState.SUCCEEDED and skim.output_dataset_id
    ]
    failed = [
        {"input_lfn": p.input_file.lfn, "state": p.state, "reason": p.message}
        for p in parts
        if p.state != PartState.SUCCEEDED
    ]
    durations = {
        "queued_s": (skim.started_at - skim.created_at).total_seconds()
        if skim.started_at
        else None,
        "run_s": (skim.finished_at - skim.started_at).total_seconds()
        if skim.started_at and skim.finished_at
        else None,
        "parts_s": [
            (p.finished_at - p.started_at).total_seconds()
            if p.started_at and p.finished_at
            else None
            for p in parts
        ],
    }
    fields = {
        "username": skim.owner.get_username() if skim.owner else "",
        "state": skim.state,
        "selection": skim.selection,
        "selection_normalised": skim.selection_normalised,
        "selection_tree": skim.selection_tree,
        "options": {
            "branches": skim.branches,
            "preset": skim.preset.name if skim.preset else None,
            "output_format": skim.output_format,
            "event_limit": skim.event_limit,
            "failure_policy": skim.failure_policy,
            "output_se": skim.output_se.name,
            "output_name": skim.output_name,
            "rerun_of": skim.rerun_of_id,
            "message": skim.message,
            "failed_parts": failed,
        },
        "inputs": inputs,
        "outputs": outputs,
        "software": software_versions(),
        "workers": sorted({p.worker for p in parts if p.worker}),
        "timing": {
            "created": skim.created_at.isoformat(),
            "started": skim.started_at.isoformat() if skim.started_at else None,
            "finished": skim.finished_at.isoformat() if skim.finished_at else None,
            **durations,
        },
        "output_dataset_name": skim.output_dataset.name if skim.output_dataset_id else "",
        "input_dataset_names": " ".join(i["dataset"] for i in inputs),
    }
    record, _ = ProvenanceRecord.objects.update_or_create(skim=skim, defaults=fields)
    return record


def prov_json(record: ProvenanceRecord) -> dict:
    """The record as W3C PROV-JSON: entities (files, selection), the skim activity, agents."""
    ns = "dss"
    activity = f"{ns}:skim-{record.skim_id}"
    doc: dict = {
        "prefix": {ns: "urn:dss:", "prov": "http://www.w3.org/ns/prov#"},
        "entity": {},
        "activity": {
            activity: {
                "prov:type": "dss:Skim",
                "prov:startTime": record.timing.get("started"),
                "prov:endTime": record.timing.get("finished"),
                "dss:state": record.state,
                "dss:selection": record.selection,
                "dss:selection_normalised": record.selection_normalised,
                "dss:options": json.dumps(record.options, sort_keys=True),
            }
        },
        "agent": {},
        "used": {},
        "wasGeneratedBy": {},
        "wasAssociatedWith": {},
        "wasDerivedFrom": {},
    }
    user = f"{ns}:user-{record.username or 'unknown'}"
    software = f"{ns}:software-dss-{record.software.get('dss')}"
    doc["agent"][user] = {"prov:type": "prov:Person", "dss:username": record.username}
    doc["agent"][software] = {
        "prov:type": "prov:SoftwareAgent",
        **{f"dss:{k}": v for k, v in record.software.items()},
    }
    doc["wasAssociatedWith"]["_:assoc-user"] = {"prov:activity": activity, "prov:agent": user}
    doc["wasAssociatedWith"]["_:assoc-software"] = {
        "prov:activity": activity,
        "prov:agent": software,
    }
    for host in record.workers:
        agent = f"{ns}:host-{host}"
        doc["agent"][agent] = {"prov:type": "prov:SoftwareAgent", "dss:hostname": host}
        doc["wasAssociatedWith"][f"_:assoc-{host}"] = {
            "prov:activity": activity,
            "prov:agent": agent,
        }
    n = 0
    for inp in record.inputs:
        for f in inp["files"]:
            eid = f"{ns}:file-{f['guid']}"
            doc["entity"][eid] = {
                "prov:type": "dss:InputFile",
                "dss:lfn": f["lfn"],
                "dss:adler32": f["adler32"],
                "dss:dataset": inp["dataset"],
                "dss:events": f["events"],
            }
            n += 1
            doc["used"][f"_:used-{n}"] = {"prov:activity": activity, "prov:entity": eid}
        if inp.get("collection"):
            cid = f"{ns}:tagcollection-{inp['collection']}"
            doc["entity"][cid] = {
                "prov:type": "dss:TagCollection",
                "dss:schema": inp["schema"],
                "dss:schema_version": inp["schema_version"],
                "dss:dataset": inp["dataset"],
            }
            n += 1
            doc["used"][f"_:used-{n}"] = {"prov:activity": activity, "prov:entity": cid}
    for i, f in enumerate(record.outputs, 1):
        eid = f"{ns}:file-{f['guid']}"
        doc["entity"][eid] = {
            "prov:type": "dss:OutputFile",
            "dss:lfn": f["lfn"],
            "dss:adler32": f["adler32"],
            "dss:bytes": f["bytes"],
            "dss:events": f["events"],
            "dss:dataset": record.output_dataset_name,
        }
        doc["wasGeneratedBy"][f"_:gen-{i}"] = {"prov:entity": eid, "prov:activity": activity}
        doc["wasDerivedFrom"][f"_:der-{i}"] = {
            "prov:generatedEntity": eid,
            "prov:usedEntity": f"{ns}:file-{f['input_guid']}",
            "prov:activity": activity,
        }
    return {k: v for k, v in doc.items() if v}


def provenance_queryset(
    *, user: str = "", dataset: str = "", state: str = "", since=None, until=None
):
    """Provenance records filtered as the operators' history page does."""
    qs = ProvenanceRecord.objects.select_related("skim")
    if user:
        qs = qs.filter(username__iexact=user)
    if dataset:
        qs = qs.filter(
            Q(output_dataset_name__icontains=dataset) | Q(input_dataset_names__icontains=dataset)
        )
    if state:
        qs = qs.filter(state=state)
    if since:
        qs = qs.filter(created_at__date__gte=since)
    if until:
        qs = qs.filter(created_at__date__lte=until)
    return qs


def do_ensure_branch_preset(name: str, description: str, patterns: list[str]) -> BranchPreset:
    """Create or update a site branch preset (e.g. "muons and MET")."""
    if not patterns:
        raise InvalidInput("a preset names at least one branch or pattern", where="patterns")
    preset, _ = BranchPreset.objects.update_or_create(
        name=name, defaults={"description": description, "patterns": list(patterns)}
    )
    return preset
