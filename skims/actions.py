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
import posixpath
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from conditions import lumi as conditions_lumi
from dmu import actions as dmu_actions
from dmu import catalogs as dmu_catalogs
from dmu.audit import Finding
from dmu.checksum import file_checksum
from dmu.eventfiles import open_event_file
from dmu.models import Dataset, File, Replica, ReplicaState, StorageElement
from dmu.names import check_dataset_name, scope_of
from dmu.storage import deterministic_path, temp_name
from dmu.transfer import copy
from dss import failpoints, leases
from dss.errors import (
    BadEventFile,
    Conflict,
    DSSError,
    InvalidInput,
    NotFound,
    StorageError,
)
from dss.jobs import FINAL_STATES, JobState
from dss.roles import may_change
from tagdb import actions as tag_actions
from tagdb.actions import check_selection, collection_schema, get_store
from tagdb.goodruns import WHERE as GRL_WHERE
from tagdb.goodruns import GoodRunList, missing_runs_warning, parse_good_run_list
from tagdb.models import CollectionState, TagCollection, TagSchema
from tagdb.schema import auto_schema, builtin_schemas, compute_tags
from tagdb.selection import check, evaluate, normalise, parse, tree_to_json

from . import brokerage, eventio, sitejobs
from .models import (
    BranchPreset,
    FailurePolicy,
    OutputFormat,
    PartState,
    ProvenanceRecord,
    RunOn,
    SkimInput,
    SkimJob,
    SkimPart,
    SkimPartInput,
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
    """What the user names as an input: a dataset, and optionally its TAG collection.

    ``files`` pins the files to select from (records with lfn, guid, adler32, events), as a
    re-run does to select from exactly the files of the skim it repeats; ``scan_schema``
    is the schema a scan evaluates the selection with (None: the fitting one)."""

    dataset: Dataset
    collection: TagCollection | None
    files: tuple[dict, ...] = ()
    scan_schema: TagSchema | None = None


def file_record(f: File) -> dict:
    """What provenance and re-runs keep of an input file."""
    return {"lfn": f.lfn, "guid": str(f.guid), "adler32": f.adler32, "events": f.events}


def pinned_files(dataset: Dataset, records: Sequence[dict]) -> list[File]:
    """The files of ``dataset`` that ``records`` name, each with the content it had then;
    Conflict naming the files that left the dataset or changed since."""
    by_guid = {str(f.guid): f for f in dataset.files.all()}
    gone = [r["lfn"] for r in records if r["guid"] not in by_guid]
    changed = [
        r["lfn"]
        for r in records
        if r["guid"] in by_guid and by_guid[r["guid"]].adler32 != r["adler32"]
    ]
    if gone or changed:
        what = []
        if gone:
            what.append(f"no longer in the dataset: {', '.join(gone[:5])}")
        if changed:
            what.append(f"changed since (another adler32): {', '.join(changed[:5])}")
        raise Conflict(
            f"the files this selects from are not as they were in {dataset.name} "
            f"({'; '.join(what)}), so the same events cannot be selected again",
            where=dataset.name,
        )
    return sorted((by_guid[r["guid"]] for r in records), key=lambda f: f.lfn)


def input_files(inp: InputSpec | SkimInput) -> list[File]:
    """The files an input selects from: the pinned ones, or the dataset's files now."""
    pinned = inp.files if isinstance(inp, InputSpec) else (inp.files if inp.pinned else ())
    if pinned:
        return pinned_files(inp.dataset, pinned)
    return list(inp.dataset.files.order_by("lfn"))


def _require_tags_cover(collection: TagCollection, pinned: Sequence[dict]) -> None:
    """StaleTags unless the collection's TAGs cover what is selected from: its dataset's
    files now, or the ``pinned`` files (a re-run's)."""
    if not pinned:
        tag_actions.require_current(collection)
        return
    missing = tag_actions.uncovered(collection, pinned)
    if missing:
        raise Conflict(
            f"the TAGs of {collection.dataset.name} were not built from "
            f"{', '.join(missing[:5])} as it was; rebuild them, or skim without TAGs",
            where=collection.dataset.name,
        )


def file_set_digest(files: Sequence[dict]) -> str:
    """One word for a set of files and their contents (GUID and adler32 of each)."""
    text = "\n".join(sorted(f"{r['guid']}:{r['adler32']}" for r in files))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- helpers


def get_skim_for_user(pk: int, user) -> SkimJob:
    """A skim the user may see: everyone logged in may read skims (they are the site's data)."""
    try:
        return SkimJob.objects.select_related("output_se", "output_dataset", "owner", "site").get(
            pk=pk
        )
    except SkimJob.DoesNotExist:
        raise NotFound(f"no skim #{pk}", where="skim") from None


def _may_change(skim: SkimJob, user) -> None:
    if user is not None and not may_change(user, skim):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("only the skim's owner or an admin may change it")


def _scan_schema(file: File, chosen: TagSchema | None = None):
    """The schema that a dataset without TAGs is selected with: ``chosen`` when given (the
    schema of the TAGs a re-run repeats), else a shipped schema that fits the tree (so
    attribute names are the same as with TAGs), else the automatic one."""
    if chosen is not None:
        return chosen.load()
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
    schema = _scan_schema(first_file, inp.scan_schema)
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
        return list(tree.keys())


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
    """Open a file's event tree (TTree, RNTuple or Parquet table) from its first available
    replica."""

    def __init__(self, file: File):
        self.file = file
        self.handle = None

    def __enter__(self):
        replica = available_replica(self.file)
        endpoint = replica.storage_element.endpoint()
        where = f"{replica.storage_element.name}:{replica.path}"
        try:
            self.handle = open_event_file(
                endpoint.local_path(replica.path) or endpoint.url(replica.path), where
            )
            tree = self.handle.tree(self.file.tree)
        except FileNotFoundError:
            raise NotFound(f"input file {self.file.lfn} is missing", where=where) from None
        except DSSError:
            self.__exit__()
            raise
        except Exception as e:
            self.__exit__()
            raise BadEventFile(
                f"cannot open {self.file.lfn}: {type(e).__name__}: {e}", where=where
            ) from None
        return tree, where

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()


def request_hash(
    inputs: Sequence[InputSpec],
    normalised: str,
    patterns: list[str],
    fmt: str,
    limit,
    good_runs: GoodRunList | None = None,
    outputs: dict | None = None,
    lumi_gt: str = "",
) -> str:
    """What makes two skim requests identical: inputs (the dataset, the collection and the
    TAG build it selects through, and the exact files: GUID and adler32 of each),
    normalised selection, good-run list, options (``outputs``: those of
    :func:`output_options_key`), the global tag of the luminosity its provenance records.
    A dataset that gained, lost or changed a file, or TAGs rebuilt, make a new request."""
    key = {
        "inputs": sorted(
            (
                i.dataset.name,
                i.collection.pk if i.collection else None,
                i.collection.published_build_id if i.collection else None,
                file_set_digest([file_record(f) for f in input_files(i)]),
            )
            for i in inputs
        ),
        "selection": normalised,
        "branches": sorted(patterns),
        "format": fmt,
        "limit": limit,
    }
    if good_runs is not None:
        key["good_runs"] = good_runs.fingerprint
    if outputs:
        key["outputs"] = outputs
    if lumi_gt:
        key["lumi_gt"] = lumi_gt
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
    good_runs=None,
    lumi_gt: str = "",
    output_tree: str = "",
    copy_objects: Sequence[str] = (),
    merge_mb: float | None = None,
    run_on: str = RunOn.PORTAL,
    site: str | None = None,
) -> SkimJob:
    """Validate a skim request and queue it. ``good_runs`` is a good-run list (ATLAS XML
    or JSON text, or a JSON object) kept beside the selection; ``output_tree``,
    ``copy_objects`` and ``merge_mb`` are checked by :func:`check_output_options`. Raises
    InvalidInput (naming the field), Conflict when the output name is taken, IdenticalSkim
    when the same request already succeeded and ``force`` is not set. ``run_on`` says where
    its parts run: the portal's workers, the named ``site``, or sites the broker chooses
    (NoSite, a Conflict, when no site may take them now). ``lumi_gt`` names a conditions
    global tag: the provenance record then holds the integrated luminosity of the selected
    events' luminosity blocks (:func:`check_skim_lumi_gt`)."""
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
    dmu_actions.check_may_write(user, output_name, output_se)
    patterns = list(preset.patterns) if preset else [b.strip() for b in branches if b.strip()]

    normalised, tree_json = None, None
    for inp in inputs:
        files = input_files(inp)
        if inp.collection is not None:
            # TAGs that no longer cover what is selected from would skip files silently.
            _require_tags_cover(inp.collection, inp.files)
        first = files[0] if files else None
        if first is None:
            raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
        tree, norm = _check_selection_for(inp, selection, first)
        if normalised is None:
            normalised, tree_json = norm, tree_to_json(tree)
        if patterns:  # every pattern must match a branch (this opens the file)
            eventio.resolve_branches(_branches_of(first), patterns)
        else:  # "all branches" needs only to know the input is there
            _require_present(first)

    named_site = brokerage.check_run_on(run_on, site)
    if run_on != RunOn.PORTAL:
        files = [f for inp in inputs for f in input_files(inp)]
        brokerage.choose_site(brokerage.storage_needed(files, output_se), named=named_site)
    grl = check_skim_good_runs(inputs, good_runs)
    gt = check_skim_lumi_gt(inputs, lumi_gt)
    tree_name, copies, merge_mb = check_output_options(
        inputs, output_format, output_tree, copy_objects, merge_mb
    )
    digest = request_hash(
        inputs,
        normalised,
        patterns,
        output_format,
        event_limit,
        grl,
        output_options_key(inputs, tree_name, copies, merge_mb),
        gt.name if gt else "",
    )
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
            good_runs=grl.to_json() if grl else None,
            lumi_gt=gt.name if gt else "",
            output_tree=tree_name,
            copy_objects=copies,
            merge_mb=merge_mb,
            failure_policy=failure_policy,
            request_hash=digest,
            rerun_of=rerun_of,
            run_on=run_on,
            site=named_site,
        )
        for inp in inputs:
            schema = inp.collection.schema if inp.collection else inp.scan_schema
            SkimInput.objects.create(
                skim=skim,
                dataset=inp.dataset,
                collection=inp.collection,
                schema_name=schema.name if schema else "",
                schema_version=schema.version if schema else None,
                files=list(inp.files),
                pinned=bool(inp.files),
                scan_schema=inp.scan_schema,
            )
        skim.log(
            "queued", f"selection {normalised!r} on {', '.join(i.dataset.name for i in inputs)}"
        )
        log_good_runs(skim, inputs, grl)
        log_output_options(skim)
        leases.send(skim)
    return skim


