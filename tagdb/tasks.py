"""Celery tasks of the TAG DB: tag one file of a build; publish a build whose files are done.

Each takes a primary key and works on that unit under its lease (dss.leases): a second
delivery finds the file or the build held or done and does nothing; a worker that dies
leaves the unit to the sweep, which gives it to another worker.
"""

from __future__ import annotations

from celery import shared_task

from dss import leases

from . import actions
from .models import TagBuild, TagBuildFile


@shared_task(acks_late=True)
def build_file(unit_id: int) -> None:
    """Compute one file's TAGs for a build; the task that completes the last file queues
    the publishing step."""
    lease = leases.work_on(TagBuildFile, unit_id, actions.do_tag_file, actions.fail_file_attempt)
    if lease is None:
        return
    build = TagBuild.objects.filter(
        TagBuild.waiting(), pk=lease.unit.build_id, lease_token=""
    ).first()
    if build is not None:
        leases.send(build)


@shared_task(acks_late=True)
def publish_build(build_id: int) -> None:
    """Load a build's TAGs into the TAG DB and swap them in as the collection."""
    leases.work_on(TagBuild, build_id, actions.do_publish_build, actions.fail_publish_attempt)
