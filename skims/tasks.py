"""Celery tasks of the skim service: each takes a primary key and works on that unit under
its lease (dss.leases): a second delivery finds the unit held or done and does nothing; a
worker that dies leaves it to the sweep, which gives it to another worker."""

from __future__ import annotations

from celery import shared_task

from dss import leases

from . import actions, sitejobs
from .models import SkimJob, SkimPart


@shared_task(acks_late=True)
def plan_skim(skim_id: int) -> None:
    """Find the selected entries, record the parts and queue one task per part."""
    leases.work_on(
        SkimJob, skim_id, actions.do_plan_skim, actions.fail_skim_attempt, ~SkimJob.planned()
    )


@shared_task(acks_late=True)
def run_part(part_id: int) -> None:
    """Skim one input file; when it was the last part to end, queue the finishing step."""
    lease = leases.work_on(SkimPart, part_id, actions.do_run_part, actions.fail_part_attempt)
    if lease is not None:
        actions.finish_if_done(lease.unit.skim_id)


@shared_task(acks_late=True)
def finish_skim(skim_id: int) -> None:
    """Register the output dataset and write the provenance record."""
    leases.work_on(
        SkimJob, skim_id, actions.do_finish_skim, actions.fail_skim_attempt, SkimJob.planned()
    )


@shared_task(acks_late=True, ignore_result=True)
def submit_site_job(part_id: int) -> None:
    """Give a part of a skim on sites its batch job (the part is claimed: safe twice)."""
    sitejobs.do_submit_site_job(part_id)


@shared_task(acks_late=True, ignore_result=True)
def poll_site_jobs() -> None:
    """Periodic (beat): follow skim jobs on sites, resubmit what failed, submit what waits."""
    sitejobs.do_poll_site_jobs()
