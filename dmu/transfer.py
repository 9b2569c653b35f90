"""The transfer engine: copy a file between storage elements, verified, retried, all or nothing.

``copy`` streams the source in large chunks, computes adler32 on the fly, writes the
destination under a temporary name, checks the result against what is known (the expected
checksum and size from the catalog, the source's and the destination's own server checksums
on XRootD) and only then renames it into place. A failed attempt removes its temporary.
Transient storage errors and checksum mismatches that happened in flight are retried with
exponential backoff; permanent ones (permission, no space, read-only, a file at rest that
differs from the catalog) fail at once with a message naming the file.

Plain Python, no Django: the portal's tasks and the ``dmu`` command line both use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import monotonic, sleep

from dmu.checksum import Adler32, normalise_adler32
from dmu.storage import CHUNK, StorageEndpoint, TempFile, split_url
from dss.errors import ChecksumMismatch, Conflict, DSSError, InvalidInput, StorageError

Location = str | tuple[StorageEndpoint, str]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TransferResult:
    """What a copy did. ``attempts`` is 0 when the destination already held the same file."""

    bytes: int
    adler32: str
    seconds: float
    attempts: int
    rate_mb_s: float
    source: str = ""
    destination: str = ""
    already_there: bool = False
    # Set when the copy was asked not to publish: the verified temporary awaiting its name.
    temp: str = ""

    def as_dict(self) -> dict:
        """The result as JSON-ready data (for ``dmu --json``)."""
        return {
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes,
            "adler32": self.adler32,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
            "rate_mb_s": round(self.rate_mb_s, 1),
            "already_there": self.already_there,
        }


@dataclass(frozen=True)
class CopyJob:
    """One file for ``copy_many``: where from, where to, and what the catalog says it is."""

    src: Location
    dst: Location
    expected_adler32: str | None = None
    expected_bytes: int | None = None


class _InFlight(ChecksumMismatch):
    """A mismatch a new attempt may cure: the bytes changed on the way, not at rest."""


def locate(where: Location) -> tuple[StorageEndpoint, str]:
    """``(endpoint, relative path)`` from a file URL, a local path, or such a pair."""
    if isinstance(where, tuple):
        endpoint, rel = where
        return endpoint, rel
    return split_url(where)


def copy(
    src: Location,
    dst: Location,
    *,
    expected_adler32: str | None = None,
    expected_bytes: int | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    progress: Progress | None = None,
    overwrite: bool = False,
    chunk_size: int = CHUNK,
    temp_tag: str | None = None,
    publish: bool = True,
) -> TransferResult:
    """Copy one file from ``src`` to ``dst`` (file URLs, or ``(StorageEndpoint, rel)`` pairs).

    Up to ``1 + retries`` attempts; before attempt *n* + 1 it sleeps ``backoff * 2**(n-1)`` s.
    ``progress(bytes_done, bytes_total)`` is called after every chunk (from 0 again on a
    retry). If ``dst`` already exists: the same content (adler32 and size) is success with
    nothing copied; other content is Conflict unless ``overwrite``. Raises ChecksumMismatch,
    StorageError, NotFound, Conflict or InvalidInput; nothing is left at ``dst`` then.

    The bytes go to a temporary beside ``dst`` (named with ``temp_tag`` when given, see
    :func:`dmu.storage.temp_name`). With ``publish=False`` the verified temporary is left
    for the caller to rename (``result.temp``), e.g. only while it still owns the work.
    """
    if retries < 0:
        raise InvalidInput("retries must be 0 or more", where="retries")
    if expected_adler32 is not None:
        try:
            expected_adler32 = normalise_adler32(expected_adler32)
        except ValueError as exc:
            raise InvalidInput(str(exc), where="expected adler32") from exc
    src_ep, src_rel = locate(src)
    dst_ep, dst_rel = locate(dst)
    src_ep.path(src_rel)  # the path-safety check, before any I/O
    dst_ep.path(dst_rel)
    attempt = 0
    started = monotonic()
    while True:
        attempt += 1
        try:
            result = _attempt(
                src_ep,
                src_rel,
                dst_ep,
                dst_rel,
                expected_adler32=expected_adler32,
                expected_bytes=expected_bytes,
                progress=progress,
                overwrite=overwrite,
                chunk_size=chunk_size,
                temp_tag=temp_tag,
                publish=publish,
            )
        except (StorageError, _InFlight) as exc:
            retryable = isinstance(exc, _InFlight) or exc.transient
            if not retryable or attempt > retries:
                raise _final(exc, attempt) from exc
            sleep(backoff * 2 ** (attempt - 1))
            continue
        seconds = monotonic() - started
        return TransferResult(
            bytes=result[0],
            adler32=result[1],
            seconds=seconds,
            attempts=0 if result[2] else attempt,
            rate_mb_s=(result[0] / 1e6 / seconds) if seconds > 0 and not result[2] else 0.0,
            source=src_ep.url(src_rel),
            destination=dst_ep.url(dst_rel),
            already_there=result[2],
            temp=result[3],
        )


def _final(exc: DSSError, attempts: int) -> DSSError:
    """The error to raise after the last attempt, saying how many were made."""
    if attempts == 1:
        return ChecksumMismatch(exc.message, where=exc.where) if isinstance(exc, _InFlight) else exc
    message = f"{exc.message} (gave up after {attempts} attempts)"
    if isinstance(exc, StorageError):
        return StorageError(message, where=exc.where, code=exc.code, transient=exc.transient)
    return ChecksumMismatch(message, where=exc.where)


def _attempt(
    src: StorageEndpoint,
    src_rel: str,
    dst: StorageEndpoint,
    dst_rel: str,
    *,
    expected_adler32: str | None,
    expected_bytes: int | None,
    progress: Progress | None,
    overwrite: bool,
    chunk_size: int,
    temp_tag: str | None,
    publish: bool,
) -> tuple[int, str, bool, str]:
    """One try: ``(bytes, adler32, already_there, temporary left unpublished or "")``; the
    temporary is gone if it raises."""
    src_where, dst_where = src.url(src_rel), dst.url(dst_rel)
    total = src.size(src_rel)
    if expected_bytes is not None and total != expected_bytes:
        raise ChecksumMismatch(
            f"source has {total} bytes, expected {expected_bytes}", where=src_where
        )
    if dst.exists(dst_rel):
        held = _already_there(src, src_rel, dst, dst_rel, expected_adler32, total, overwrite)
        if held is not None:
            return total, held, True, ""

    # XRootD knows the source's checksum: when the caller knows none, ask for it while the
    # bytes stream, so that a download is still verified end to end. (With an expected
    # checksum it is asked only after a mismatch: computing it may cost the server a read.)
    source_sum = None
    if src.has_server_checksum and expected_adler32 is None:
        source_sum = _Background(src.server_checksum, src_rel)
    adler = Adler32()
    temp: TempFile = dst.open_write_temp(dst_rel, temp_tag)
    with temp:
        for chunk in src.read_chunks(src_rel, chunk_size):
            adler.update(chunk)
            temp.write(chunk)
            if progress is not None:
                progress(adler.nbytes, total)
        temp.close()
        got = adler.hexdigest()
        if adler.nbytes != total:
            raise StorageError(
                f"read {adler.nbytes} bytes but the source has {total}: it changed or was cut",
                where=src_where,
                transient=True,
            )
        at_source = source_sum.result() if source_sum is not None else None
        if expected_adler32 is not None and got != expected_adler32:
            if src.has_server_checksum:
                at_source = _Background(src.server_checksum, src_rel).result()
            if at_source is not None and at_source == got:
                # The server holds exactly what we read: the file at rest is not the cataloged one.
                raise ChecksumMismatch(
                    f"adler32 of the source is {got}, expected {expected_adler32}",
                    where=src_where,
                )
            raise _InFlight(
                f"adler32 of the bytes read is {got}, expected {expected_adler32}",
                where=src_where,
            )
        if at_source is not None and at_source != got:
            raise _InFlight(
                f"adler32 of the bytes read is {got}, the source server reports {at_source}",
                where=src_where,
            )
        if dst.has_server_checksum:
            arrived = dst.server_checksum(temp.temp)
            if arrived != got:
                raise _InFlight(
                    f"destination server computed adler32 {arrived} for what arrived, sent {got}",
                    where=dst_where,
                )
        if not publish:
            return adler.nbytes, got, False, temp.temp
        dst.publish(temp.temp, dst_rel, overwrite=overwrite)
    return adler.nbytes, got, False, ""


def _already_there(
    src: StorageEndpoint,
    src_rel: str,
    dst: StorageEndpoint,
    dst_rel: str,
    expected_adler32: str | None,
    total: int,
    overwrite: bool,
) -> str | None:
    """The adler32 if ``dst`` already holds this very file; None to copy over it; else Conflict."""
    dst_where = dst.url(dst_rel)
    have_size = dst.size(dst_rel)
    want = expected_adler32 or src.server_checksum(src_rel) or _stream_adler32(src, src_rel)
    have = dst.server_checksum(dst_rel) if have_size == total else None
    if have is None and have_size == total:
        have = _stream_adler32(dst, dst_rel)
    if have_size == total and have == want:
        return want
    if overwrite:
        return None
    found = f"adler32 {have}" if have else f"{have_size} bytes"
    raise Conflict(
        f"destination already holds a different file ({found}; the source has adler32 {want}, "
        f"{total} bytes)",
        where=dst_where,
    )


def _stream_adler32(endpoint: StorageEndpoint, rel: str) -> str:
    adler = Adler32()
    for chunk in endpoint.read_chunks(rel):
        adler.update(chunk)
    return adler.hexdigest()


class _Background:
    """Run one call in a thread; ``result()`` waits and returns it (or None if it failed).

    A failed server-checksum query must not fail a copy that is otherwise verified.
    """

    def __init__(self, func: Callable[[str], str | None], arg: str):
        self._value: str | None = None
        self._thread = threading.Thread(target=self._run, args=(func, arg), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[[str], str | None], arg: str) -> None:
        try:
            self._value = func(arg)
        except DSSError:
            self._value = None

    def result(self) -> str | None:
        self._thread.join()
        return self._value


def copy_many(
    jobs: Iterable[CopyJob],
    *,
    max_parallel: int = 4,
    retries: int = 3,
    backoff: float = 0.5,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[TransferResult | DSSError]:
    """Run ``copy`` for each job, at most ``max_parallel`` at a time (threads).

    Returns one entry per job, in order: its TransferResult, or the DSSError that ended it
    (one failed file does not stop the others). ``progress(job_index, bytes_done,
    bytes_total)`` reports each job's progress.
    """
    if max_parallel < 1:
        raise InvalidInput("max_parallel must be 1 or more", where="max_parallel")
    job_list = list(jobs)

    def run(index: int, job: CopyJob) -> TransferResult | DSSError:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(index, done, total)

        try:
            return copy(
                job.src,
                job.dst,
                expected_adler32=job.expected_adler32,
                expected_bytes=job.expected_bytes,
                retries=retries,
                backoff=backoff,
                overwrite=overwrite,
                progress=report,
            )
        except DSSError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="dmu-copy") as pool:
        futures = [pool.submit(run, i, job) for i, job in enumerate(job_list)]
        return [f.result() for f in futures]
