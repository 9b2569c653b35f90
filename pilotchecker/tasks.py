"""Celery tasks of the PilotChecker: take primary keys, claim the row, call an action."""

from __future__ import annotations

import logging

from celery import shared_task

from . import actions, batch
from .models import Pilot

log = logging.getLogger(__name__)

SUBMIT_RETRIES = 3


@shared_task(bind=True, acks_late=True, max_retries=SUBMIT_RETRIES)
def submit_pilot(self, pilot_id: int) -> None:
    """Hand one pilot to its site's batch system; safe to run twice (the pilot is claimed)."""
    p = Pilot.objects.select_related("site").filter(pk=pilot_id).first()
    if p is None:
        return
    try:
        actions.do_send_pilot(p, last_attempt=self.request.retries >= SUBMIT_RETRIES)
    except batch.BatchError as e:
        # Only transient errors come back out: the controller may answer in a while.
        raise self.retry(exc=e, countdown=15 * 2**self.request.retries) from None
    except Exception as e:
        log.exception("submitting pilot %s failed", pilot_id)
        actions.do_fail_pilot(p, f"internal error: {type(e).__name__}: {e}")
        raise


@shared_task(acks_late=True, ignore_result=True)
def poll_pilots() -> None:
    """Periodic (beat): follow the pilots' batch jobs, then lose those past their timeout."""
    actions.do_poll_pilots()
    actions.do_mark_lost()


@shared_task(acks_late=True, ignore_result=True)
def schedule_pilots() -> None:
    """Periodic (beat): send each site's periodic pilot when its interval has passed."""
    actions.do_schedule_pilots()
