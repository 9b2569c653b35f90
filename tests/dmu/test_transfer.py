"""The transfer engine against a real XRootD server: verified copies, and every fault we know.

Each fault test also checks that nothing, neither the file nor a temporary, is left at the
destination.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from pathlib import Path

import pytest

import dmu.storage as storage
import dmu.transfer as transfer
from dmu.storage import CHUNK, StorageEndpoint, TempFile
from dmu.transfer import CopyJob, copy, copy_many
from dss.errors import ChecksumMismatch, Conflict, InvalidInput, NotFound, StorageError
from tests.xrootd import free_port


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(transfer, "sleep", delays.append)
    return delays


def put_local(se: StorageEndpoint, rel: str, data: bytes) -> None:
    path = Path(se.path(rel))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def put_remote(se: StorageEndpoint, rel: str, data: bytes) -> None:
    temp = se.open_write_temp(rel)
    temp.write(data)
    temp.close()
    se.publish(temp.temp, rel)


def files_under(se: StorageEndpoint) -> list[str]:
    """Every file below the SE root (temporaries included), read from the server's disk."""
    root = Path(se.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class FlipOnRead(StorageEndpoint):
    """A source whose bytes change after they leave the storage: the first byte of the first
    chunk of the next ``times`` reads is flipped."""

    def __init__(self, url: str, times: int):
        super().__init__(url)
        self.times = times

    def read_chunks(self, rel, chunk_size=CHUNK):
        flip = self.times > 0
        self.times -= 1
        for i, chunk in enumerate(super().read_chunks(rel, chunk_size)):
            yield bytes([chunk[0] ^ 0x01]) + chunk[1:] if flip and i == 0 else chunk


class FlipOnWrite(StorageEndpoint):
    """A destination where a byte changes on the way in, after the sender checksummed it."""

    def __init__(self, url: str, times: int):
        super().__init__(url)
        self.times = times

    def open_write_temp(self, rel, tag=None) -> TempFile:
        temp = super().open_write_temp(rel, tag)
        if self.times > 0:
            self.times -= 1
            real_write, state = temp.write, {"first": True}

            def write(data: bytes) -> None:
                if state["first"]:
                    state["first"] = False
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                real_write(data)

            temp.write = write  # type: ignore[method-assign]
        return temp


# -- verified copies --------------------------------------------------------------------


def test_copy_local_to_xrootd_and_back_verifies_every_way(local_se, xrd_se, sleeps):
    data = os.urandom(5 * 1024 * 1024 + 17)
    put_local(local_se, "in/f.root", data)
    seen: list[tuple[int, int]] = []
    up = copy(
        (local_se, "in/f.root"),
        (xrd_se, "user.x/ab/cd/f.root"),
        expected_adler32=adler(data),
        expected_bytes=len(data),
        progress=lambda done, total: seen.append((done, total)),
        chunk_size=1024 * 1024,
    )
    assert (up.bytes, up.adler32, up.attempts, up.already_there) == (
        len(data),
        adler(data),
        1,
        False,
    )
    assert up.rate_mb_s > 0 and up.destination == xrd_se.url("user.x/ab/cd/f.root")
    assert seen[-1] == (len(data), len(data)) and len(seen) == 6
    assert xrd_se.server_checksum("user.x/ab/cd/f.root") == adler(data)
    assert files_under(xrd_se) == ["user.x/ab/cd/f.root"]

    down = copy(xrd_se.url("user.x/ab/cd/f.root"), local_se.url("out/f.root"))
    assert down.adler32 == adler(data)
    assert Path(local_se.path("out/f.root")).read_bytes() == data
    assert sleeps == []


def test_copy_between_two_xrootd_directories(xrd_se, xrootd_server):
    other = StorageEndpoint(xrootd_server.se_url(f"other-{os.getpid()}-{id(xrd_se)}"))
    data = os.urandom(300_000)
    put_remote(xrd_se, "f", data)
    result = copy((xrd_se, "f"), (other, "g"))
    assert result.adler32 == adler(data) and other.server_checksum("g") == adler(data)


def test_same_file_already_there_is_success_without_copying(local_se, xrd_se):
    data = os.urandom(100_000)
    put_local(local_se, "f", data)
    copy((local_se, "f"), (xrd_se, "f"))
    again = copy((local_se, "f"), (xrd_se, "f"))
    assert again.already_there and again.attempts == 0 and again.adler32 == adler(data)
    to_local = copy((xrd_se, "f"), (local_se, "f"))
    assert to_local.already_there


def test_a_different_file_of_that_name_is_a_conflict_naming_the_path(local_se, xrd_se):
    put_local(local_se, "f", b"new content")
    put_remote(xrd_se, "f", b"old content")
    with pytest.raises(Conflict) as err:
        copy((local_se, "f"), (xrd_se, "f"))
    assert err.value.where == xrd_se.url("f")
    assert adler(b"old content") in err.value.message
    assert b"".join(xrd_se.read_chunks("f")) == b"old content"
    assert files_under(xrd_se) == ["f"]
    replaced = copy((local_se, "f"), (xrd_se, "f"), overwrite=True)
    assert replaced.attempts == 1 and xrd_se.server_checksum("f") == adler(b"new content")


def test_a_path_with_dotdot_is_refused_before_any_io(local_se, xrd_se):
    put_local(local_se, "f", b"x")
    with pytest.raises(InvalidInput) as err:
        copy((local_se, "f"), (xrd_se, "../escape/f"))
    assert err.value.where == "../escape/f"
    with pytest.raises(InvalidInput):
        copy(local_se.url("f"), xrd_se.url("a") + "/../../../etc/f")
    assert files_under(xrd_se) == []


def test_a_missing_source_is_not_found(local_se, xrd_se):
    with pytest.raises(NotFound):
        copy((local_se, "nope"), (xrd_se, "f"))
    assert files_under(xrd_se) == []


# -- bytes changed in flight ------------------------------------------------------------


def test_a_byte_flipped_once_on_read_is_caught_by_the_expected_checksum_and_retried(
    local_se, xrd_se, sleeps
):
    data = os.urandom(2_000_000)
    put_local(local_se, "f", data)
    source = FlipOnRead(local_se.base_url, times=1)
    result = copy((source, "f"), (xrd_se, "f"), expected_adler32=adler(data), backoff=0.25)
    assert result.attempts == 2 and result.adler32 == adler(data)
    assert sleeps == [0.25]
    assert xrd_se.server_checksum("f") == adler(data)
    assert files_under(xrd_se) == ["f"]


def test_a_byte_flipped_once_on_the_way_in_is_caught_by_the_xrootd_server_checksum(
    local_se, xrd_se, sleeps
):
    data = os.urandom(2_000_000)
    put_local(local_se, "f", data)
    destination = FlipOnWrite(xrd_se.base_url, times=1)
    result = copy((local_se, "f"), (destination, "f"))  # no expected checksum given
    assert result.attempts == 2
    assert xrd_se.server_checksum("f") == adler(data)
    assert files_under(xrd_se) == ["f"]


def test_a_byte_flipped_reading_from_xrootd_is_caught_by_the_source_server_checksum(
    local_se, xrd_se, sleeps
):
    data = os.urandom(2_000_000)
    put_remote(xrd_se, "f", data)
    source = FlipOnRead(xrd_se.base_url, times=1)
    result = copy((source, "f"), (local_se, "f"))
    assert result.attempts == 2
    assert Path(local_se.path("f")).read_bytes() == data


def test_bytes_flipped_on_every_attempt_fail_with_checksum_mismatch_leaving_nothing(
    local_se, xrd_se, sleeps
):
    data = os.urandom(1_000_000)
    put_local(local_se, "f", data)
    destination = FlipOnWrite(xrd_se.base_url, times=99)
    with pytest.raises(ChecksumMismatch) as err:
        copy((local_se, "f"), (destination, "f"), retries=3, backoff=0.5)
    assert "gave up after 4 attempts" in err.value.message
    assert err.value.where == xrd_se.url("f")
    assert sleeps == [0.5, 1.0, 2.0]
    assert files_under(xrd_se) == []


# -- wrong at rest ----------------------------------------------------------------------


def test_a_wrong_expected_checksum_fails_at_once_when_the_server_confirms_the_file(
    xrd_se, local_se, sleeps
):
    data = os.urandom(500_000)
    put_remote(xrd_se, "f", data)
    with pytest.raises(ChecksumMismatch) as err:
        copy((xrd_se, "f"), (local_se, "f"), expected_adler32="0badc0de")
    assert f"adler32 of the source is {adler(data)}, expected 0badc0de" in err.value.message
    assert sleeps == []  # the file at rest is wrong: retrying cannot help
    assert files_under(local_se) == []


def test_a_wrong_expected_checksum_from_local_disk_fails_after_retries(local_se, xrd_se, sleeps):
    put_local(local_se, "f", b"some bytes")
    with pytest.raises(ChecksumMismatch) as err:
        copy((local_se, "f"), (xrd_se, "f"), expected_adler32="00000001", retries=2)
    assert "expected 00000001" in err.value.message and len(sleeps) == 2
    assert files_under(xrd_se) == []


def test_a_wrong_expected_size_fails_before_copying(local_se, xrd_se, sleeps):
    put_local(local_se, "f", b"12345")
    with pytest.raises(ChecksumMismatch) as err:
        copy((local_se, "f"), (xrd_se, "f"), expected_bytes=6)
    assert "source has 5 bytes, expected 6" in err.value.message and sleeps == []
    assert files_under(xrd_se) == []


def test_a_malformed_expected_checksum_is_invalid_input(local_se, xrd_se):
    with pytest.raises(InvalidInput):
        copy((local_se, "f"), (xrd_se, "f"), expected_adler32="not-hex")


# -- storage failures -------------------------------------------------------------------


def test_connection_refused_is_retried_with_backoff_then_a_clear_storage_error(local_se, sleeps):
    put_local(local_se, "f", b"data")
    nowhere = StorageEndpoint(f"root://127.0.0.1:{free_port()}//data")
    with pytest.raises(StorageError) as err:
        copy((local_se, "f"), (nowhere, "f"), retries=3, backoff=0.5)
    assert err.value.transient
    assert "unreachable" in err.value.message and "gave up after 4 attempts" in err.value.message
    assert err.value.where == nowhere.url("f")
    assert sleeps == [0.5, 1.0, 2.0]


def test_server_stopping_mid_upload_is_retried_then_fails_leaving_nothing(
    local_se, xrootd_private, sleeps
):
    data = os.urandom(64 * 1024 * 1024)
    put_local(local_se, "big", data)
    se = StorageEndpoint(xrootd_private.se_url("up"))

    def kill_after_first_chunks(done: int, total: int) -> None:
        if done >= 3 * 1024 * 1024 and xrootd_private.running:
            xrootd_private.stop(kill=True)

    with pytest.raises(StorageError) as err:
        copy(
            (local_se, "big"),
            (se, "big"),
            retries=2,
            progress=kill_after_first_chunks,
            chunk_size=1024 * 1024,
        )
    assert err.value.transient and "gave up after 3 attempts" in err.value.message
    assert len(sleeps) == 2
    # The partial temporary was opened with POSC: the server drops it when it comes back.
    # (Read from its disk: this client process keeps the dead connection failed for a while.)
    assert [name for name in files_under(se) if ".dmu-part-" in name]
    xrootd_private.start()
    assert files_under(se) == []


def test_server_stopping_mid_download_is_retried_then_fails_leaving_nothing(
    local_se, xrootd_private, sleeps
):
    se = StorageEndpoint(xrootd_private.se_url("down"))
    put_remote(se, "big", os.urandom(32 * 1024 * 1024))

    def kill(done: int, total: int) -> None:
        if xrootd_private.running:
            xrootd_private.stop(kill=True)

    with pytest.raises(StorageError) as err:
        copy((se, "big"), (local_se, "big"), retries=1, progress=kill, chunk_size=1024 * 1024)
    assert err.value.transient
    assert files_under(local_se) == []


def test_a_full_local_destination_fails_at_once_leaving_nothing(
    local_se, tiny_fs, tmp_path, sleeps, monkeypatch
):
    # A real ENOSPC from a 1 MiB tmpfs; where mounting is not permitted, a destination
    # file that raises OSError(ENOSPC) once 1 MiB is written stands in for it.
    put_local(local_se, "f", os.urandom(3 * 1024 * 1024))
    if tiny_fs is None:
        tiny_fs = tmp_path / "full"
        tiny_fs.mkdir()
        real_write = storage._LocalTempFile.write

        def write(self, data: bytes) -> None:
            if self.bytes + len(data) > 1024 * 1024:
                self._fh.close()
                raise storage.storage_error(
                    OSError(errno.ENOSPC, "No space left on device"), self.where, "write"
                )
            real_write(self, data)

        monkeypatch.setattr(storage._LocalTempFile, "write", write)
    full = StorageEndpoint(f"file://{tiny_fs}")
    with pytest.raises(StorageError) as err:
        copy((local_se, "f"), (full, "f"), chunk_size=256 * 1024)
    assert err.value.code == "no_space" and not err.value.transient
    assert "no space left" in err.value.message
    assert sleeps == []
    assert list(tiny_fs.iterdir()) == []


def test_a_full_xrootd_destination_fails_leaving_nothing(local_se, xrootd_full, sleeps):
    if xrootd_full is None:
        pytest.skip("mounting a tmpfs is not permitted here")
    put_local(local_se, "f", os.urandom(6 * 1024 * 1024))
    se = StorageEndpoint(xrootd_full.se_url())
    with pytest.raises(StorageError) as err:
        copy((local_se, "f"), (se, "f"), chunk_size=1024 * 1024)
    assert err.value.code == "no_space" and not err.value.transient
    assert sleeps == []
    assert files_under(se) == []


def test_a_read_only_xrootd_destination_fails_at_once(local_se, xrootd_readonly, sleeps):
    put_local(local_se, "f", b"data")
    se = StorageEndpoint(xrootd_readonly.se_url())
    with pytest.raises(StorageError) as err:
        copy((local_se, "f"), (se, "f"))
    assert err.value.code == "read_only" and not err.value.transient and sleeps == []
    assert files_under(se) == []


def test_a_read_only_local_destination_fails_at_once(local_se, readonly_fs, sleeps):
    if readonly_fs is None:
        pytest.skip("mounting a read-only tmpfs is not permitted here")
    put_local(local_se, "f", b"data")
    with pytest.raises(StorageError) as err:
        copy((local_se, "f"), (StorageEndpoint(f"file://{readonly_fs}"), "f"))
    assert err.value.code == "read_only" and sleeps == []


# -- many files -------------------------------------------------------------------------


def test_copy_many_runs_jobs_in_parallel_and_reports_each(local_se, xrd_se, monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()
    real_copy = transfer.copy

    def counting_copy(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real_copy(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(transfer, "copy", counting_copy)
    contents = {f"f{i}": os.urandom(200_000 + i) for i in range(6)}
    for name, data in contents.items():
        put_local(local_se, name, data)
    jobs = [
        CopyJob((local_se, n), (xrd_se, f"out/{n}"), expected_adler32=adler(d))
        for n, d in contents.items()
    ]
    jobs.append(CopyJob((local_se, "missing"), (xrd_se, "out/missing")))
    results = copy_many(jobs, max_parallel=2)
    assert [r.adler32 for r in results[:6]] == [adler(d) for d in contents.values()]
    assert isinstance(results[6], NotFound)
    assert 1 <= peak[0] <= 2
    assert files_under(xrd_se) == sorted(f"out/{n}" for n in contents)
