"""Transfers in the portal: a dataset copied between storage elements file by file, verified,
registered on the destination only when whole; the faults at portal level; a real worker.

Unit tests call the task directly; the last tests send the work to a real Celery worker.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import uproot
from celery.exceptions import Retry
from django.test import Client
from django.utils import timezone

import dmu.transfer as engine
from dmu import actions, tasks
from dmu.models import Replica, Transfer, TransferFile
from dmu.storage import StorageEndpoint, deterministic_path
from dss import leases
from dss.errors import ChecksumMismatch, Conflict, InvalidInput, NotFound
from tests.conftest import HZZ, ZMUMU, put_file, wait_for

pytestmark = pytest.mark.django_db


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def files_under(root: Path) -> list[str]:
    """Every file below ``root``, temporaries (``.name.dmu-part-…``) included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the engine's backoff delays instead of sleeping them."""
    delays: list[float] = []
    monkeypatch.setattr(engine, "sleep", delays.append)
    return delays


@pytest.fixture
def disk(db, storage_root):
    """The portal's local storage element, DISK."""
    return actions.do_add_storage_element("DISK", storage_root.as_uri(), "local disk")


@pytest.fixture
def disk2(db, tmp_path):
    root = tmp_path / "disk2"
    root.mkdir()
    return actions.do_add_storage_element("DISK2", root.as_uri(), "second disk")


@pytest.fixture
def xrd(db, xrootd_server):
    """A fresh directory of the session's real XRootD server as the storage element XRD."""
    return actions.do_add_storage_element(
        "XRD", xrootd_server.se_url(f"portal-{uuid.uuid4().hex[:8]}"), "XRootD on loopback"
    )


@pytest.fixture
def hzz(disk, storage_root):
    """demo.hzz, one file, registered on DISK."""
    rel = put_file(storage_root, HZZ, "demo/uproot-HZZ.root")
    dataset, _ = actions.check_register_dataset("demo.hzz", disk, [rel])
    return dataset


def root_of(se) -> Path:
    return Path(se.endpoint().root)


def request(dataset, destination, **kwargs) -> Transfer:
    return actions.check_request_transfer(dataset, destination, **kwargs)


def run(transfer: Transfer) -> Transfer:
    """Run the transfer's tasks here, one after the other, as a worker would."""
    for pk in transfer.files.values_list("pk", flat=True):
        tasks.transfer_file(pk)
    return actions.transfers_with_totals().get(pk=transfer.pk)


