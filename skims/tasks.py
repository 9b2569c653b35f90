"""Celery tasks of the skim service: each takes a primary key, claims its row, calls an action."""

from __future__ import annotations

import logging

from celery import shared_task

from dss.errors import DSSError
from dss.jobs import JobState

from . import actions
from .models import SkimJob

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def plan_skim(skim_id: int) -> None:
    """Find the selected entries, record the parts and queue one task per part."""
    skim = SkimJob.objects.filter(pk=skim_id).first()
    if skim is None or not skim.claim():
        return
    try:
        parts = actions.do_plan_skim(skim)
    except Exception as e:
        if not isinstance(e, DSSError):
            log.exception("planning skim %s failed", skim_id)
        actions.do_fail_skim(skim, e)
        return
    if not parts:
        names = ", ".join(i.dataset.name for i in skim.inputs.select_related("dataset"))
        skim.finish(
            JobState.FAILED, f"the selection matches no events in {names}; nothing was written"
        )
        actions.write_provenance(skim)
        return
    for part in parts:
        run_part.delay(part.pk)


@shared_task(bind=True, acks_late=True)
def run_part(self, part_id: int) -> None:
    """Skim one input file; the last part to end finishes the skim."""
    part = actions.claim_part(part_id, self.request.id or "")
    if part is None:
        return
    try:
        actions.do_run_part(part)
    except Exception as e:
        if not isinstance(e, DSSError):
            log.exception("skim part %s failed", part_id)
        actions.do_fail_part(part, e)
    finish_if_done(part.skim_id)


def finish_if_done(skim_id: int) -> None:
    skim = actions.claim_finishing(skim_id)
    if skim is None:
        return
    try:
        actions.do_finish_skim(skim)
    except Exception as e:
        log.exception("finishing skim %s failed", skim_id)
        actions.do_fail_skim(skim, e)
