"""Celery tasks of the TAG DB: tag one file of a build; publish a build whose files are done.

Each takes a primary key and the unit's lease (dss.leases): a second delivery finds the
file or the build held or done and does nothing; a worker that dies leaves the unit to
the sweep, which gives it to another worker.
"""

from __future__ import annotations

import logging

from celery import shared_task

from dss import leases
from dss.errors import DSSError

from . import actions
from .models import TagBuild, TagBuildFile

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def build_file(unit_id: int) -> None:
    """Compute one file's TAGs for a build; the task that completes the last file queues
    the publishing step."""
    lease = leases.acquire(TagBuildFile, unit_id)
    if lease is None:
        return
    unit = lease.unit
    unit.build.claim()
    with lease:
        try:
            actions.do_tag_file(lease)
        except leases.LeaseLost:
            raise
        except Exception as exc:
            if not isinstance(exc, DSSError):
                log.exception("TAG build %s failed on %s", unit.build_id, unit.lfn)
            if lease.release(state="failed", message=str(exc)[:4000]):
                actions.do_fail_build(unit.build, actions.file_failure(unit.lfn, exc))
            return
    build = TagBuild.objects.filter(TagBuild.waiting(), pk=unit.build_id, lease_token="").first()
    if build is not None:
        leases.send(build)


@shared_task(acks_late=True)
def publish_build(build_id: int) -> None:
    """Load a build's TAGs into the TAG DB and swap them in as the collection."""
    lease = leases.acquire(TagBuild, build_id)
    if lease is None:
        return
    with lease:
        try:
            actions.do_publish_build(lease)
        except leases.LeaseLost:
            raise
        except Exception as exc:
            if not isinstance(exc, DSSError):
                log.exception("publishing TAG build %s failed", build_id)
            if lease.release():
                actions.do_fail_build(lease.unit, actions.publish_failure(exc))