def check_skim_lumi_gt(inputs: Sequence[InputSpec], lumi_gt: str | None):
    """The global tag a skim names for its luminosity (None for none). InvalidInput when
    no tag has that name, or when an input is not selected through a TAG collection with
    luminosity-block numbers (the luminosity is that of the blocks its events fall in)."""
    gt = tag_actions.lumi_global_tag(lumi_gt)
    if gt is None:
        return None
    for inp in inputs:
        if inp.collection is None:
            raise InvalidInput(
                f"dataset {inp.dataset.name} has no TAGs: the luminosity of the selected "
                "events needs a TAG collection with luminosity-block numbers",
                where=tag_actions.LUMI_WHERE,
            )
        if "lumi" not in collection_schema(inp.collection).numbering():
            raise InvalidInput(
                f"this collection has no luminosity-block numbers ({inp.collection})",
                where=tag_actions.LUMI_WHERE,
            )
    return gt


def skim_luminosity(skim: SkimJob) -> dict | None:
    """The integrated luminosity of the distinct lumiblocks the skim's selected events
    fall in (over all its TAG inputs, within its good-run list), from the lumi payloads
    of its ``lumi_gt``; None without one. A failure is recorded as ``error``."""
    if not skim.lumi_gt:
        return None
    try:
        gt = tag_actions.lumi_global_tag(skim.lumi_gt)
        blocks: set[tuple[int, int]] = set()
        unnumbered = 0
        for inp in skim.inputs.select_related("collection"):
            if inp.collection is None:
                raise InvalidInput(f"dataset {inp.dataset} was selected without TAGs")
            found, without = tag_actions.selected_lumiblocks(
                inp.collection, skim.selection, skim.good_runs
            )
            blocks |= found
            unnumbered += without
        result = conditions_lumi.luminosity_of_blocks(gt, blocks)
    except DSSError as e:
        return {"global_tag": skim.lumi_gt, "error": str(e)}
    result["events_without_numbers"] = unnumbered
    if skim.event_limit:
        result["note"] = (
            "the skim had an event limit: the luminosity is that of every passing event's "
            "block, not only of the events written"
        )
    return result


# --------------------------------------------------------------------------- planning


