"""Celery tasks of the catalog: each takes a primary key and works on that unit under its
lease (dss.leases): a second delivery finds the unit held or done and does nothing."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from dss import leases

from . import actions
from .models import RegistrationJob


@shared_task(acks_late=True)
def register_dataset(job_id: int) -> None:
    """Run a RegistrationJob under its lease."""
    leases.work_on(
        RegistrationJob, job_id, actions.do_run_registration, actions.fail_registration_attempt
    )


@shared_task(bind=True, acks_late=True)
def transfer_file(self, item_id: int) -> None:
    """Copy one file of a Transfer; the last of its files to end finishes the transfer.

    When the destination already receives ``DMU_MAX_TRANSFERS_PER_SE`` files, the task goes
    back to the queue for ``DMU_SLOT_WAIT_SECONDS``. Safe to run twice: a second delivery
    finds the file held (or done) and returns.
    """
    try:
        lease = actions.acquire_transfer_file(item_id)
    except actions.SlotsFull:
        raise self.retry(countdown=settings.DMU_SLOT_WAIT_SECONDS, max_retries=None) from None
    if lease is None:
        return
    leases.hold(lease, actions.do_copy_transfer_file, actions.do_fail_transfer_file)
    actions.finish_transfer_if_done(lease.unit.transfer_id)


@shared_task(bind=True, acks_late=True)
def register_in_rucio(self, dataset_id: int) -> None:
    """One attempt to register a dataset in Rucio; when Rucio did not answer, the task comes
    back after a doubling wait until DSS_RUCIO_RETRIES attempts are used up. Safe to run twice:
    only a pending registration is attempted, under a row lock."""
    from .catalogs import do_register_in_rucio

    delay = do_register_in_rucio(dataset_id)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=settings.DSS_RUCIO_RETRIES)
