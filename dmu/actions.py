"""Catalog operations: register datasets and files, look them up, describe storage."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic
from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from dss import failpoints, leases
from dss.errors import (
    ChecksumMismatch,
    Conflict,
    DSSError,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
)
from dss.jobs import JobState
from dss.roles import is_admin

from . import transfer as engine
from .checksum import file_checksum
from .eventfiles import PARQUET, inspect_event_file, sniff_format
from .models import (
    Dataset,
    File,
    RegistrationJob,
    Replica,
    ReplicaState,
    StorageElement,
    Transfer,
    TransferFile,
    TransferFileState,
    storage_policy,
)
from .names import check_dataset_name, check_se_name, scope_of
from .storage import FileStat, StorageEndpoint, deterministic_path, safe_relpath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InspectedFile:
    lfn: str
    path: str
    guid: str
    bytes: int
    adler32: str
    events: int
    tree: str
    # what the storage element said about the file just before it was read, and when
    stat: FileStat | None = None
    read_at: datetime | None = None


def get_storage_element(name: str) -> StorageElement:
    check_se_name(name)
    try:
        return StorageElement.objects.get(name=name)
    except StorageElement.DoesNotExist:
        raise NotFound(f"no storage element named {name!r}", where="storage element") from None


def get_dataset(name: str) -> Dataset:
    check_dataset_name(name)
    try:
        return Dataset.objects.get(name=name)
    except Dataset.DoesNotExist:
        raise NotFound(f"no dataset named {name!r}", where="dataset") from None


def datasets_with_totals():
    """Datasets annotated with their file count, event total and byte total (one query)."""
    return Dataset.objects.annotate(
        n_files=Count("files", distinct=True),
        n_events=Sum("files__events"),
        n_bytes=Sum("files__bytes"),
    )


def _file_totals(column: str, aggregate):
    """One total over a dataset's files, as a subquery of the dataset row (None without
    files, as a SUM over a LEFT JOIN gives)."""
    files = File.objects.filter(dataset=OuterRef("pk")).order_by().values("dataset")
    return Subquery(files.annotate(total=aggregate(column)).values("total"))


@functools.cache
def _dataset_totals() -> dict:
    """The annotations of :func:`search_datasets`, built once per process: making three
    subqueries costs more than running them for a page, and a query that uses an
    expression works on its own copy."""
    return {
        "n_files": Coalesce(_file_totals("pk", Count), 0),
        "n_events": _file_totals("events", Sum),
        "n_bytes": _file_totals("bytes", Sum),
    }


def search_datasets(query: str = ""):
    """Datasets whose name or description contains ``query``, each with the totals of
    :func:`datasets_with_totals`. The totals are subqueries of each row rather than one
    join and GROUP BY over every dataset: a page of 25 of 10^4 datasets ordered by name
    computes 25 rows' totals, and counting the matches needs no file."""
    qs = Dataset.objects.annotate(**_dataset_totals())
    query = (query or "").strip()
    if query:
        qs = qs.filter(Q(name__icontains=query) | Q(description__icontains=query))
    return qs


def dataset_list_totals(datasets) -> dict:
    """The number of ``datasets`` (a queryset of them) and their files' count, events and
    bytes, in two queries that read each table once."""
    datasets = datasets.order_by()
    everything = not datasets.query.where
    files = (
        File.objects.all() if everything else File.objects.filter(dataset__in=datasets.values("pk"))
    )
    return {"datasets": datasets.count()} | files.aggregate(
        files=Count("pk"), events=Sum("events"), bytes=Sum("bytes")
    )


def check_storage_url(url: str) -> None:
    """Refuse (InvalidInput naming the URL) a storage URL that is malformed or that the
    site's URL policy does not allow: local roots, hosts, plain HTTP (see storage_policy)."""
    try:
        StorageEndpoint(url, policy=storage_policy())
    except InvalidInput as e:
        raise InvalidInput(f"{e.message}: {url}", where="url") from None


