"""Celery tasks of the TAG DB: tag one file of a build; publish a build whose files are done.

Each takes primary keys and is safe to run twice: a file's TAGs are written under a
temporary name and renamed, progress counts the files present, and publishing is
claimed by a conditional update.
"""

from __future__ import annotations

import logging

from celery import shared_task

from dmu.models import File
from dss.errors import DSSError
from dss.jobs import JobState

from . import actions
from .models import TagBuild

log = logging.getLogger(__name__)


def _load_build(build_id: int) -> TagBuild | None:
    return (
        TagBuild.objects.select_related("collection__schema", "collection__dataset")
        .filter(pk=build_id)
        .first()
    )


@shared_task(acks_late=True)
def build_file(build_id: int, file_id: int) -> None:
    """Compute one file's TAGs for a build; the task that completes the last file
    queues the publishing step."""
    build = _load_build(build_id)
    if build is None:
        return
    if build.state == JobState.QUEUED and not build.claim():
        build.refresh_from_db()
    if build.state != JobState.RUNNING or build.publish_started_at:
        return  # ended, or a redelivered message after every file was done
    file = File.objects.prefetch_related("replicas__storage_element").filter(pk=file_id).first()
    if file is None:
        actions.do_fail_build(build, f"file number {file_id} left the dataset during the build")
        return
    try:
        n = actions.do_tag_file(build, file)
    except DSSError as exc:
        actions.do_fail_build(build, actions.file_failure(file, exc))
        return
    except Exception as exc:
        log.exception("TAG build %s failed on %s", build_id, file.lfn)
        actions.do_fail_build(build, actions.file_failure(file, exc))
        raise
    build.refresh_from_db(fields=["state"])
    if build.state != JobState.RUNNING:
        actions.discard_scratch(build)  # it ended while this file was being tagged
        return
    build.log("file", f"{file.lfn}: {n:,} events tagged")
    if actions.record_file_done(build) >= build.progress_total:
        publish_build.delay(build.pk)


@shared_task(acks_late=True)
def publish_build(build_id: int) -> None:
    """Load a build's TAGs into the TAG DB and swap them in as the collection."""
    build = _load_build(build_id)
    if build is None or build.state != JobState.RUNNING:
        return
    try:
        actions.do_publish_build(build)
    except DSSError as exc:
        actions.do_fail_build(build, actions.publish_failure(exc))
    except Exception as exc:
        log.exception("publishing TAG build %s failed", build_id)
        actions.do_fail_build(build, actions.publish_failure(exc))
        raise