def selected_entries(
    inp: SkimInput,
    tree,
    good_runs: GoodRunList | None = None,
    check_in: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """Entries passing ``tree`` (within ``good_runs`` when given) in one input, by file
    GUID: from the TAG DB, or by scanning the event files of a dataset without TAGs
    (``check_in`` is called between files, so that a cancelled or reassigned planning
    stops there)."""
    if inp.collection is not None:
        found = get_store().entries_by_file(inp.collection.key, tree, good_runs=good_runs)
        if isinstance(inp, SkimInput) and inp.pinned:
            keep = {r["guid"] for r in inp.files}
            found = {guid: entries for guid, entries in found.items() if guid in keep}
        return found

    found: dict[str, np.ndarray] = {}
    runs_seen: set[int] = set()
    for file in input_files(inp):
        if check_in is not None:
            check_in()
        with _open_event_file(file) as (t, where):
            schema = _scan_schema(file, inp.scan_schema)
            checked = check(tree, schema.attribute_types())
            tags = compute_tags(schema, t)
            mask = np.asarray(evaluate(checked, tags), dtype=bool)
            if good_runs is not None:
                mask &= scan_good_runs_mask(good_runs, tags, where)
                runs_seen.update(np.unique(tags["run"]).tolist())
        entries = np.nonzero(mask)[0].astype(np.int64)
        if len(entries):
            found[str(file.guid)] = entries
    if good_runs is not None:
        log_missing_runs(inp.skim, inp.dataset.name, sorted(set(good_runs.runs) - runs_seen))
    return found


def plan_parts(
    skim: SkimJob, check_in: Callable[[], None] | None = None
) -> tuple[list[SkimPart], list[SkimInput]]:
    """The parts of ``skim``, unsaved: one per input file that holds selected entries, the
    event limit applied in file order; and the inputs, each with the files it selected
    from and (through TAGs) the build, to record with the parts. TAGs that stopped
    covering their dataset since the skim was submitted fail it, naming the files."""
    parts: list[SkimPart] = []
    remaining = skim.event_limit
    number = 0
    grl = skim_good_runs(skim)
    inputs = list(skim.inputs.select_related("dataset", "collection", "scan_schema"))
    for inp in inputs:
        chosen = input_files(inp)
        files = {str(f.guid): f for f in chosen}
        if not files:
            raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
        tree = parse(skim.selection)
        if inp.collection is not None:
            _require_tags_cover(inp.collection, inp.files if inp.pinned else ())
            inp.tag_build_id = inp.collection.published_build_id
            tree = check(tree, get_store().attribute_types(inp.collection.key))
        inp.files = [file_record(f) for f in chosen]
        by_file = selected_entries(inp, tree, grl, check_in)
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
    return parts, inputs


def selection_digest(parts: Sequence[SkimPart]) -> str:
    """sha256 of the selected (file GUID, entry) list, in GUID then entry order: equal for
    two skims exactly when they selected the same events."""
    h = hashlib.sha256()
    for part in sorted(parts, key=lambda p: str(p.input_file.guid)):
        h.update(str(part.input_file.guid).encode())
        h.update(np.sort(part_entries(part)).astype("<i8").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RerunCheck:
    """How a re-run's selected events compare with those of the skim it repeats."""

    original: int  # the repeated skim's number
    both: int
    only_rerun: int
    only_original: int

    @property
    def same(self) -> bool:
        return not (self.only_rerun or self.only_original)

    @property
    def message(self) -> str:
        if self.same:
            return f"same {self.both:,} events as skim #{self.original}"
        return (
            f"not the same events as skim #{self.original}: {self.both:,} in both, "
            f"{self.only_rerun:,} only in this re-run, {self.only_original:,} only in "
            f"skim #{self.original}"
        )

    def as_dict(self) -> dict:
        return {
            "original": self.original,
            "same": self.same,
            "both": self.both,
            "only_rerun": self.only_rerun,
            "only_original": self.only_original,
            "message": self.message,
        }


def check_rerun(skim: SkimJob) -> RerunCheck | None:
    """For a re-run that has been planned: did it select the events of the skim it
    repeats? Digests decide at once when they agree; else the entries are compared."""
    if skim.rerun_of_id is None or not skim.parts.exists():
        return None
    original = skim.rerun_of.skim
    if skim.selection_digest and skim.selection_digest == original.selection_digest:
        return RerunCheck(original.pk, skim.events_selected, 0, 0)
    both, only_rerun, only_original = compare_selections(skim, original)
    return RerunCheck(original.pk, both, only_rerun, only_original)


def compare_selections(a: SkimJob, b: SkimJob) -> tuple[int, int, int]:
    """(events both selected, only ``a``, only ``b``), by (file GUID, entry)."""

    def events(skim: SkimJob) -> dict[str, np.ndarray]:
        found = {}
        for p in skim.parts.select_related("input_file"):
            found[str(p.input_file.guid)] = part_entries(p)
            for more in p.more_inputs.select_related("file"):  # files merged into the part
                found[str(more.file.guid)] = np.frombuffer(
                    zlib.decompress(bytes(more.entries)), dtype=np.int64
                )
        return found

    ea, eb = events(a), events(b)
    both = only_a = only_b = 0
    for guid in set(ea) | set(eb):
        x, y = ea.get(guid, np.empty(0, np.int64)), eb.get(guid, np.empty(0, np.int64))
        common = len(np.intersect1d(x, y))
        both += common
        only_a += len(x) - common
        only_b += len(y) - common
    return both, only_a, only_b


def do_plan_skim(lease: leases.Lease) -> list[SkimPart]:
    """Record one part per input file that holds selected entries, in the transaction that
    ends the planning attempt (so a planning that dies records nothing). A selection that
    matches nothing ends the skim at once. Returns the parts to queue."""
    skim: SkimJob = lease.unit
    skim.log("started", f"planning on {skim.lease_worker}")
    planned, inputs = plan_parts(skim, lease.check)
    # the digest of what is selected, file by file, before files are merged into parts
    digest = selection_digest(planned)
    merge = merge_parts(skim, planned, lease)
    parts = merge.parts
    total = sum(p.n_entries for p in parts)
    failpoints.reach("skim.plan")
    with lease.committing():
        for inp in inputs:
            SkimInput.objects.filter(pk=inp.pk).update(files=inp.files, tag_build=inp.tag_build_id)
        SkimJob.objects.filter(pk=skim.pk).update(selection_digest=digest)
        if not parts:
            names = ", ".join(i.dataset.name for i in skim.inputs.select_related("dataset"))
            skim.finish(
                JobState.FAILED, f"the selection matches no events in {names}; nothing was written"
            )
            write_provenance(skim)
            return []
        SkimPart.objects.bulk_create(parts)
        record_merge(skim, merge)
        SkimJob.objects.filter(pk=skim.pk).update(events_selected=total, progress_total=total)
        skim.log("planned", f"{total} events selected in {len(parts)} file(s)")
        created = list(skim.parts.select_related("skim"))
        for part in created:
            sitejobs.send_part(part)
    return created


def part_entries(part: SkimPart) -> np.ndarray:
    return np.frombuffer(zlib.decompress(bytes(part.entries)), dtype=np.int64)


# --------------------------------------------------------------------------- one part


def _scratch_dir(skim: SkimJob) -> Path:
    d = Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk)
    d.mkdir(parents=True, exist_ok=True)
    return d


def output_lfn(skim: SkimJob, number: int) -> str:
    return f"{skim.output_name}._{number:05d}{eventio.EXTENSIONS[skim.output_format]}"


def output_path(skim: SkimJob, number: int) -> str:
    """Where part ``number``'s output lives on the output storage element."""
    return deterministic_path(scope_of(skim.output_name), output_lfn(skim, number))


def _scratch_file(skim: SkimJob, number: int, token: str) -> Path:
    """The local file an attempt writes its output to before storing it."""
    return (
        Path(settings.DSS_SCRATCH_DIR)
        / "skims"
        / str(skim.pk)
        / (f"{output_lfn(skim, number)}.{token}.tmp")
    )


def discard_part_attempt(part: SkimPart, token: str) -> None:
    """Remove what attempt ``token`` of ``part`` may have left: its scratch file and the
    temporary beside the output on the storage element."""
    skim = part.skim
    _scratch_file(skim, part.number, token).unlink(missing_ok=True)
    try:
        skim.output_se.endpoint().delete(
            temp_name(output_path(skim, part.number), token), missing_ok=True
        )
    except DSSError as e:
        log.warning("could not remove the temporary of %s: %s", part.job_label(), e)


def verify_input(file: File, replica: Replica) -> str:
    """The input's bytes must still match the catalog before we use it: there, with its
    size, and its adler32 the catalog's, trusted from the server's checksum or from an
    unchanged size and modification time where it can be, read in full only where not
    (see :func:`dmu.actions.check_replica_intact`). Returns how it was verified."""
    return dmu_actions.check_replica_intact(replica, what="input file")


def do_run_part(lease: leases.Lease) -> SkimPart:
    """Read the part's selected entries, write its output file and store it, verified.

    The events stream from each input in turn into the output, DSS_SKIM_CHUNK_EVENTS at a
    time (:func:`write_part_output`). The output is written to scratch and then copied,
    checksum-verified, to a temporary beside its final name on the output storage element,
    both named with this attempt's token; it takes its final name only in the transaction
    that records the part as done, and only if this attempt still holds the part. Nothing
    is registered here."""
    part: SkimPart = lease.unit
    skim = part.skim
    lfn = output_lfn(skim, part.number)
    rel = output_path(skim, part.number)
    _scratch_dir(skim)
    tmp = _scratch_file(skim, part.number, lease.token)
    endpoint = skim.output_se.endpoint()
    try:
        written, copied = write_part_output(lease, part, str(tmp))
        failpoints.reach("skim.part.written")
        lease.check()
        # the copy computes the adler32 as it reads and checks the stored file against it
        stored = copy(
            str(tmp.resolve()),
            (endpoint, rel),
            expected_bytes=written.bytes,
            overwrite=True,
            temp_tag=lease.token,
            publish=False,
            progress=lambda done, total: lease.check(),
        )
        failpoints.reach("skim.part.stored")
    except OSError as e:
        raise StorageError(
            f"writing the output of {part.inputs_label} failed: {e.strerror or e}", where=lfn
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    with lease.committing():
        endpoint.publish(stored.temp, rel, overwrite=True)
        SkimPart.objects.filter(pk=part.pk).update(
            state=PartState.SUCCEEDED,
            output_lfn=lfn,
            output_path=rel,
            output_guid=written.guid,
            output_bytes=stored.bytes,
            output_adler32=stored.adler32,
            events_written=written.events,
            copied=copied,
            finished_at=timezone.now(),
        )
        SkimJob.objects.filter(pk=skim.pk).update(
            events_written=F("events_written") + written.events,
            progress_done=F("progress_done") + part.n_entries,
        )
        skim.log("part", f"{part.inputs_label}: {written.events} events → {lfn}", part=part.number)
    part.refresh_from_db()
    return part


def fail_part_attempt(lease: leases.Lease, err: Exception) -> None:
    """A part's attempt raised ``err``: the part fails with it."""
    do_fail_part(lease.unit, err, lease)


def fail_skim_attempt(lease: leases.Lease, err: Exception) -> None:
    """Planning or finishing raised ``err``: the skim fails with it."""
    do_fail_skim(lease.unit, err, lease)


def do_fail_part(part: SkimPart, err: Exception | str, lease: leases.Lease | None = None) -> bool:
    """Record why a part failed; with ``lease``, only while that attempt still holds it."""
    if isinstance(err, str):
        message = err
    else:
        message = str(err) if isinstance(err, DSSError) else f"{type(err).__name__}: {err}"
    rows = SkimPart.objects.filter(pk=part.pk, state=PartState.RUNNING)
    if lease is not None:
        rows = rows.filter(lease_token=lease.token)
    failed = rows.update(
        state=PartState.FAILED,
        message=message[:4000],
        finished_at=timezone.now(),
        lease_token="",
        lease_expires_at=None,
    )
    if failed:
        part.skim.log("part-failed", message, part=part.number)
    return bool(failed)


# --------------------------------------------------------------------------- finishing


def parts_settled(skim: SkimJob) -> bool:
    return not skim.parts.filter(state__in=[PartState.QUEUED, PartState.RUNNING]).exists()


def finish_if_done(skim_id: int) -> bool:
    """Queue the finishing step once none of the skim's parts is queued or running."""
    skim = SkimJob.objects.filter(SkimJob.waiting(), pk=skim_id, lease_token="").first()
    if skim is None or skim.state != JobState.RUNNING:
        return False
    leases.send(skim)
    return True


def _outcome(skim: SkimJob, parts: Sequence[SkimPart]) -> tuple[str, str]:
    good = [p for p in parts if p.state == PartState.SUCCEEDED]
    bad = [p for p in parts if p.state != PartState.SUCCEEDED]
    if bad and (skim.failure_policy == FailurePolicy.FAIL or not good):
        reasons = "; ".join(f"{p.inputs_label}: {p.message or p.state}" for p in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        return JobState.FAILED, f"{len(bad)} of {len(parts)} file(s) failed: {reasons}{more}"
    written = sum(p.events_written for p in good)
    if bad:
        names = ", ".join(p.inputs_label for p in bad)
        return JobState.PARTIAL, f"{written:,} events in {len(good)} file(s); failed: {names}"
    return JobState.SUCCEEDED, f"{written:,} events in {len(good)} file(s) → {skim.output_name}"


def do_finish_skim(lease: leases.Lease) -> SkimJob:
    """Register the output dataset (all parts, or the good ones under the 'partial' policy),
    write the provenance record and end the skim, all in one transaction that holds the
    skim's lease: a finishing step that dies registers nothing, and the next one starts
    over. When the skim fails, nothing is registered and the outputs of its good parts are
    kept for a retry."""
    skim: SkimJob = lease.unit
    parts = list(skim.parts.select_related("input_file", "input_file__dataset").order_by("number"))
    state, message = _outcome(skim, parts)
    good = [p for p in parts if p.state == PartState.SUCCEEDED]
    failpoints.reach("skim.finish")
    if state == JobState.FAILED:
        # Nothing is registered; what the good parts stored stays for a retry, which
        # verifies it and runs only the parts without a whole output.
        with lease.committing():
            skim.finish(state, message)
            write_provenance(skim)
        return skim
    with lease.committing():
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
                tree=skim.output_tree,
            )
            Replica.objects.create(file=f, storage_element=skim.output_se, path=p.output_path)
        SkimJob.objects.filter(pk=skim.pk).update(output_dataset=dataset)
        skim.output_dataset = dataset
        dmu_catalogs.queue_rucio_registration(dataset)
        skim.finish(state, message)
        write_provenance(skim)
    shutil.rmtree(Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk), ignore_errors=True)
    return skim


def _remove_outputs(skim: SkimJob, parts: Sequence[SkimPart], why: str) -> None:
    """Delete the outputs that ``parts`` stored (they will not be registered) and mark those
    parts cancelled, so that a retry runs them again."""
    endpoint = skim.output_se.endpoint()
    for p in parts:
        if p.output_path:
            try:
                endpoint.delete(p.output_path, missing_ok=True)
            except DSSError as e:
                log.warning("could not remove %s: %s", p.output_path, e)
        SkimPart.objects.filter(pk=p.pk, state=PartState.SUCCEEDED).update(
            state=PartState.CANCELLED, message=f"its output was removed: {why}", **_NO_OUTPUT
        )
    shutil.rmtree(Path(settings.DSS_SCRATCH_DIR) / "skims" / str(skim.pk), ignore_errors=True)


_NO_OUTPUT = {
    "output_lfn": "",
    "output_path": "",
    "output_guid": "",
    "output_bytes": None,
    "output_adler32": "",
    "events_written": 0,
}


def do_fail_skim(skim: SkimJob, err: Exception | str, lease: leases.Lease | None = None) -> bool:
    """End the skim as failed (with ``lease``: only while that attempt holds it) and write
    its provenance record; what its good parts stored stays for a retry."""
    if isinstance(err, str):
        message = err
    else:
        message = (
            str(err)
            if isinstance(err, DSSError)
            else f"internal error: {type(err).__name__}: {err}"
        )
    with transaction.atomic():
        rows = SkimJob.objects.filter(pk=skim.pk)
        if lease is not None:
            rows = rows.filter(lease_token=lease.token)
        if not rows.exists() or not skim.finish(
            JobState.FAILED, message, lease_token="", lease_expires_at=None
        ):
            return False
        write_provenance(skim)
    return True


# --------------------------------------------------------------------------- the catalog check


def output_folders() -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
    """For the catalog check, by output storage element: the folders skims write their
    outputs to (looked through for orphans), and the outputs kept on purpose although no
    dataset registers them (those of failed skims' good parts, for a retry)."""
    folders: dict[str, set[str]] = {}
    kept: dict[str, dict[str, str]] = {}
    for skim in SkimJob.objects.select_related("output_se").filter(state__in=FINAL_STATES):
        se = skim.output_se.name
        folders.setdefault(se, set()).add(posixpath.dirname(output_path(skim, 1)))
    rows = (
        SkimPart.objects.filter(state=PartState.SUCCEEDED, skim__output_dataset__isnull=True)
        .exclude(output_path="")
        .select_related("skim__output_se")
    )
    for p in rows:
        kept.setdefault(p.skim.output_se.name, {})[p.output_path] = (
            f"the output of part {p.number} of skim #{p.skim_id} ({p.skim.state}), kept for a retry"
        )
    return folders, kept


def check_scratch(*, fix: bool = False) -> list[Finding]:
    """Scratch folders of skims that have ended (left by a worker that died)."""
    folder = Path(settings.DSS_SCRATCH_DIR) / "skims"
    ended = {
        str(pk)
        for pk in SkimJob.objects.filter(state__in=FINAL_STATES).values_list("pk", flat=True)
    }
    live = leases.live_tokens()
    findings = []
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        if path.name in ended or not path.name.isdigit():
            stray = list(path.iterdir()) if path.is_dir() else [path]
        else:  # a skim under way: only temporaries of attempts no worker holds
            stray = [f for f in path.iterdir() if f.name.rsplit(".", 2)[-2] not in live]
        for f in stray:
            if fix:
                f.unlink(missing_ok=True)
            findings.append(
                Finding(
                    "temporary",
                    f"scratch:{f}",
                    "left by a skim part that did not finish",
                    fixed=fix,
                )
            )
        if fix and path.is_dir() and path.name in ended:
            shutil.rmtree(path, ignore_errors=True)
    return findings


# --------------------------------------------------------------------------- cancel, retry, re-run


def do_cancel_skim(skim: SkimJob, user=None) -> SkimJob:
    """Stop a skim: queued parts never start, running ones see the cancel at their next
    check (within a heartbeat) and discard what they wrote, stored outputs are removed.
    Every part ends in a state a retry understands (cancelled: run again)."""
    _may_change(skim, user)
    with transaction.atomic():
        parts = list(SkimPart.objects.select_for_update().filter(skim=skim).order_by("number"))
        won = skim.finish(
            JobState.CANCELLED,
            f"cancelled by {user or 'the system'}",
            lease_token="",
            lease_expires_at=None,
        )
        if not won:
            skim.refresh_from_db()
            raise Conflict(f"skim #{skim.pk} has already {skim.state}", where="skim")
        active = [p for p in parts if p.state in (PartState.QUEUED, PartState.RUNNING)]
        stored = [p for p in parts if p.state == PartState.SUCCEEDED]
        SkimPart.objects.filter(pk__in=[p.pk for p in active]).update(
            state=PartState.CANCELLED,
            finished_at=timezone.now(),
            lease_token="",
            lease_expires_at=None,
        )
        write_provenance(skim)
    # Running attempts notice within a heartbeat and discard their own temporaries; these
    # calls cover attempts whose worker is gone.
    for p in active:
        if p.lease_token:
            discard_part_attempt(p, p.lease_token)
    sitejobs.do_cancel_site_jobs(skim)
    _remove_outputs(skim, stored, "the skim was cancelled")
    write_provenance(skim)
    return skim


def output_intact(part: SkimPart) -> bool:
    """Whether a succeeded part's output is on the output storage element with the size and
    adler32 it was stored with (the server's checksum where it has one)."""
    if part.state != PartState.SUCCEEDED or not part.output_path:
        return False
    endpoint = part.skim.output_se.endpoint()
    try:
        if not endpoint.exists(part.output_path):
            return False
        if endpoint.size(part.output_path) != part.output_bytes:
            return False
        adler32 = endpoint.server_checksum(part.output_path)
        if adler32 is None:
            with endpoint.open_read(part.output_path) as fh:
                adler32, _, _ = file_checksum(fh)
    except DSSError:
        return False
    return adler32 == part.output_adler32


def do_retry_skim(skim: SkimJob, user=None) -> SkimJob:
    """Run again every part of an ended, unsuccessful skim whose output is not on the
    storage element, whole and verified; then finish it as usual."""
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
    parts = list(skim.parts.select_related("skim__output_se"))
    keep = {p.pk for p in parts if output_intact(p)}
    retry = [p.pk for p in parts if p.pk not in keep]
    with transaction.atomic():
        SkimPart.objects.filter(pk__in=retry).update(
            state=PartState.QUEUED,
            message="",
            job_state="",
            job_attempts=0,
            lease_token="",
            lease_expires_at=None,
            finished_at=None,
            **_NO_OUTPUT,
        )
        SkimJob.objects.filter(pk=skim.pk).update(
            state=JobState.RUNNING if parts else JobState.QUEUED,
            finished_at=None,
            message="",
            lease_token="",
            lease_expires_at=None,
            events_written=sum(p.events_written for p in parts if p.pk in keep),
            progress_done=sum(p.n_entries for p in parts if p.pk in keep),
        )
        ProvenanceRecord.objects.filter(skim=skim).delete()
        skim.refresh_from_db()
        kept = f"; {len(keep)} part(s) keep their verified output" if keep else ""
        skim.log("retry", f"{len(retry)} part(s) queued again by {user or 'the system'}{kept}")
        if not parts:
            leases.send(skim)  # planning again
        elif retry:
            for part in SkimPart.objects.filter(pk__in=retry).select_related("skim"):
                sitejobs.send_part(part)
        else:
            leases.send(skim)  # every output is there: finish at once
    return skim


def rerun_input(old: SkimInput) -> InputSpec:
    """How a re-run selects from one input of the skim it repeats, so that it selects the
    same events: from exactly the same files (GUID and adler32), through the same TAG
    build while it is still the collection's, or TAGs rebuilt from the same files with the
    same schema; else by scanning those files with that schema. Conflict naming the files
    when some left the dataset or changed."""
    records = tuple(old.files) or tuple(file_record(f) for f in old.dataset.files.all())
    pinned_files(old.dataset, records)  # raises when the same files are not there
    collection = old.collection
    if collection is not None and collection.state == CollectionState.READY:
        same_schema = (collection.schema.name, collection.schema.version) == (
            old.schema_name,
            old.schema_version,
        )
        # The same build, or one rebuilt with the same schema from the same files (TAGs
        # are computed the same way from the same bytes), selects the same events.
        if same_schema and not tag_actions.uncovered(collection, records):
            return InputSpec(old.dataset, collection, records)
    schema = None
    if old.schema_name:
        schema = TagSchema.objects.filter(name=old.schema_name, version=old.schema_version).first()
    return InputSpec(old.dataset, None, records, schema)


def do_rerun(record: ProvenanceRecord, user, output_name: str | None = None) -> SkimJob:
    """A new skim from a provenance record: the same selection and options over the same
    files, through the same TAG build when it is still published (see :func:`rerun_input`).
    Its own record then says whether it selected the same events."""
    old = record.skim
    name = output_name or _rerun_name(dmu_actions.name_for_user(user, old.output_name))
    inputs = [
        rerun_input(i)
        for i in old.inputs.select_related(
            "dataset", "collection", "collection__schema", "scan_schema"
        )
    ]
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
        good_runs=old.good_runs,
        lumi_gt=old.lumi_gt,
        output_tree=old.output_tree,
        copy_objects=old.copy_objects,
        merge_mb=old.merge_mb,
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


def ran_on(part: SkimPart) -> dict:
    """Where a part of a skim on sites ran: its site, its (last) batch job and node, and
    how many batch jobs it took."""
    return {
        "site": part.site.name if part.site_id else None,
        "batch_job_id": part.batch_job_id,
        "node": part.batch_node,
        "attempts": part.job_attempts,
    }


def write_provenance(skim: SkimJob) -> ProvenanceRecord:
    """Write (or rewrite) the skim's provenance record from what it did."""
    skim = SkimJob.objects.select_related(
        "owner", "output_se", "output_dataset", "preset", "site"
    ).get(pk=skim.pk)
    inputs = []
    for i in skim.inputs.select_related("dataset", "collection"):
        inputs.append(
            {
                "dataset": i.dataset.name,
                "collection": i.collection_id,
                "tag_build": i.tag_build_id,
                "schema": i.schema_name or None,
                "schema_version": i.schema_version,
                "method": "tags" if i.collection_id else "scan",
                # the files it selected from (recorded at planning; none if it never planned)
                "files": sorted(i.files, key=lambda f: f["lfn"]),
            }
        )
    parts = list(skim.parts.select_related("input_file", "site").order_by("number"))
    rerun = check_rerun(skim)
    outputs = [
        {
            "lfn": p.output_lfn,
            "guid": p.output_guid,
            "adler32": p.output_adler32,
            "bytes": p.output_bytes,
            "events": p.events_written,
            # an output merged from several inputs names no single one
            **(
                {"input_guid": str(p.input_file.guid), "input_lfn": p.input_file.lfn}
                if p.n_inputs == 1
                else {}
            ),
            "inputs": part_inputs(p),
            "objects": p.copied,
            "state": p.state,
            **({"ran_on": ran_on(p)} if p.site_id else {}),
        }
        for p in parts
        if p.state == PartState.SUCCEEDED and skim.output_dataset_id
    ]
    failed = [
        {
            "input_lfn": p.inputs_label,
            "inputs": [i["lfn"] for i in part_inputs(p)],
            "state": p.state,
            "reason": p.message,
            **({"ran_on": ran_on(p)} if p.site_id else {}),
        }
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
            "output_tree": skim.output_tree,
            "copy_objects": skim.copy_objects,
            "merge_mb": skim.merge_mb,
            "good_runs": skim.good_runs,
            **(
                {"lumi_gt": skim.lumi_gt, "luminosity": skim_luminosity(skim)}
                if skim.lumi_gt
                else {}
            ),
            "failure_policy": skim.failure_policy,
            "run_on": skim.run_on,
            "site": skim.site.name if skim.site_id else None,
            "output_se": skim.output_se.name,
            "output_name": skim.output_name,
            "rerun_of": skim.rerun_of_id,
            "rerun_check": rerun.as_dict() if rerun else None,
            "message": skim.message,
            "failed_parts": failed,
        },
        "inputs": inputs,
        "outputs": outputs,
        "software": software_versions(),
        "workers": sorted({p.batch_node if p.site_id else p.worker for p in parts} - {""}),
        "timing": {
            "created": skim.created_at.isoformat(),
            "started": skim.started_at.isoformat() if skim.started_at else None,
            "finished": skim.finished_at.isoformat() if skim.finished_at else None,
            **durations,
        },
        "output_dataset_name": skim.output_dataset.name if skim.output_dataset_id else "",
        "events_selected": skim.events_selected,
        "selection_digest": skim.selection_digest,
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
        for k, inp in enumerate(output_inputs(f), 1):
            doc["wasDerivedFrom"][f"_:der-{i}" + (f"-{k}" if k > 1 else "")] = {
                "prov:generatedEntity": eid,
                "prov:usedEntity": f"{ns}:file-{inp['guid']}",
                "prov:activity": activity,
                "dss:events": inp["events"],
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


# --------------------------------------------------------------------------- good-run lists


def skim_good_runs(skim: SkimJob) -> GoodRunList | None:
    """The good-run list the skim records (None without one)."""
    return parse_good_run_list(skim.good_runs) if skim.good_runs else None


def check_skim_good_runs(inputs: Sequence[InputSpec], good_runs) -> GoodRunList | None:
    """Read a skim request's good-run list (ATLAS XML or JSON text, a JSON object, or a
    GoodRunList; None or blank for none) and check that every input has run numbers to
    apply it to. Raises InvalidInput naming the line, run or input."""
    if good_runs is None or good_runs == {}:
        return None
    if isinstance(good_runs, str | bytes) and not good_runs.strip():
        return None
    grl = good_runs if isinstance(good_runs, GoodRunList) else parse_good_run_list(good_runs)
    for inp in inputs:
        if "run" not in _numbering_of(inp):
            raise InvalidInput(
                f"{inp.dataset.name} has no run numbers, so a good-run list cannot select from it",
                where=GRL_WHERE,
            )
    return grl


def _numbering_of(inp: InputSpec) -> dict[str, str]:
    if inp.collection is not None:
        return collection_schema(inp.collection).numbering()
    first = inp.dataset.files.order_by("lfn").first()
    return _scan_schema(first).numbering() if first is not None else {}


def log_good_runs(skim: SkimJob, inputs: Sequence[InputSpec], grl: GoodRunList | None) -> None:
    """Record on the skim's log the good-run list it applies and, for each input with
    TAGs, the runs of the list that input lacks (a scan says so when it has read the
    files) and whether its runs are kept whole for want of luminosity blocks."""
    if grl is None:
        return
    skim.log("good-runs", f"good-run list ({grl.format}): {grl.describe()}")
    for inp in inputs:
        if inp.collection is not None:
            missing = get_store().missing_runs(inp.collection.key, grl)
            log_missing_runs(skim, inp.dataset.name, missing)
        if "lumi" not in _numbering_of(inp):
            skim.log(
                "warning",
                f"{inp.dataset.name} has no luminosity-block numbers: the GRL's runs are "
                "kept whole",
            )


def log_missing_runs(skim: SkimJob, dataset_name: str, missing: Sequence[int]) -> None:
    if missing:
        skim.log("warning", missing_runs_warning(missing, dataset_name))


def skim_warnings(skim: SkimJob) -> list[str]:
    """The warnings on the skim's log (runs of its good-run list that inputs lack)."""
    return list(skim.events.filter(kind="warning").order_by("pk").values_list("message", flat=True))


def scan_good_runs_mask(grl: GoodRunList, tags: dict, where: str) -> np.ndarray:
    """Which scanned events ``grl`` keeps (by run alone where the tree has no luminosity
    blocks)."""
    if "run" not in tags:
        raise InvalidInput("the event tree has no run numbers for the good-run list", where=where)
    return grl.mask(tags["run"], tags.get("lumi"))


# --------------------------------------------------------------------------- what outputs hold

# Selected events of an input file written as a sample to measure an output's bytes per event.
SAMPLE_EVENTS = 1000
# The largest merge target (MB): a terabyte.
MAX_MERGE_MB = 1_000_000


def copy_limits() -> eventio.CopyLimits:
    """How large an object copied along into skim outputs may be (the settings)."""
    return eventio.CopyLimits(
        entries=settings.DSS_SKIM_COPY_MAX_ENTRIES, bytes=settings.DSS_SKIM_COPY_MAX_MB * 10**6
    )


def check_output_options(
    inputs: Sequence[InputSpec],
    output_format: str,
    output_tree: str = "",
    copy_objects: Sequence[str] = (),
    merge_mb: float | None = None,
) -> tuple[str, list[str], float | None]:
    """The output tree's name, the names or patterns of objects to copy along and the merge
    target of a skim request, checked. The tree is named as given (a C++ identifier) or as
    the input files name theirs. Every pattern must select, in the first file of each
    input, objects that can be copied (TTrees, RNTuples, TH1/TH2/TH3 histograms) and are
    small (DSS_SKIM_COPY_MAX_ENTRIES, DSS_SKIM_COPY_MAX_MB); a Parquet output cannot hold
    them. The merge target is a positive number of MB. Raises InvalidInput naming the
    field."""
    tree = (output_tree or "").strip()
    if tree:
        eventio.check_tree_name(tree)
    else:
        names = sorted(
            set(
                File.objects.filter(dataset__in=[i.dataset for i in inputs]).values_list(
                    "tree", flat=True
                )
            )
        )
        if len(names) > 1:
            raise InvalidInput(
                f"the input files name their event trees differently ({', '.join(names)}): "
                "name the output tree",
                where="output_tree",
            )
        tree = names[0] if names else "events"
        if not eventio.TREE_NAME.fullmatch(tree):
            raise InvalidInput(
                f"the inputs' tree name {tree!r} is not a C++ identifier: name the output tree",
                where="output_tree",
            )
    if merge_mb is not None and (
        isinstance(merge_mb, bool)
        or not isinstance(merge_mb, int | float)
        or not 0 < merge_mb <= MAX_MERGE_MB
    ):
        raise InvalidInput(
            f"the merge target is a size in MB above 0 and at most {MAX_MERGE_MB:,}, "
            f"not {merge_mb!r}",
            where="merge_mb",
        )
    patterns = list(dict.fromkeys(p.strip() for p in copy_objects if p and p.strip()))
    if patterns and output_format == OutputFormat.PARQUET:
        raise InvalidInput(
            f"a Parquet output holds only its event table, so it cannot carry "
            f"{', '.join(patterns)} along: choose a ROOT TTree or RNTuple output",
            where="copy_objects",
        )
    for inp in inputs if patterns else ():
        first = inp.dataset.files.order_by("lfn").first()
        if first is None:
            raise InvalidInput(f"dataset {inp.dataset.name} has no files", where=inp.dataset.name)
        opener = _open_event_file(first)
        with opener as (_, where):
            directory = opener.handle.directory()
            if directory is None:
                raise InvalidInput(
                    f"{first.lfn} of {inp.dataset.name} is a Parquet file: it holds no objects "
                    f"to copy ({', '.join(patterns)})",
                    where="copy_objects",
                )
            objects = eventio.match_objects(
                eventio.root_objects(directory, where), patterns, first.tree, where
            )
            for name, cls in objects.items():
                eventio.check_small(directory[name], name, cls, where, copy_limits())
        if tree in objects:
            raise InvalidInput(
                f"the output tree would have the name of the object {tree!r} copied along: "
                "name the output tree otherwise",
                where="output_tree",
            )
    return tree, patterns, float(merge_mb) if merge_mb is not None else None


def output_options_key(
    inputs: Sequence[InputSpec], tree: str, copies: Sequence[str], merge_mb: float | None
) -> dict:
    """The output options that make skim requests differ, for :func:`request_hash`: empty
    when they are the defaults (so requests from before these options hash as they did)."""
    key: dict = {}
    default_tree = (
        File.objects.filter(dataset__in=[i.dataset for i in inputs])
        .order_by("tree")
        .values_list("tree", flat=True)
        .first()
    )
    if tree != (default_tree or "events"):
        key["tree"] = tree
    if copies:
        key["copy"] = sorted(copies)
    if merge_mb:
        key["merge_mb"] = merge_mb
    return key


def log_output_options(skim: SkimJob) -> None:
    """Say on the skim's log what its output files will hold beyond the selected events."""
    notes = [f"event tree {skim.output_tree!r}"]
    if skim.copy_objects:
        notes.append(f"copied along from the inputs: {', '.join(skim.copy_objects)}")
    if skim.merge_mb:
        notes.append(f"merged into files of about {skim.merge_mb:g} MB")
    skim.log("outputs", "; ".join(notes))


@dataclass
class MergePlan:
    """Parts after merging: the parts, the further inputs of each (by part number), and what
    the skim's log says about it."""

    parts: list[SkimPart]
    more_inputs: dict[int, list[SkimPartInput]]
    note: str = ""


def merge_parts(
    skim: SkimJob, parts: Sequence[SkimPart], lease: leases.Lease | None = None
) -> MergePlan:
    """With a merge target (``skim.merge_mb``), the parts regrouped so that each writes one
    output of about that size: consecutive input files of one input dataset share a part
    while their expected output fits. A file's expected output is its selected events
    times the bytes per event measured by writing a sample of the selected events of its
    dataset's first file as the output is written (:func:`eventio.sample_event_bytes`),
    on top of the file's own overhead. A file is never split (the objects copied from it
    go with all of its events): one whose output alone exceeds the target has a part of
    its own. Without a target, the parts as they are."""
    if not skim.merge_mb or len(parts) < 2:
        return MergePlan(list(parts), {})
    target = skim.merge_mb * 1e6
    estimates: dict[int, tuple[float, int]] = {}
    groups: list[list[SkimPart]] = []
    size = 0.0
    for part in parts:
        dataset = part.input_file.dataset_id
        if dataset not in estimates:
            estimates[dataset] = _output_estimate(skim, part, lease)
        per_event, overhead = estimates[dataset]
        expected = part.n_entries * per_event
        same = bool(groups) and groups[-1][0].input_file.dataset_id == dataset
        if same and overhead + size + expected <= target:
            groups[-1].append(part)
            size += expected
        else:
            groups.append([part])
            size = expected
    merged: list[SkimPart] = []
    more: dict[int, list[SkimPartInput]] = {}
    for number, group in enumerate(groups, 1):
        first = group[0]
        merged.append(
            SkimPart(
                skim=skim,
                number=number,
                input_file=first.input_file,
                entries=first.entries,
                n_entries=sum(p.n_entries for p in group),
                n_inputs=len(group),
            )
        )
        more[number] = [
            SkimPartInput(position=i, file=p.input_file, entries=p.entries, n_entries=p.n_entries)
            for i, p in enumerate(group[1:], 2)
        ]
    rates = ", ".join(f"{per_event:,.0f}" for per_event, _ in estimates.values())
    note = (
        f"{len(parts)} input files merged into {len(merged)} output file(s) of about "
        f"{skim.merge_mb:g} MB (measured {rates} bytes per event)"
    )
    return MergePlan(merged, more, note)


def _output_estimate(
    skim: SkimJob, part: SkimPart, lease: leases.Lease | None
) -> tuple[float, int]:
    """Bytes per event and per file of the skim's output (with the objects it copies
    along), measured on a sample of ``part``'s selected events."""
    entries = part_entries(part)[:SAMPLE_EVENTS]
    chunk = settings.DSS_SKIM_CHUNK_EVENTS
    token = lease.token if lease is not None else "plan"
    path = _scratch_dir(skim) / f"sample.{token}.tmp"
    opener = _open_event_file(part.input_file)
    with opener as (tree, where):
        branches = eventio.resolve_branches(list(tree.keys()), skim.branches)
        sample = eventio.read_entries(tree, branches, entries, where, chunk=chunk)
        if lease is not None:
            lease.check()

        def copy(writer: eventio.EventWriter) -> None:
            _copy_objects_of(skim, writer, opener.handle, part.input_file, where)

        return eventio.sample_event_bytes(
            sample,
            str(path),
            skim.output_format,
            skim.output_tree,
            chunk,
            copy if skim.copy_objects else None,
        )


def _copy_objects_of(
    skim: SkimJob, writer: eventio.EventWriter, handle, file: File, where: str
) -> None:
    """Copy the objects the skim copies along from the open input ``file`` into ``writer``."""
    directory = handle.directory()
    if directory is None:
        raise BadEventFile(
            f"{file.lfn} is a Parquet file: it holds no objects to copy", where=where
        )
    objects = eventio.match_objects(
        eventio.root_objects(directory, where), skim.copy_objects, file.tree, where
    )
    writer.copy_objects(directory, objects, where, copy_limits())


def record_merge(skim: SkimJob, merge: MergePlan) -> None:
    """Record the further inputs of merged parts (once the parts are saved), and say so on
    the skim's log."""
    if not any(merge.more_inputs.values()):
        return
    saved = {p.number: p for p in skim.parts.all()}
    rows = []
    for number, more in merge.more_inputs.items():
        for row in more:
            row.part = saved[number]
            rows.append(row)
    SkimPartInput.objects.bulk_create(rows)
    skim.log("merged", merge.note)


def part_sources(part: SkimPart) -> Iterator[tuple[File, np.ndarray]]:
    """Each input file of ``part`` with its selected entries, in the order they are written
    (one entry list decompressed at a time)."""
    yield part.input_file, part_entries(part)
    if part.n_inputs > 1:
        for more in part.more_inputs.select_related("file", "file__dataset").order_by("position"):
            yield more.file, np.frombuffer(zlib.decompress(bytes(more.entries)), dtype=np.int64)


def write_part_output(
    lease: leases.Lease, part: SkimPart, path: str
) -> tuple[eventio.WrittenFile, list[str]]:
    """Write the output of ``part`` to ``path`` with :func:`eventio.write_part` (the code a
    worker node runs too): the selected events of each of its inputs in turn (each verified
    against the catalog first), read and written at most DSS_SKIM_CHUNK_EVENTS at a time,
    the lease checked between chunks (a cancel stops it within one); then the objects the
    skim copies along from each input. Returns the written file and the names of the
    objects copied."""
    skim = part.skim

    def inputs() -> Iterator[eventio.PartInput]:
        for file, entries in part_sources(part):
            verify_input(file, available_replica(file))
            lease.check()
            opener = _open_event_file(file)
            with opener as (tree, where):
                yield eventio.PartInput(opener.handle, tree, file.tree, entries, where, file.lfn)

    def after_chunk() -> None:
        failpoints.reach("skim.part.chunk")
        lease.check()

    return eventio.write_part(
        path,
        inputs(),
        fmt=skim.output_format,
        tree_name=skim.output_tree,
        chunk=settings.DSS_SKIM_CHUNK_EVENTS,
        events=part.n_entries,
        branches=skim.branches,
        copy_objects=skim.copy_objects,
        limits=copy_limits(),
        after_chunk=after_chunk,
    )


def part_inputs(part: SkimPart) -> list[dict]:
    """The input files of ``part`` (GUID, name, selected events), for provenance and the
    API."""
    found = [
        {"lfn": part.input_file.lfn, "guid": str(part.input_file.guid)}
        | {"events": len(part_entries(part)) if part.n_inputs > 1 else part.n_entries}
    ]
    if part.n_inputs > 1:
        for more in part.more_inputs.select_related("file").order_by("position"):
            found.append(
                {"lfn": more.file.lfn, "guid": str(more.file.guid), "events": more.n_entries}
            )
    return found


def output_inputs(output: dict) -> list[dict]:
    """The input files of one output of a provenance record (records written before
    outputs could merge name a single ``input_guid``)."""
    if "inputs" in output:
        return output["inputs"]
    return [{"lfn": output["input_lfn"], "guid": output["input_guid"], "events": output["events"]}]


def provenance_rows(record: ProvenanceRecord) -> list[dict]:
    """One row per input file of a provenance record, with the outputs its events went to
    and how many: what the record's page shows."""
    by_input: dict[str, list[dict]] = {}
    for output in record.outputs:
        for inp in output_inputs(output):
            by_input.setdefault(inp["guid"], []).append({**output, "from_input": inp["events"]})
    return [
        {"input": inp, "file": f, "outputs": by_input.get(f["guid"], [])}
        for inp in record.inputs
        for f in inp["files"]
    ]
