"""Celery tasks of the catalog: take a primary key, claim the row, call an action."""

from __future__ import annotations

import logging

from celery import shared_task

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
