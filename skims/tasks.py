"""Celery tasks of the skim service: each takes a primary key, takes the unit's lease
(dss.leases), calls an action, and records the outcome. A second delivery of a task finds
the unit held or done and does nothing."""

from __future__ import annotations

import logging

from celery import shared_task

from dss import leases
from dss.errors import DSSError

from . import actions
from .models import SkimJob, SkimPart

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def plan_skim(skim_id: int) -> None:
    """Find the selected entries, record the parts and queue one task per part."""
    lease = leases.acquire(SkimJob, skim_id, when=~SkimJob.planned())
    if lease is None:
        return
    with lease:
        lease.unit.log("started", f"planning on {lease.unit.lease_worker}")
        try:
            actions.do_plan_skim(lease)
        except leases.LeaseLost:
            raise
        except Exception as e:
            if not isinstance(e, DSSError):
                log.exception("planning skim %s failed", skim_id)
            actions.do_fail_skim(lease.unit, e, lease)


@shared_task(acks_late=True)
def run_part(part_id: int) -> None:
    """Skim one input file; when it was the last part to end, queue the finishing step."""
    lease = leases.acquire(SkimPart, part_id)
    if lease is None:
        return
    with lease:
        try:
            actions.do_run_part(lease)
        except leases.LeaseLost:
            raise
        except Exception as e:
            if not isinstance(e, DSSError):
                log.exception("skim part %s failed", part_id)
            actions.do_fail_part(lease.unit, e, lease)
    actions.finish_if_done(lease.unit.skim_id)


@shared_task(acks_late=True)
def finish_skim(skim_id: int) -> None:
    """Register the output dataset and write the provenance record."""
    lease = leases.acquire(SkimJob, skim_id, when=SkimJob.planned())
    if lease is None:
        return
    with lease:
        try:
            actions.do_finish_skim(lease)
        except leases.LeaseLost:
            raise
        except Exception as e:
            log.exception("finishing skim %s failed", skim_id)
            actions.do_fail_skim(lease.unit, e, lease)
