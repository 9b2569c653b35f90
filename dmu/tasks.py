"""Celery tasks of the catalog: take a primary key, take the unit's lease (dss.leases),
call an action, record the outcome. A second delivery finds the unit held or done."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from dss import leases
from dss.errors import DSSError
from dss.jobs import JobState

from . import actions
from .models import RegistrationJob

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def register_dataset(job_id: int) -> None:
    """Run a RegistrationJob under its lease."""
    lease = leases.acquire(RegistrationJob, job_id)
    if lease is None:
        return
    job: RegistrationJob = lease.unit
    job.log("started", f"on {job.lease_worker}")

    def progress(done: int, total: int) -> None:
        lease.check()
        job.set_progress(done, total)

    with lease:
        try:
            _, added = actions.check_register_dataset(
                job.dataset_name,
                job.storage_element,
                job.paths,
                user=job.owner,
                tree=job.tree or None,
                progress=progress,
                before_commit=lease.assert_held,
            )
        except leases.LeaseLost:
            raise
        except Exception as e:
            if not isinstance(e, DSSError):
                log.exception("registration job %s failed", job_id)
            message = (
                str(e) if isinstance(e, DSSError) else f"internal error: {type(e).__name__}: {e}"
            )
            if lease.release():
                job.finish(JobState.FAILED, message)
            return
        RegistrationJob.objects.filter(pk=job.pk).update(files_added=added)
        if lease.release():
            job.finish(JobState.SUCCEEDED, f"{added} new file(s) registered in {job.dataset_name}")


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
    with lease:
        try:
            actions.do_copy_transfer_file(lease)
        except (actions.TransferCancelled, leases.LeaseLost):
            log.info("transfer file %s stopped: it is no longer this worker's", item_id)
        except Exception as e:
            if not isinstance(e, DSSError):
                log.exception("transfer file %s failed", item_id)
            actions.do_fail_transfer_file(lease, e)
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
