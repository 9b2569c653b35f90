"""Checking the catalog against the storage elements (``manage.py check_catalog``).

Every replica the catalog holds must be on its storage element with the catalog's size
(and adler32: every replica with ``full``, a sample of each storage element's otherwise);
every file in a folder that holds the catalog's files must be in the catalog, or it is an
orphan (a temporary of a write that did not finish counts too, unless a running job still
owns it). ``fix`` removes orphans and marks lost or damaged replicas, so that nothing
reads them again.
"""

from __future__ import annotations

import posixpath
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils import timezone

from dss.errors import DSSError

from .actions import record_verified
from .checksum import file_checksum
from .models import Replica, ReplicaState, StorageElement
from .storage import TEMP_MARK, StorageEndpoint

DEFAULT_SAMPLE = 20


@dataclass
class Finding:
    """One disagreement: what kind, where, what is wrong, and whether ``--fix`` mended it."""

    kind: str  # lost, damaged, orphan, temporary, stale, leftover, kept
    where: str
    message: str
    fixed: bool = False
    # a finding that is expected and needs no repair (an output kept for a retry)
    benign: bool = False

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "where": self.where,
            "message": self.message,
            "fixed": self.fixed,
            "benign": self.benign,
        }


def _adler32(endpoint: StorageEndpoint, rel: str) -> str:
    known = endpoint.server_checksum(rel)
    if known is not None:
        return known
    with endpoint.open_read(rel) as fh:
        adler32, _, _ = file_checksum(fh)
    return adler32


def check_replicas(
    se: StorageElement, *, full: bool = False, sample: int = DEFAULT_SAMPLE, fix: bool = False
) -> list[Finding]:
    """Every available replica on ``se`` is there with its size; adler32 of all (``full``)
    or of ``sample`` chosen at random. ``fix`` marks a missing one lost and a changed one
    bad."""
    endpoint = se.endpoint()
    replicas = list(
        Replica.objects.filter(storage_element=se, state=ReplicaState.AVAILABLE).select_related(
            "file", "file__dataset"
        )
    )
    to_sum = (
        set(range(len(replicas)))
        if full
        else set(random.sample(range(len(replicas)), min(sample, len(replicas))))
    )
    findings: list[Finding] = []
    for i, replica in enumerate(replicas):
        f = replica.file
        where = f"{se.name}:{replica.path}"
        what = f"{f.dataset.name}/{f.lfn}"
        try:
            if not endpoint.exists(replica.path):
                findings.append(
                    _mark(replica, ReplicaState.LOST, "lost", where, f"{what} is missing", fix)
                )
                continue
            size = endpoint.size(replica.path)
            if size != f.bytes:
                findings.append(
                    _mark(
                        replica,
                        ReplicaState.BAD,
                        "damaged",
                        where,
                        f"{what} has {size} bytes, the catalog says {f.bytes}",
                        fix,
                    )
                )
                continue
            if i in to_sum:
                at = timezone.now()
                stat = endpoint.stat(replica.path)
                adler32 = _adler32(endpoint, replica.path)
                if adler32 == f.adler32 and stat.size == f.bytes:
                    record_verified(replica, stat, at)
                if adler32 != f.adler32:
                    findings.append(
                        _mark(
                            replica,
                            ReplicaState.BAD,
                            "damaged",
                            where,
                            f"{what} has adler32 {adler32}, the catalog says {f.adler32}",
                            fix,
                        )
                    )
        except DSSError as e:
            findings.append(Finding("unreachable", where, f"{what}: {e.message}"))
    return findings


def _mark(replica: Replica, state: str, kind: str, where: str, message: str, fix: bool) -> Finding:
    if fix:
        Replica.objects.filter(pk=replica.pk).update(state=state)
    return Finding(kind, where, message, fixed=fix)


def dataset_folders(se: StorageElement) -> set[str]:
    """The folders of ``se`` that hold the catalog's files: where orphans are looked for."""
    paths = Replica.objects.filter(storage_element=se).values_list("path", flat=True)
    return {posixpath.dirname(p) for p in paths}


def check_orphans(
    se: StorageElement,
    *,
    folders: Iterable[str] = (),
    kept: dict[str, str] | None = None,
    live_tokens: set[str] | None = None,
    fix: bool = False,
) -> list[Finding]:
    """Files in ``se``'s dataset folders (and in ``folders``) that the catalog does not
    know: orphans, and temporaries of writes that no running job owns. ``kept`` maps paths
    that are not in the catalog on purpose to why (outputs kept for a retry); a temporary
    tagged with one of ``live_tokens`` belongs to work under way and is left alone.
    ``fix`` removes orphans and dead temporaries."""
    endpoint = se.endpoint()
    known = set(Replica.objects.filter(storage_element=se).values_list("path", flat=True))
    kept = kept or {}
    live_tokens = live_tokens or set()
    findings: list[Finding] = []
    for folder in sorted(dataset_folders(se) | set(folders)):
        try:
            entries = endpoint.ls(folder) if folder else endpoint.ls()
        except DSSError as e:
            if e.code == "not_found":
                continue
            findings.append(Finding("unreachable", f"{se.name}:{folder}/", e.message))
            continue
        for entry in entries:
            if entry.is_dir:
                continue
            rel = posixpath.join(folder, entry.name) if folder else entry.name
            where = f"{se.name}:{rel}"
            if rel in known:
                continue
            if rel in kept:
                findings.append(Finding("kept", where, kept[rel], benign=True))
                continue
            if TEMP_MARK in entry.name:
                tag = entry.name.rsplit(TEMP_MARK, 1)[1]
                if tag in live_tokens:
                    continue
                kind, message = (
                    "temporary",
                    f"a temporary of a write that did not finish ({entry.size} bytes)",
                )
            else:
                kind, message = "orphan", f"not in the catalog ({entry.size} bytes)"
            fixed = False
            if fix:
                try:
                    endpoint.delete(rel, missing_ok=True)
                    fixed = True
                except DSSError as e:
                    message += f"; could not remove it: {e.message}"
            findings.append(Finding(kind, where, message, fixed=fixed))
    return findings


def check_storage(
    *,
    full: bool = False,
    sample: int = DEFAULT_SAMPLE,
    fix: bool = False,
    folders: dict[str, set[str]] | None = None,
    kept: dict[str, dict[str, str]] | None = None,
    live_tokens: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Finding]:
    """:func:`check_replicas` and :func:`check_orphans` on every storage element;
    ``folders`` and ``kept`` are keyed by storage element name."""
    folders = folders or {}
    kept = kept or {}
    findings: list[Finding] = []
    for se in StorageElement.objects.order_by("name"):
        if progress:
            progress(se.name)
        findings += check_replicas(se, full=full, sample=sample, fix=fix)
        findings += check_orphans(
            se,
            folders=folders.get(se.name, ()),
            kept=kept.get(se.name, {}),
            live_tokens=live_tokens,
            fix=fix,
        )
    return findings


def summarise(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings of each kind."""
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.kind] += 1
    return dict(counts)
