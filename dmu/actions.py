"""Catalog operations: register datasets and files, look them up, describe storage."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlparse

from django.db import transaction
from django.db.models import Count, Q, Sum

from dss.errors import Conflict, InvalidInput, NotFound

from .checksum import file_checksum
from .models import Dataset, File, RegistrationJob, Replica, ReplicaState, StorageElement
from .names import check_dataset_name, check_se_name
from .rootfiles import inspect_root_file
from .storage import safe_relpath


@dataclass(frozen=True)
class InspectedFile:
    lfn: str
    path: str
    guid: str
    bytes: int
    adler32: str
    events: int
    tree: str


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


def search_datasets(query: str = ""):
    qs = datasets_with_totals()
    query = (query or "").strip()
    if query:
        qs = qs.filter(Q(name__icontains=query) | Q(description__icontains=query))
    return qs


def do_add_storage_element(name: str, url: str, description: str = "") -> StorageElement:
    """Create a storage element, or return the existing one if it has the same URL."""
    check_se_name(name)
    scheme = urlparse(url).scheme
    if scheme not in ("file", "root", "https", "http"):
        raise InvalidInput(
            f"unsupported storage URL {url!r}: use file://, root:// or https://", where="url"
        )
    se, created = StorageElement.objects.get_or_create(
        name=name, defaults={"url": url.rstrip("/"), "description": description}
    )
    if not created and se.url != url.rstrip("/"):
        raise Conflict(f"storage element {name!r} already exists with URL {se.url}", where=name)
    return se


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
    """Checksum a file on ``se`` by streaming it, then read its GUID and event count."""
    endpoint = se.endpoint()
    where = f"{se.name}:{rel}"
    size = endpoint.size(rel)
    with endpoint.open_read(rel) as fh:
        adler32, nbytes, _ = file_checksum(fh)
        fh.seek(0)
        info = inspect_root_file(fh, where, nbytes, tree)
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
    )


def check_register_dataset(
    name: str,
    se: StorageElement,
    paths: Iterable[str],
    *,
    user=None,
    tree: str | None = None,
    description: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Dataset, int]:
    """Register ROOT files on ``se`` as (part of) dataset ``name``.

    Every file is read and checksummed before anything is written; then all of them are
    recorded in one transaction. Registering a file again changes nothing; the same logical
    name with another checksum is a Conflict, and the whole call registers nothing.
    Returns the dataset and the number of files newly recorded.
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

    new_files = 0
    with transaction.atomic():
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
            Replica.objects.get_or_create(
                file=f,
                storage_element=se,
                defaults={"path": info.path, "state": ReplicaState.AVAILABLE},
            )
    return dataset, new_files


def do_enqueue_registration(
    name: str, se: StorageElement, paths: list[str], *, user=None, tree: str = ""
) -> RegistrationJob:
    """Validate a registration request and queue it for a worker (after the commit)."""
    from .tasks import register_dataset

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
    transaction.on_commit(lambda: register_dataset.delay(job.pk))
    return job