def write_big_root(path: Path, mib: int = 3) -> Path:
    """A ROOT file of about ``mib`` MiB of incompressible doubles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(7).random(mib * 1024 * 1024 // 8)
    with uproot.recreate(path, compression=None) as f:
        f["events"] = {"x": x}
    return path


# -- the good path -----------------------------------------------------------------------


def test_a_dataset_is_copied_verified_and_registered_on_the_destination(hzz, disk2):
    transfer = request(hzz, disk2)
    assert transfer.state == "queued" and transfer.progress_total == HZZ.stat().st_size
    done = run(transfer)
    assert done.state == "succeeded", done.message
    assert done.message == "1 of 1 file(s) on DISK2: 1 copied, 0 already there"
    item = TransferFile.objects.select_related("source").get(transfer=transfer)
    assert item.state == "succeeded" and item.source.name == "DISK"
    assert item.bytes_done == HZZ.stat().st_size and item.attempts == 1 and item.rate_mb_s > 0
    path = deterministic_path("demo", "uproot-HZZ.root")
    replica = Replica.objects.get(file__dataset=hzz, storage_element=disk2)
    assert replica.path == path == item.path and replica.state == "available"
    assert (root_of(disk2) / path).read_bytes() == HZZ.read_bytes()
    # what the disk says of the verified copy goes with its replica, for readers to trust
    stat = (root_of(disk2) / path).stat()
    assert (replica.verified_bytes, replica.verified_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert replica.verified_at is not None
    assert files_under(root_of(disk2)) == [path]
    assert done.progress_done == done.progress_total and done.bytes_done == done.progress_total
    kinds = list(transfer.events.values_list("kind", flat=True))
    assert kinds == ["queued", "started", "file", "succeeded"]


def test_only_the_files_asked_for_are_copied(hzz, disk, disk2, storage_root):
    rel = put_file(storage_root, ZMUMU, "demo/uproot-Zmumu.root")
    actions.check_register_dataset("demo.hzz", disk, [rel])
    done = run(request(hzz, disk2, lfns=["uproot-Zmumu.root"]))
    assert done.state == "succeeded" and done.n_files == 1
    assert list(
        Replica.objects.filter(storage_element=disk2).values_list("file__lfn", flat=True)
    ) == ["uproot-Zmumu.root"]


def test_a_file_already_registered_on_the_destination_counts_as_done_without_copying(hzz, disk2):
    run(request(hzz, disk2))
    again = run(request(hzz, disk2))
    assert again.state == "succeeded" and "0 copied, 1 already there" in again.message
    item = again.files.get()
    assert item.already_there and item.attempts == 0 and item.bytes_done == item.file.bytes
    assert Replica.objects.filter(storage_element=disk2).count() == 1


def test_the_same_file_already_at_the_destination_path_is_registered_without_copying(hzz, disk2):
    target = root_of(disk2) / deterministic_path("demo", "uproot-HZZ.root")
    target.parent.mkdir(parents=True)
    shutil.copyfile(HZZ, target)
    before = target.stat().st_mtime_ns
    done = run(request(hzz, disk2))
    assert done.state == "succeeded" and done.files.get().already_there
    assert target.stat().st_mtime_ns == before
    assert Replica.objects.filter(storage_element=disk2, file__dataset=hzz).exists()


# -- faults ------------------------------------------------------------------------------


def test_a_different_file_at_the_destination_path_is_a_conflict_and_registers_nothing(hzz, disk2):
    target = root_of(disk2) / deterministic_path("demo", "uproot-HZZ.root")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"some other file")
    done = run(request(hzz, disk2))
    item = done.files.get()
    assert done.state == "failed" and item.state == "failed" and item.error_code == "conflict"
    assert "destination already holds a different file" in item.error
    assert target.read_bytes() == b"some other file"
    assert not Replica.objects.filter(storage_element=disk2).exists()


def test_source_bytes_changed_at_rest_fail_the_transfer_and_register_nothing(
    hzz, disk2, storage_root, sleeps, settings
):
    settings.DMU_TRANSFER_RETRIES = 2
    source = storage_root / "demo/uproot-HZZ.root"
    data = bytearray(source.read_bytes())
    data[1000] ^= 0xFF
    source.write_bytes(bytes(data))
    done = run(request(hzz, disk2))
    item = done.files.get()
    catalog = hzz.files.get().adler32
    assert done.state == "failed" and item.state == "failed"
    assert item.error_code == "checksum_mismatch" and item.attempts == 3
    assert f"adler32 of the bytes read is {adler(bytes(data))}, expected {catalog}" in item.error
    assert "gave up after 3 attempts" in item.error and len(sleeps) == 2
    assert f"uproot-HZZ.root: {item.error}" in done.message
    assert not Replica.objects.filter(storage_element=disk2).exists()
    assert files_under(root_of(disk2)) == []


def test_a_source_cut_short_at_rest_fails_at_once(hzz, disk2, storage_root, sleeps):
    source = storage_root / "demo/uproot-HZZ.root"
    source.write_bytes(source.read_bytes()[:5000])
    done = run(request(hzz, disk2))
    item = done.files.get()
    assert item.error_code == "checksum_mismatch" and item.attempts == 1 and sleeps == []
    assert f"source has 5000 bytes, expected {HZZ.stat().st_size}" in item.error
    assert not Replica.objects.filter(storage_element=disk2).exists()


def test_a_missing_source_file_fails_naming_it(hzz, disk2, storage_root):
    (storage_root / "demo/uproot-HZZ.root").unlink()
    item = run(request(hzz, disk2)).files.get()
    assert item.state == "failed" and item.error_code == "not_found"
    assert "demo/uproot-HZZ.root" in item.error and "no such file" in item.error


def test_a_damaged_source_is_skipped_for_another_replica(hzz, disk, disk2, xrd, storage_root):
    run(request(hzz, xrd))
    source = storage_root / "demo/uproot-HZZ.root"
    source.write_bytes(source.read_bytes()[:-1])
    done = run(request(hzz, disk2))
    item = done.files.select_related("source").get()
    assert done.state == "succeeded" and item.source.name == "XRD"
    assert (root_of(disk2) / item.path).read_bytes() == HZZ.read_bytes()
    assert done.events.filter(kind="source-failed", message__contains="from DISK").exists()


def test_a_replica_on_xrootd_is_verified_by_the_servers_checksum_without_reading_it(
    hzz, xrd, monkeypatch
):
    run(request(hzz, xrd))
    replica = Replica.objects.select_related("file", "storage_element").get(
        file__dataset=hzz, storage_element=xrd
    )

    def no_read(self, rel):
        raise AssertionError(f"{rel} was read")

    monkeypatch.setattr(StorageEndpoint, "open_read", no_read)
    assert actions.check_replica_intact(replica) == "server checksum"
    local = root_of(xrd) / replica.path
    # xrootd keeps a checksum with the file's modification time in whole seconds: content
    # changed within the second it was computed in would go unseen by the server itself
    time.sleep(1.1)
    data = bytearray(local.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(local, "r+b") as fh:
        fh.write(data)
    with pytest.raises(ChecksumMismatch, match="the catalog says"):
        actions.check_replica_intact(replica)


def test_a_read_only_xrootd_destination_fails_clearly_and_registers_nothing(
    hzz, xrootd_readonly, sleeps
):
    ro = actions.do_add_storage_element("RO", xrootd_readonly.se_url())
    before = files_under(Path(ro.endpoint().root))
    done = run(request(hzz, ro))
    item = done.files.get()
    assert done.state == "failed" and item.error_code == "read_only" and item.attempts == 1
    assert "the storage element is read-only" in item.error and ro.url in item.error
    assert sleeps == [] and not Replica.objects.filter(storage_element=ro).exists()
    assert files_under(Path(ro.endpoint().root)) == before


def test_a_full_destination_fails_clearly_and_registers_nothing(
    disk, storage_root, tiny_fs, tmp_path, sleeps, monkeypatch
):
    import errno

    import dmu.storage as storage

    rel = "big/big.root"
    write_big_root(storage_root / rel)
    dataset, _ = actions.check_register_dataset("demo.big", disk, [rel])
    if tiny_fs is None:
        # Where a 1 MiB tmpfs cannot be mounted, a file that fails with ENOSPC after 1 MiB.
        tiny_fs = tmp_path / "full"
        tiny_fs.mkdir()
        real_write = storage._LocalTempFile.write

        def write(self, data: bytes) -> None:
            if self.bytes + len(data) > 1024 * 1024:
                raise storage.storage_error(
                    OSError(errno.ENOSPC, "No space left on device"), self.where, "write"
                )
            real_write(self, data)

        monkeypatch.setattr(storage._LocalTempFile, "write", write)
    full = actions.do_add_storage_element("FULL", tiny_fs.as_uri())
    done = run(request(dataset, full))
    item = done.files.get()
    assert done.state == "failed" and item.error_code == "no_space" and item.attempts == 1
    assert "no space left on the storage element" in item.error and sleeps == []
    assert not Replica.objects.filter(storage_element=full).exists()
    assert files_under(tiny_fs) == []


def test_an_https_destination_is_refused_at_once(hzz):
    web = actions.do_add_storage_element("WEB", "https://data.example.org/store")
    with pytest.raises(InvalidInput, match="WEB .*read-only"):
        request(hzz, web)
    assert not Transfer.objects.exists()


def test_requests_naming_unknown_files_or_no_source_are_refused(hzz, disk, disk2, xrd):
    with pytest.raises(NotFound, match="demo.hzz has no file named nope.root"):
        request(hzz, disk2, lfns=["nope.root"])
    with pytest.raises(NotFound, match="no available replica on XRD of uproot-HZZ.root"):
        request(hzz, disk2, source=xrd)
    with pytest.raises(InvalidInput, match="both DISK"):
        request(hzz, disk, source=disk)
    assert not Transfer.objects.exists()


def test_a_file_already_on_its_way_to_a_destination_is_not_requested_twice(hzz, disk2):
    first = request(hzz, disk2)
    with pytest.raises(Conflict, match=f"already being copied to DISK2 by transfer #{first.pk}"):
        request(hzz, disk2)
    run(first)
    assert run(request(hzz, disk2)).state == "succeeded"


def test_the_files_are_queued_after_the_commit(hzz, disk2, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transfer = request(hzz, disk2)
    assert len(callbacks) == 1 and transfer.files.get().state == "queued"


# -- cancel, concurrency, redelivery -----------------------------------------------------


def test_a_cancelled_transfer_copies_nothing(hzz, disk2, siteadmin):
    transfer = request(hzz, disk2)
    actions.do_cancel_transfer(transfer, siteadmin)
    done = run(transfer)
    assert done.state == "cancelled" and done.message == "cancelled by admin1"
    assert done.files.get().state == "cancelled"
    assert files_under(root_of(disk2)) == [] and not Replica.objects.filter(storage_element=disk2)
    with pytest.raises(Conflict, match="has already cancelled"):
        actions.do_cancel_transfer(transfer, siteadmin)


def test_a_copy_running_when_its_transfer_is_cancelled_stops_and_leaves_nothing(
    hzz, disk2, monkeypatch
):
    transfer = request(hzz, disk2)
    real_copy = engine.copy
    during: list[list[str]] = []

    def cancel_then_copy(*args, progress, **kwargs):
        actions.do_cancel_transfer(Transfer.objects.get(pk=transfer.pk))

        def watch(done, total):
            during.append(files_under(root_of(disk2)))
            progress(done, total)

        return real_copy(*args, progress=watch, **kwargs)

    monkeypatch.setattr(engine, "copy", cancel_then_copy)
    done = run(transfer)
    assert len(during) == 1 and ".dmu-part-" in during[0][0]
    assert done.state == "cancelled" and done.files.get().state == "cancelled"
    assert files_under(root_of(disk2)) == []
    assert not Replica.objects.filter(storage_element=disk2).exists()


def test_running_copies_into_one_storage_element_are_bounded(
    hzz, disk, disk2, storage_root, settings
):
    settings.DMU_MAX_TRANSFERS_PER_SE = 1
    rel = put_file(storage_root, ZMUMU, "demo/uproot-Zmumu.root")
    zmumu, _ = actions.check_register_dataset("demo.zmumu", disk, [rel])
    first, second = request(hzz, disk2).files.get(), request(zmumu, disk2).files.get()
    held = actions.acquire_transfer_file(first.pk)
    assert held is not None
    with pytest.raises(actions.SlotsFull):
        actions.acquire_transfer_file(second.pk)
    with pytest.raises(Retry):
        tasks.transfer_file(second.pk)
    assert TransferFile.objects.get(pk=second.pk).state == "queued"
    # another destination has its own slots
    other = request(zmumu, actions.do_add_storage_element("DISK3", (storage_root / "x").as_uri()))
    assert actions.acquire_transfer_file(other.files.get().pk) is not None
    # once the first copy ends, the waiting one gets the slot
    actions.do_copy_transfer_file(held)
    assert actions.acquire_transfer_file(second.pk) is not None


def test_a_task_delivered_twice_copies_once(hzz, disk2):
    transfer = request(hzz, disk2)
    item = transfer.files.get()
    tasks.transfer_file(item.pk)
    tasks.transfer_file(item.pk)
    assert Transfer.objects.get(pk=transfer.pk).events.filter(kind="file").count() == 1
    assert Replica.objects.filter(storage_element=disk2).count() == 1


def test_a_redelivered_task_takes_over_the_file_its_dead_worker_left_running(hzz, disk2):
    item = request(hzz, disk2).files.get()
    assert actions.acquire_transfer_file(item.pk) is not None  # then the worker died
    assert actions.acquire_transfer_file(item.pk) is None  # its process is alive: held
    TransferFile.objects.filter(pk=item.pk).update(lease_worker=f"{socket.gethostname()}:999999999")
    again = actions.acquire_transfer_file(item.pk)
    assert again is not None and again.unit.state == "running" and again.unit.lease_attempts == 2


def test_a_partial_transfer_says_which_files_failed(hzz, disk, disk2, storage_root):
    rel = put_file(storage_root, ZMUMU, "demo/uproot-Zmumu.root")
    actions.check_register_dataset("demo.hzz", disk, [rel])
    (storage_root / rel).unlink()
    done = run(request(hzz, disk2))
    assert done.state == "partial" and done.n_done == 1 and done.n_failed == 1
    assert done.message.startswith("1 of 2 file(s) on DISK2: 1 copied, 0 already there; 1 failed:")
    assert "uproot-Zmumu.root: " in done.message


# -- a worker that went silent (the lease sweep of dss.leases, seen through transfers) ----


def _silence(item_pk: int, minutes: int = 30) -> None:
    """As if the copying worker had not renewed its lease for ``minutes``."""
    ago = timezone.now() - timedelta(minutes=minutes)
    TransferFile.objects.filter(pk=item_pk).update(lease_expires_at=ago)


def test_a_copy_whose_worker_went_silent_is_sent_to_another_worker(
    hzz, disk2, django_capture_on_commit_callbacks
):
    transfer = request(hzz, disk2)
    item = transfer.files.get()
    assert actions.acquire_transfer_file(item.pk) is not None  # then it died
    assert not leases.sweep().requeued  # not silent for long enough yet
    _silence(item.pk)
    with django_capture_on_commit_callbacks() as sent:
        assert len(leases.sweep().requeued) == 1
    assert len(sent) == 1  # a new task for the file
    again = TransferFile.objects.get(pk=item.pk)
    assert (again.state, again.lease_token, again.lease_attempts) == ("queued", "", 1)
    note = transfer.events.get(kind="requeued").message
    assert note.startswith("uproot-HZZ.root of transfer #") and " went silent " in note
    assert "sent to another worker (attempt 2 of 3)" in note
    done = run(transfer)
    assert done.state == "succeeded" and Replica.objects.filter(storage_element=disk2).count() == 1


def test_a_silent_worker_that_wakes_up_stops_and_registers_nothing(
    hzz, disk2, django_capture_on_commit_callbacks
):
    item = request(hzz, disk2).files.get()
    silent = actions.acquire_transfer_file(item.pk)
    _silence(item.pk)
    with django_capture_on_commit_callbacks():
        leases.sweep()
    new = actions.acquire_transfer_file(item.pk)
    assert new is not None
    with pytest.raises(actions.TransferCancelled, match="no longer this worker's"):
        actions.do_copy_transfer_file(silent)
    assert files_under(root_of(disk2)) == []  # its temporary is gone
    assert not Replica.objects.filter(storage_element=disk2).exists()
    assert TransferFile.objects.get(pk=item.pk).lease_token == new.token


def test_a_copy_silent_too_many_times_fails_naming_the_worker(
    hzz, disk2, settings, django_capture_on_commit_callbacks
):
    settings.DSS_LEASE_ATTEMPTS = 2
    transfer = request(hzz, disk2)
    item = transfer.files.get()
    for _ in range(2):
        assert actions.acquire_transfer_file(item.pk) is not None
        _silence(item.pk)
        with django_capture_on_commit_callbacks():
            leases.sweep()
    failed = TransferFile.objects.get(pk=item.pk)
    assert (failed.state, failed.error_code) == ("failed", "stalled")
    assert failed.error.startswith(f"worker {leases.worker_name()} went silent (no heartbeat since")
    assert failed.error.endswith("gave up after 2 attempt(s)")
    done = Transfer.objects.get(pk=transfer.pk)
    assert done.state == "failed" and "went silent" in done.message


def test_a_live_copy_and_a_cancelled_transfer_are_left_alone(hzz, disk2, siteadmin):
    live = request(hzz, disk2).files.get()
    assert actions.acquire_transfer_file(live.pk) is not None
    assert not leases.sweep().requeued
    actions.do_cancel_transfer(live.transfer, siteadmin)
    _silence(live.pk)
    assert not leases.sweep()


# -- the real stack: a Celery worker and the XRootD server -------------------------------


def _finished(pk: int):
    def check():
        t = Transfer.objects.get(pk=pk)
        return t if t.is_final else None

    return check


def test_a_dataset_moves_between_local_disk_and_xrootd_both_ways_through_a_real_worker(
    celery_worker, hzz, disk, xrd, storage_root, xrootd_server, physicist
):
    # local disk -> XRootD
    transfer = request(hzz, xrd)
    done = wait_for(_finished(transfer.pk), timeout=120, what="the transfer to XRD")
    assert done.state == "succeeded", done.message
    replica = Replica.objects.get(storage_element=xrd, file__dataset=hzz)
    endpoint = xrd.endpoint()
    assert endpoint.server_checksum(replica.path) == hzz.files.get().adler32
    assert Path(endpoint.path(replica.path)).read_bytes() == HZZ.read_bytes()
    c = Client()
    c.force_login(physicist)
    html = c.get("/storage/XRD/").content.decode()
    assert "demo.hzz" in html and "complete" in html

    # XRootD -> local disk: a dataset whose only replica is on the XRootD server
    engine.copy(str(ZMUMU), (endpoint, "z/uproot-Zmumu.root"))
    zmumu, _ = actions.check_register_dataset("demo.zmumu", xrd, ["z/uproot-Zmumu.root"])
    back = request(zmumu, disk)
    done = wait_for(_finished(back.pk), timeout=120, what="the transfer to DISK")
    assert done.state == "succeeded", done.message
    local = Replica.objects.get(storage_element=disk, file__dataset=zmumu)
    assert (storage_root / local.path).read_bytes() == ZMUMU.read_bytes()
    assert "demo.zmumu" in c.get("/storage/DISK/").content.decode()
    item = done.files.select_related("source").get()
    assert item.source.name == "XRD" and item.attempts == 1 and item.rate_mb_s > 0


def test_a_real_worker_finishes_a_copy_whose_task_was_lost(celery_worker, hzz, disk2, monkeypatch):
    # The broker lost the task of a worker that died mid-copy: only the sweep can help.
    with monkeypatch.context() as lost:
        lost.setattr(leases, "_send_task", lambda *args: None)
        transfer = request(hzz, disk2)
    item = transfer.files.get()
    assert actions.acquire_transfer_file(item.pk) is not None
    _silence(item.pk)
    assert len(leases.sweep().requeued) == 1
    done = wait_for(_finished(transfer.pk), timeout=120, what="the requeued copy")
    assert done.state == "succeeded", done.message
    assert Replica.objects.get(storage_element=disk2).file == item.file