def do_add_storage_element(
    name: str, url: str, description: str = "", *, user_writable: bool = False
) -> StorageElement:
    """Create a storage element, or return the existing one if it has the same URL.
    ``user_writable``: physicists may write their own datasets there (see check_may_write)."""
    check_se_name(name)
    check_storage_url(url)
    se, created = StorageElement.objects.get_or_create(
        name=name,
        defaults={
            "url": url.rstrip("/"),
            "description": description,
            "user_writable": user_writable,
        },
    )
    if not created and se.url != url.rstrip("/"):
        raise Conflict(f"storage element {name!r} already exists with URL {se.url}", where=name)
    return se


def user_scope_prefix(user) -> str:
    """The dataset names a user writes: ``user.<username>.``, as Rucio's user scopes."""
    return f"user.{user.get_username()}."


def name_for_user(user, dataset_name: str) -> str:
    """``dataset_name`` moved into ``user``'s own scope unless they may write it as it is:
    ``user.alice.dimuon`` re-run by bob becomes ``user.bob.dimuon``."""
    if user is None or is_admin(user) or dataset_name.startswith(user_scope_prefix(user)):
        return dataset_name
    scope, _, rest = dataset_name.partition(".")
    if scope == "user":
        rest = rest.partition(".")[2] or rest
    return user_scope_prefix(user) + rest


def check_may_write(user, dataset_name: str, se: StorageElement, paths: Iterable[str] = ()) -> None:
    """Forbidden unless ``user`` may write dataset ``dataset_name`` on ``se``.

    Admins (and admin commands, which act without a user) write anywhere; everyone else
    writes only datasets named ``user.<username>.*``, only on storage elements marked
    ``user_writable``, and registers only files at the place ``dmu put`` puts them
    (``paths``: the dataset scope's deterministic path of each file's name). Skim outputs
    and ``dmu put`` registrations obey this rule.
    """
    if user is None or is_admin(user):
        return
    prefix = user_scope_prefix(user)
    if not dataset_name.startswith(prefix) or len(dataset_name) == len(prefix):
        raise Forbidden(
            f"{dataset_name!r} is outside your scope: name your datasets {prefix}<name>",
            where="dataset name",
        )
    if not se.user_writable:
        open_ses = ", ".join(
            StorageElement.objects.filter(user_writable=True).values_list("name", flat=True)
        )
        raise Forbidden(
            f"storage element {se.name} is not open to users' datasets "
            f"(those that are: {open_ses or 'none'})",
            where="storage element",
        )
    for path in paths:
        rel = relative_path(se, path)
        expected = deterministic_path(scope_of(dataset_name), rel.rsplit("/", 1)[-1])
        if rel != expected:
            raise Forbidden(
                f"{rel} is not where your dataset's files go ({expected}, as dmu put "
                "places them): only admins register other files",
                where=path,
            )


def relative_path(se: StorageElement, path: str) -> str:
    """A path on ``se`` relative to its root, given relative, as a full URL, or (for a local
    SE) as an absolute local path inside its root. Anything outside the root is refused."""
    base = se.url.rstrip("/")
    if path.startswith(base + "/"):
        path = path[len(base) + 1 :]
    elif base.startswith("file://") and path.startswith("/"):
        root = urlparse(base).path.rstrip("/")
        if not path.startswith(root + "/"):
            raise InvalidInput(
                f"{path} is not inside storage element {se.name} ({root})", where=path
            )
        path = path[len(root) + 1 :]
    return safe_relpath(path)


def inspect_file(se: StorageElement, rel: str, tree: str | None = None) -> InspectedFile:
    """Checksum a file on ``se`` by streaming it, then read its GUID and event count and
    every branch of its event tree (a ROOT TTree or RNTuple, or a Parquet table), so that
    a damaged file is refused now, naming the branch. A Parquet file also gets its md5
    in the same pass: it makes the GUID of a file that carries none."""
    endpoint = se.endpoint()
    where = f"{se.name}:{rel}"
    read_at = timezone.now()
    stat = endpoint.stat(rel)
    size = stat.size
    with endpoint.open_read(rel) as fh:
        parquet = sniff_format(fh.read(4)) == PARQUET
        fh.seek(0)
        adler32, nbytes, md5 = file_checksum(fh, md5=parquet)
        fh.seek(0)
        info = inspect_event_file(fh, where, nbytes, tree, md5=md5)
    if nbytes != size:
        raise Conflict(f"file changed while it was read ({size} then {nbytes} bytes)", where=where)
    return InspectedFile(
        lfn=rel.rsplit("/", 1)[-1],
        path=rel,
        guid=info.guid,
        bytes=nbytes,
        adler32=adler32,
        events=info.events,
        tree=info.tree,
        stat=stat,
        read_at=read_at,
    )


