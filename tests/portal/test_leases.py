"""The lease kernel (dss/leases.py) on a unit of every app's kind: one holder, heartbeats,
commit only while held, the sweep's hand-over, give-up, resend of lost messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dmu import actions as dmu_actions
from dmu.models import Dataset, RegistrationJob
from dss import leases
from tests.conftest import HZZ, put_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job(local_se, storage_root, siteadmin, monkeypatch):
    monkeypatch.setattr(leases, "_send_task", lambda name, pk: None)  # no worker here
    rel = put_file(storage_root, HZZ, "l/hzz.root")
    return dmu_actions.do_enqueue_registration("user.l.one", local_se, [rel], user=siteadmin)


def expire(row) -> None:
    type(row).objects.filter(pk=row.pk).update(
        lease_expires_at=timezone.now() - timedelta(minutes=5)
    )


def test_one_worker_holds_a_unit_and_a_duplicate_delivery_does_nothing(job):
    lease = leases.acquire(RegistrationJob, job.pk)
    assert lease is not None and lease.unit.state == "running" and lease.unit.lease_attempts == 1
    assert lease.unit.lease_worker == leases.worker_name()
    assert leases.acquire(RegistrationJob, job.pk) is None


def test_the_heartbeat_renews_the_lease_until_another_attempt_holds_it(job, settings):
    settings.DSS_LEASE_HEARTBEAT_SECONDS = 0.05
    with leases.acquire(RegistrationJob, job.pk) as lease:
        before = RegistrationJob.objects.get(pk=job.pk).lease_expires_at
        import time

        time.sleep(0.3)
        assert RegistrationJob.objects.get(pk=job.pk).lease_expires_at > before
        RegistrationJob.objects.filter(pk=job.pk).update(lease_token="someone-else")
        time.sleep(0.3)
        assert lease.lost
        with pytest.raises(leases.LeaseLost):
            lease.check()


def test_an_attempt_that_lost_its_unit_cannot_commit(job):
    lease = leases.acquire(RegistrationJob, job.pk)
    RegistrationJob.objects.filter(pk=job.pk).update(lease_token="")  # cancelled, say
    with pytest.raises(leases.LeaseLost):
        with lease.committing():
            Dataset.objects.create(name="user.l.never")
    assert not Dataset.objects.filter(name="user.l.never").exists()


def test_the_sweep_hands_an_expired_unit_on_then_gives_up_naming_the_worker(job, settings):
    settings.DSS_LEASE_ATTEMPTS = 2
    assert leases.acquire(RegistrationJob, job.pk) is not None
    assert not leases.sweep().requeued  # its lease is still good
    expire(job)
    report = leases.sweep()
    assert report.requeued == [f"registration #{job.pk} of user.l.one"]
    job.refresh_from_db()
    assert (job.state, job.lease_token) == ("queued", "")
    assert "went silent" in job.events.get(kind="requeued").message
    assert leases.acquire(RegistrationJob, job.pk) is not None  # attempt 2
    expire(job)
    assert leases.sweep().failed == [f"registration #{job.pk} of user.l.one"]
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.message.startswith(f"worker {leases.worker_name()} went silent")
    assert job.message.endswith("gave up after 2 attempt(s)")


def test_a_unit_whose_holder_died_on_this_host_is_taken_over_at_once(job):
    assert leases.acquire(RegistrationJob, job.pk) is not None
    RegistrationJob.objects.filter(pk=job.pk).update(lease_worker="vm-gone:1")  # another host
    assert leases.acquire(RegistrationJob, job.pk) is None  # cannot tell: wait for expiry
    import socket

    RegistrationJob.objects.filter(pk=job.pk).update(
        lease_worker=f"{socket.gethostname()}:999999999"
    )
    again = leases.acquire(RegistrationJob, job.pk)
    assert again is not None and again.unit.lease_attempts == 2 and again.taken_over


def test_a_waiting_unit_whose_message_was_lost_is_sent_again_when_the_queue_is_empty(
    job, monkeypatch, settings
):
    sent = []
    monkeypatch.setattr(leases, "_send_task", lambda name, pk: sent.append((name, pk)))
    monkeypatch.setattr(leases, "queue_length", lambda: 0)
    assert not leases.sweep().resent  # sent a moment ago: not lost yet
    RegistrationJob.objects.filter(pk=job.pk).update(
        lease_sent_at=timezone.now() - timedelta(seconds=settings.DSS_LEASE_SECONDS + 1)
    )
    monkeypatch.setattr(leases, "queue_length", lambda: 3)
    assert not leases.sweep().resent  # messages are waiting: it may be one of them
    monkeypatch.setattr(leases, "queue_length", lambda: 0)
    assert leases.sweep().resent == [f"registration #{job.pk} of user.l.one"]
    assert sent == [("dmu.tasks.register_dataset", job.pk)]


def test_live_tokens_are_those_of_unexpired_leases(job):
    lease = leases.acquire(RegistrationJob, job.pk)
    assert lease.token in leases.live_tokens()
    expire(job)
    assert lease.token not in leases.live_tokens()
