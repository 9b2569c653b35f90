"""Celery tasks of the catalog: take a primary key, claim the row, call an action."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from dss.errors import DSSError
from dss.jobs import JobState

from . import actions
from .models import RegistrationJob

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def register_dataset(job_id: int) -> None:
    """Run a RegistrationJob; safe to run twice (a second run finds the job claimed)."""
    job = (
        RegistrationJob.objects.select_related("storage_element", "owner").filter(pk=job_id).first()
    )
    if job is None or not job.claim():
        return
    try:
        _, added = actions.check_register_dataset(
            job.dataset_name,
            job.storage_element,
            job.paths,
            user=job.owner,
            tree=job.tree or None,
            progress=job.set_progress,
        )
    except DSSError as e:
        job.finish(JobState.FAILED, str(e))
        return
    except Exception as e:
        log.exception("registration job %s failed", job_id)
        job.finish(JobState.FAILED, f"internal error: {type(e).__name__}: {e}")
        raise
    RegistrationJob.objects.filter(pk=job.pk).update(files_added=added)
    job.finish(JobState.SUCCEEDED, f"{added} new file(s) registered in {job.dataset_name}")


@shared_task(bind=True, acks_late=True)
def transfer_file(self, item_id: int) -> None:
    """Copy one file of a Transfer; the last of its files to end finishes the transfer.

    When the destination already receives ``DMU_MAX_TRANSFERS_PER_SE`` files, the task goes
    back to the queue for ``DMU_SLOT_WAIT_SECONDS``. Safe to run twice: a second delivery
    finds the file claimed (or done) and returns.
    """
    try:
        item = actions.claim_transfer_file(item_id, self.request.id or "")
    except actions.SlotsFull:
        raise self.retry(countdown=settings.DMU_SLOT_WAIT_SECONDS, max_retries=None) from None
    if item is None:
        return
    try:
        actions.do_copy_transfer_file(item)
    except actions.TransferCancelled:
        log.info("transfer file %s stopped: its transfer was cancelled", item_id)
    except Exception as e:
        if not isinstance(e, DSSError):
            log.exception("transfer file %s failed", item_id)
        actions.do_fail_transfer_file(item, e)
    actions.finish_transfer_if_done(item.transfer_id)


@shared_task
def requeue_stale_copies() -> None:
    """Periodic (beat): send copies whose worker went silent to another worker."""
    requeued, failed = actions.do_requeue_stale_copies()
    if requeued or failed:
        log.warning("stale copies: %d sent to another worker, %d failed", requeued, failed)


@shared_task(bind=True, acks_late=True)
def register_in_rucio(self, dataset_id: int) -> None:
    """One attempt to register a dataset in Rucio; when Rucio did not answer, the task comes
    back after a doubling wait until DSS_RUCIO_RETRIES attempts are used up. Safe to run twice:
    only a pending registration is attempted, under a row lock."""
    from .catalogs import do_register_in_rucio

    delay = do_register_in_rucio(dataset_id)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=settings.DSS_RUCIO_RETRIES)