# A modification time this close to (or after) the moment it was recorded proves nothing:
# a write in the same tick of the file system's clock would leave it as it was (git's
# "racily clean" entries). Such a record is not trusted; the next full check renews it.
RACY = timedelta(seconds=2)


def record_verified(replica: Replica, stat: FileStat, at: datetime) -> None:
    """Remember that ``replica`` matched the catalog as ``stat`` describes it, ``stat``
    having been asked for after the time ``at``."""
    replica.verified_bytes = stat.size
    replica.verified_mtime_ns = stat.mtime_ns
    replica.verified_at = at
    Replica.objects.filter(pk=replica.pk).update(
        verified_bytes=stat.size, verified_mtime_ns=stat.mtime_ns, verified_at=at
    )


def unchanged_since_verified(replica: Replica, stat: FileStat) -> bool:
    """Whether size and modification time (to the nanosecond) are still those recorded
    when ``replica`` was last verified, the record made well after the file's last change
    (see RACY)."""
    if stat.mtime_ns is None or replica.verified_at is None:
        return False
    if (replica.verified_bytes, replica.verified_mtime_ns) != (stat.size, stat.mtime_ns):
        return False
    changed = datetime.fromtimestamp(stat.mtime_ns / 1e9, tz=UTC)
    return changed + RACY <= replica.verified_at


def check_replica_intact(replica: Replica, what: str = "file") -> str:
    """Make sure the bytes of ``replica`` are still those the catalog describes, reading as
    little as it takes, as storage systems do: the file must be there with the catalog's
    size; then the server's own checksum is compared where the storage element has one;
    else a file whose size and modification time are still those recorded when it was
    last verified is trusted; else it is read in full and its adler32 compared (and its
    size and time recorded when it matches).

    A server checksum that fails (an error, a busy server) falls back to the other ways.
    Returns how it was verified: ``"server checksum"``, ``"unchanged"`` or ``"adler32"``.
    Raises NotFound, StorageError (size) or ChecksumMismatch naming the file as ``what``.
    """
    file = replica.file
    endpoint = replica.storage_element.endpoint()
    where = f"{replica.storage_element.name}:{replica.path}"
    if not endpoint.exists(replica.path):
        raise NotFound(f"{what} {file.lfn} is missing from its storage element", where=where)
    at = timezone.now()
    stat = endpoint.stat(replica.path)
    if stat.size != file.bytes:
        raise StorageError(
            f"{what} {file.lfn} has {stat.size} bytes, the catalog says {file.bytes}",
            where=where,
        )
    adler32 = None
    if endpoint.has_server_checksum:
        try:
            adler32 = endpoint.server_checksum(replica.path)
        except StorageError as e:
            # A server whose checksum program fails or is busy does not fail the job: the
            # file is read and checked here instead, as if the server had none.
            log.warning("%s: the server's checksum failed (%s); reading the file", where, e)
    how = "server checksum"
    if adler32 is None:
        if unchanged_since_verified(replica, stat):
            return "unchanged"
        with endpoint.open_read(replica.path) as fh:
            adler32, _, _ = file_checksum(fh)
        how = "adler32"
    if adler32 != file.adler32:
        raise ChecksumMismatch(
            f"{what} {file.lfn} has adler32 {adler32}, the catalog says {file.adler32}",
            where=where,
        )
    record_verified(replica, stat, at)
    return how


