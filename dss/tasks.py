"""The kernel's periodic work: the lease sweep that every app's long work relies on."""

from __future__ import annotations

import logging

from celery import shared_task

from . import leases

log = logging.getLogger(__name__)


@shared_task
def sweep_leases() -> None:
    """Periodic (beat): hand work whose worker went silent to another worker, fail it after
    its last attempt, and send again the tasks that the broker lost (dss/leases.py)."""
    report = leases.sweep()
    if report.requeued:
        log.warning("sent to another worker: %s", ", ".join(report.requeued))
    if report.failed:
        log.warning("failed after their last attempt: %s", ", ".join(report.failed))
    if report.settled:
        log.warning("ended after their last unit: %s", ", ".join(report.settled))
    if report.resent:
        log.warning("tasks sent again (lost by the broker): %s", ", ".join(report.resent))