def check_register_dataset(
    name: str,
    se: StorageElement,
    paths: Iterable[str],
    *,
    user=None,
    tree: str | None = None,
    description: str = "",
    progress: Callable[[int, int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> tuple[Dataset, int]:
    """Register event files (ROOT TTree or RNTuple, Parquet) on ``se`` as (part of)
    dataset ``name``.

    Every file is read and checksummed before anything is written; then all of them are
    recorded in one transaction (in which ``before_commit`` runs first: a registration job
    checks there that it still holds its lease). Registering a file again changes nothing;
    the same logical name with another checksum is a Conflict, and the whole call
    registers nothing. Returns the dataset and the number of files newly recorded.
    """
    check_dataset_name(name)
    rels = [relative_path(se, p) for p in paths]
    if not rels:
        raise InvalidInput("no files given", where="files")
    lfns = [r.rsplit("/", 1)[-1] for r in rels]
    dupes = sorted({n for n in lfns if lfns.count(n) > 1})
    if dupes:
        raise InvalidInput(f"the same file name is given twice: {', '.join(dupes)}", where="files")

    inspected = []
    for i, rel in enumerate(rels):
        inspected.append(inspect_file(se, rel, tree))
        if progress:
            progress(i + 1, len(rels))
        failpoints.reach("register.file")

    new_files = 0
    with transaction.atomic():
        if before_commit is not None:
            before_commit()
        dataset, _ = Dataset.objects.get_or_create(
            name=name, defaults={"created_by": user, "description": description}
        )
        existing = {
            f.lfn: f for f in File.objects.select_for_update().filter(dataset=dataset, lfn__in=lfns)
        }
        for info in inspected:
            f = existing.get(info.lfn)
            if f is not None:
                if (f.adler32, f.bytes, str(f.guid)) != (info.adler32, info.bytes, info.guid):
                    raise Conflict(
                        f"{info.lfn} is already registered in {name} with adler32 {f.adler32} "
                        f"and {f.bytes} bytes; this file has adler32 {info.adler32} and "
                        f"{info.bytes} bytes",
                        where=f"{se.name}:{info.path}",
                    )
            else:
                f = File.objects.create(
                    dataset=dataset,
                    lfn=info.lfn,
                    guid=info.guid,
                    bytes=info.bytes,
                    adler32=info.adler32,
                    events=info.events,
                    tree=info.tree,
                )
                new_files += 1
            replica, _ = Replica.objects.get_or_create(
                file=f,
                storage_element=se,
                defaults={"path": info.path, "state": ReplicaState.AVAILABLE},
            )
            if replica.path == info.path and info.stat is not None:
                record_verified(replica, info.stat, info.read_at)
    return dataset, new_files


def do_enqueue_registration(
    name: str, se: StorageElement, paths: list[str], *, user=None, tree: str = ""
) -> RegistrationJob:
    """Validate a registration request and queue it for a worker (after the commit)."""
    check_dataset_name(name)
    rels = [relative_path(se, p) for p in paths]
    if not rels:
        raise InvalidInput("no files given", where="files")
    job = RegistrationJob.objects.create(
        dataset_name=name,
        storage_element=se,
        paths=rels,
        tree=tree,
        owner=user,
        progress_total=len(rels),
    )
    job.log("queued", f"{len(rels)} file(s) on {se.name}")
    leases.send(job)
    return job


# --------------------------------------------------------------------------- storage space


@dataclass(frozen=True)
class FreeSpace:
    """Free bytes on a storage element, or None with the reason it is unknown."""

    bytes: int | None
    note: str = ""


def get_free_space(se: StorageElement) -> FreeSpace:
    """Ask the storage element for its free space (local disks and XRootD tell; HTTPS does not)."""
    try:
        free = se.endpoint().free_space()
    except DSSError as e:
        return FreeSpace(None, e.message)
    if free is None:
        return FreeSpace(None, f"{urlparse(se.url).scheme}:// does not report free space")
    return FreeSpace(free)


# --------------------------------------------------------------------------- transfers

ACTIVE = (TransferFileState.QUEUED, TransferFileState.RUNNING)


def get_transfer(pk: int) -> Transfer:
    try:
        return Transfer.objects.select_related("dataset", "destination", "source", "owner").get(
            pk=pk
        )
    except Transfer.DoesNotExist:
        raise NotFound(f"no transfer #{pk}", where="transfer") from None


def transfers_with_totals():
    """Transfers annotated with live totals over their files (one query): bytes copied so far,
    the current rate of the running copies, attempts, files done and failed, the first error,
    and the storage element the first file was copied from."""
    running = Q(files__state=TransferFileState.RUNNING)
    first_error = TransferFile.objects.filter(
        transfer=OuterRef("pk"), state=TransferFileState.FAILED
    ).order_by("finished_at", "pk")
    return Transfer.objects.select_related("dataset", "destination", "source", "owner").annotate(
        n_files=Count("files"),
        n_done=Count("files", filter=Q(files__state=TransferFileState.SUCCEEDED)),
        n_failed=Count("files", filter=Q(files__state=TransferFileState.FAILED)),
        n_running=Count("files", filter=running),
        bytes_done=Sum("files__bytes_done"),
        bytes_copied=Sum(
            "files__bytes_done",
            filter=Q(files__state=TransferFileState.SUCCEEDED, files__already_there=False),
        ),
        rate_now=Sum("files__rate_mb_s", filter=running),
        total_attempts=Sum("files__attempts"),
        first_error=Subquery(first_error.values("error")[:1]),
        first_source=Subquery(
            TransferFile.objects.filter(transfer=OuterRef("pk"), source__isnull=False)
            .order_by("pk")
            .values("source__name")[:1]
        ),
    )


def check_request_transfer(
    dataset: Dataset,
    destination: StorageElement,
    *,
    lfns: Iterable[str] | None = None,
    source: StorageElement | None = None,
    user=None,
) -> Transfer:
    """Record a transfer of ``dataset`` (or of the files named ``lfns``) to ``destination`` and
    queue one Celery task per file, after the commit.

    Each file lands at its deterministic path on the destination. Refused at once: a
    read-only destination, unknown file names, a file with no available replica (on
    ``source`` when given), and a file that another transfer is already moving there.
    """
    dst = destination.endpoint()
    if dst.read_only:
        raise InvalidInput(
            f"{destination.name} ({dst.scheme}://) is read-only: files cannot be copied to it",
            where="destination",
        )
    if source is not None and source.pk == destination.pk:
        raise InvalidInput(
            f"the source and the destination are both {destination.name}", where="source"
        )
    files = list(dataset.files.order_by("lfn"))
    if lfns is not None:
        wanted = list(dict.fromkeys(lfns))
        by_name = {f.lfn: f for f in files}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise NotFound(
                f"{dataset.name} has no file named {', '.join(unknown[:5])}"
                + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""),
                where="files",
            )
        files = [by_name[n] for n in wanted]
    if not files:
        raise InvalidInput(f"{dataset.name} has no files to transfer", where="files")

    replicas = Replica.objects.filter(file__in=files, state=ReplicaState.AVAILABLE)
    on_destination = set(
        replicas.filter(storage_element=destination).values_list("file_id", flat=True)
    )
    sources = replicas.exclude(storage_element=destination)
    if source is not None:
        sources = sources.filter(storage_element=source)
    readable = set(sources.values_list("file_id", flat=True))
    stranded = [f.lfn for f in files if f.pk not in readable and f.pk not in on_destination]
    if stranded:
        where = f" on {source.name}" if source is not None else ""
        raise NotFound(
            f"no available replica{where} of {', '.join(stranded[:5])}"
            + (f" (and {len(stranded) - 5} more)" if len(stranded) > 5 else ""),
            where="source" if source is not None else "files",
        )
    busy = (
        TransferFile.objects.filter(
            file__in=files, transfer__destination=destination, state__in=ACTIVE
        )
        .select_related("file")
        .first()
    )
    if busy is not None:
        raise Conflict(
            f"{busy.file.lfn} is already being copied to {destination.name} by transfer "
            f"#{busy.transfer_id}",
            where="files",
        )

    total = sum(f.bytes for f in files)
    with transaction.atomic():
        transfer = Transfer.objects.create(
            dataset=dataset,
            destination=destination,
            source=source,
            owner=user,
            progress_total=total,
        )
        items = TransferFile.objects.bulk_create(
            TransferFile(transfer=transfer, file=f, path=deterministic_path(dataset.scope, f.lfn))
            for f in files
        )
        transfer.log(
            "queued",
            f"{len(files)} file(s), {total} bytes of {dataset.name} to {destination.name}"
            + (f" from {source.name}" if source is not None else ""),
        )
        for item in items:
            leases.send(item)
    return transfer


def do_run_registration(lease: leases.Lease) -> None:
    """Run a queued registration (a RegistrationJob held under ``lease``): its files are
    read and recorded, and the job ends with what it added."""
    job: RegistrationJob = lease.unit
    job.log("started", f"on {job.lease_worker}")

    def progress(done: int, total: int) -> None:
        lease.check()
        job.set_progress(done, total)

    _, added = check_register_dataset(
        job.dataset_name,
        job.storage_element,
        job.paths,
        user=job.owner,
        tree=job.tree or None,
        progress=progress,
        before_commit=lease.assert_held,
    )
    RegistrationJob.objects.filter(pk=job.pk).update(files_added=added)
    lease.end_job(JobState.SUCCEEDED, f"{added} new file(s) registered in {job.dataset_name}")


def fail_registration_attempt(lease: leases.Lease, err: Exception) -> None:
    """A registration raised ``err``: the job fails with it."""
    message = (
        str(err) if isinstance(err, DSSError) else f"internal error: {type(err).__name__}: {err}"
    )
    lease.end_job(JobState.FAILED, message)


class SlotsFull(Exception):
    """Every transfer slot of the destination storage element is taken: try again later."""


def acquire_transfer_file(item_id: int) -> leases.Lease | None:
    """Take one file of a transfer for this worker (dss.leases); None when it is not ours
    to copy (done, cancelled, or held by a live worker). Raises SlotsFull when the
    destination already receives ``DMU_MAX_TRANSFERS_PER_SE`` files.

    The destination's row is locked while the running copies are counted, so two workers
    cannot both take the last slot. A file whose worker died is taken over (it held a
    slot already)."""
    item = TransferFile.objects.select_related("transfer").filter(pk=item_id).first()
    if item is None or item.transfer.is_final:
        return None
    with transaction.atomic():
        StorageElement.objects.select_for_update().filter(pk=item.transfer.destination_id).first()
        if TransferFile.objects.filter(TransferFile.waiting(), pk=item_id).exists():
            running = (
                TransferFile.objects.filter(
                    transfer__destination_id=item.transfer.destination_id,
                    state=TransferFileState.RUNNING,
                )
                .exclude(pk=item_id)
                .count()
            )
            if running >= settings.DMU_MAX_TRANSFERS_PER_SE:
                raise SlotsFull(f"{running} copies already run into this storage element")
        lease = leases.acquire(TransferFile, item_id)
    if lease is None:
        return None
    lease.unit.transfer.claim()
    return lease


class TransferCancelled(leases.LeaseLost):
    """Raised from the progress callback to stop a copy that is no longer this worker's
    (its transfer was cancelled, or it went to another worker); the engine then removes
    its temporary file."""


class _Progress:
    """The engine's progress callback for one file: writes bytes, rate and attempt to the
    row at most once a second, and stops the copy once the file is no longer this
    attempt's (cancelled, or given to another worker)."""

    def __init__(self, lease: leases.Lease, interval: float = 1.0):
        self.lease = lease
        self.attempt = 1
        self.last_done = 0
        self.mark = (monotonic(), 0)
        self.written_at = 0.0
        self.interval = interval

    def __call__(self, done: int, total: int) -> None:
        if self.lease.lost:
            raise TransferCancelled(f"{self.lease.unit.job_label()} is no longer this worker's")
        now = monotonic()
        if done <= self.last_done:
            # Within one attempt the count only grows: the engine started over.
            self.attempt += 1
            self.mark = (now, 0)
        self.last_done = done
        if now - self.written_at < self.interval and done < total:
            return
        since, at = self.mark
        rate = (done - at) / 1e6 / (now - since) if now > since else 0.0
        self.mark, self.written_at = (now, done), now
        still_ours = TransferFile.objects.filter(
            pk=self.lease.pk, state=TransferFileState.RUNNING, lease_token=self.lease.token
        ).update(bytes_done=done, rate_mb_s=round(rate, 2), attempts=self.attempt)
        if not still_ours:
            raise TransferCancelled(f"{self.lease.unit.job_label()} is no longer this worker's")
        failpoints.reach("transfer.copy")


_GAVE_UP = re.compile(r"gave up after (\d+) attempts")


def _attempts_of(err: DSSError) -> int:
    """How many attempts the engine made before raising ``err`` (it says so when > 1)."""
    if hasattr(err, "attempts"):
        return err.attempts
    m = _GAVE_UP.search(err.message)
    return int(m.group(1)) if m else 1


def _sources(item: TransferFile) -> list[Replica]:
    """Available replicas to copy from, on the transfer's source SE if it names one."""
    qs = (
        item.file.replicas.select_related("storage_element")
        .filter(state=ReplicaState.AVAILABLE)
        .exclude(storage_element=item.transfer.destination_id)
    )
    if item.transfer.source_id:
        qs = qs.filter(storage_element=item.transfer.source_id)
    # Local disks first: the cheapest to read from.
    return sorted(qs, key=lambda r: (not r.storage_element.url.startswith("file:"), r.pk))


def _on_destination(err: DSSError, dst: StorageEndpoint) -> bool:
    """Whether ``err`` concerns the destination, so that another source would not help."""
    return isinstance(err, Conflict | InvalidInput) or (err.where or "").startswith(
        dst.base_url + "/"
    )


def do_copy_transfer_file(lease: leases.Lease) -> TransferFile:
    """Copy one file, held under ``lease``, to the transfer's destination, verified against
    the catalog's adler32 and size, and register the replica there only when the copy is
    whole and this attempt still holds the file.

    A file whose replica is already registered on the destination, or whose destination
    path already holds the same bytes, counts as done. A source that is missing or damaged
    is skipped for the next available replica; a failure at the destination ends at once.
    Raises the DSSError of the last failure; then nothing is registered.
    """
    item: TransferFile = lease.unit
    transfer, file, destination = item.transfer, item.file, item.transfer.destination
    registered = Replica.objects.filter(
        file=file, storage_element=destination, state=ReplicaState.AVAILABLE
    ).first()
    if registered is not None:
        return _succeed(lease, registered.path, None, note="already registered there")
    sources = _sources(item)
    if not sources:
        on = f" on {transfer.source.name}" if transfer.source_id else ""
        raise NotFound(
            f"no available replica{on} of {file.lfn} to copy from",
            where=f"{transfer.dataset.name}/{file.lfn}",
        )
    dst = destination.endpoint()
    failures: list[DSSError] = []
    for replica in sources:
        TransferFile.objects.filter(pk=item.pk).update(source=replica.storage_element)
        item.source = replica.storage_element
        try:
            result = engine.copy(
                (replica.storage_element.endpoint(), replica.path),
                (dst, item.path),
                expected_adler32=file.adler32,
                expected_bytes=file.bytes,
                retries=settings.DMU_TRANSFER_RETRIES,
                progress=_Progress(lease),
                temp_tag=lease.token,
                publish=False,
            )
        except DSSError as e:
            if _on_destination(e, dst):
                raise
            failures.append(e)
            transfer.log("source-failed", f"{file.lfn} from {replica.storage_element.name}: {e}")
            continue
        return _succeed(lease, item.path, result)
    if len(failures) == 1:
        raise failures[0]
    tried = "; ".join(
        f"{r.storage_element.name}: {e.message}" for r, e in zip(sources, failures, strict=True)
    )
    err = type(failures[-1])(f"every source failed ({tried})", where=file.lfn)
    err.attempts = sum(_attempts_of(e) for e in failures)
    raise err


def _succeed(
    lease: leases.Lease, path: str, result: engine.TransferResult | None, note: str = ""
) -> TransferFile:
    """Give a verified copy its name and register its replica, in one transaction that
    still holds the file: a late attempt (its worker thought dead, or the transfer
    cancelled) raises LeaseLost here, and its temporary is removed."""
    item: TransferFile = lease.unit
    file, destination = item.file, item.transfer.destination
    already = result is None or result.already_there
    with lease.committing():
        endpoint = destination.endpoint()
        if result is not None and result.temp:
            endpoint.publish(result.temp, path)
        # the copy verified these bytes: what the storage says of them now goes with them
        # (when it cannot say, the first reader checks the file in full)
        stat_at, stat = timezone.now(), None
        if result is not None:
            try:
                stat = endpoint.stat(path)
            except DSSError as e:
                log.warning("could not stat %s after its copy: %s", path, e)
        TransferFile.objects.filter(pk=item.pk).update(
            state=TransferFileState.SUCCEEDED,
            path=path,
            bytes_done=file.bytes,
            rate_mb_s=round(result.rate_mb_s, 2) if result else 0.0,
            attempts=result.attempts if result else 0,
            already_there=already,
            finished_at=timezone.now(),
        )
        replica, _ = Replica.objects.update_or_create(
            file=file,
            storage_element=destination,
            defaults={"path": path, "state": ReplicaState.AVAILABLE},
        )
        if stat is not None and stat.size == file.bytes:
            record_verified(replica, stat, stat_at)
        Transfer.objects.filter(pk=item.transfer_id).update(
            progress_done=F("progress_done") + file.bytes
        )
    if result is None or result.already_there:
        what = note or "the same file was already there"
    else:
        what = (
            f"{result.bytes} bytes from {item.source.name} at {result.rate_mb_s:.1f} MB/s, "
            f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
        )
    item.transfer.log("file", f"{file.lfn}: {what}", file=file.lfn)
    item.refresh_from_db()
    return item


def do_fail_transfer_file(lease: leases.Lease, err: Exception) -> None:
    """Record why a file could not be copied (nothing was registered for it), if this
    attempt still holds it."""
    item: TransferFile = lease.unit
    if isinstance(err, DSSError):
        message, code, attempts = str(err), err.code, _attempts_of(err)
    else:
        message, code, attempts = f"internal error: {type(err).__name__}: {err}", "error", 1
    failed = lease.release(
        state=TransferFileState.FAILED,
        error=message[:4000],
        error_code=code[:32],
        attempts=attempts,
        rate_mb_s=0.0,
        finished_at=timezone.now(),
    )
    if failed:
        item.transfer.log("file-failed", f"{item.file.lfn}: {message}", file=item.file.lfn)


def do_give_up_transfer_file(item: TransferFile, message: str) -> None:
    """Fail a file whose every copying worker went silent."""
    failed = TransferFile.objects.filter(pk=item.pk, state=TransferFileState.RUNNING).update(
        state=TransferFileState.FAILED,
        error=message[:4000],
        error_code="stalled",
        rate_mb_s=0.0,
        finished_at=timezone.now(),
    )
    if failed:
        item.transfer.log("file-failed", f"{item.file.lfn}: {message}", file=item.file.lfn)
        finish_transfer_if_done(item.transfer_id)


def finish_transfer_if_done(transfer_id: int) -> Transfer | None:
    """End the transfer once none of its files is queued or running; the outcome is
    succeeded (all files), partial (some) or failed (none). None while files remain."""
    transfer = Transfer.objects.select_related("destination").get(pk=transfer_id)
    if transfer.is_final or transfer.files.filter(state__in=ACTIVE).exists():
        return None
    counts = dict(
        transfer.files.order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    n = sum(counts.values())
    done = counts.get(TransferFileState.SUCCEEDED, 0)
    there = transfer.files.filter(state=TransferFileState.SUCCEEDED, already_there=True).count()
    where = transfer.destination.name
    summary = f"{done} of {n} file(s) on {where}: {done - there} copied, {there} already there"
    if done == n:
        transfer.finish(JobState.SUCCEEDED, summary)
        return transfer
    failed = list(
        transfer.files.filter(state=TransferFileState.FAILED)
        .select_related("file")
        .order_by("file__lfn")[:5]
    )
    reasons = "; ".join(f"{f.file.lfn}: {f.error}" for f in failed)
    state = JobState.PARTIAL if done else JobState.FAILED
    transfer.finish(state, f"{summary}; {n - done} failed: {reasons}")
    return transfer


def do_cancel_transfer(transfer: Transfer, user=None) -> Transfer:
    """Stop a transfer: queued files never start and running copies stop within a second,
    removing their temporaries; files already copied stay registered."""
    if transfer.is_final:
        raise Conflict(f"transfer #{transfer.pk} has already {transfer.state}", where="transfer")
    if not transfer.finish(JobState.CANCELLED, f"cancelled by {user or 'the system'}"):
        transfer.refresh_from_db()
        raise Conflict(f"transfer #{transfer.pk} has already {transfer.state}", where="transfer")
    held = list(transfer.files.filter(state__in=ACTIVE).exclude(lease_token=""))
    transfer.files.filter(state__in=ACTIVE).update(
        state=TransferFileState.CANCELLED,
        rate_mb_s=0.0,
        finished_at=timezone.now(),
        lease_token="",
        lease_expires_at=None,
    )
    # Running copies stop at their next progress report and remove their temporaries;
    # this covers copies whose worker is gone.
    for item in held:
        item.discard_attempt(item.lease_token)
    return transfer
