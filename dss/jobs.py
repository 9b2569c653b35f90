"""The one job pattern of DSS: skims, transfers, registrations, TAG builds and pilots all
have a state, progress, a message, timestamps and an append-only event log.

``Job`` is abstract; each app's job model inherits it. Events live in ``dss.JobEvent`` and
point at their job through a generic relation, so one history page can read them all.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.db import models, transaction
from django.utils import timezone


class JobState(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    PARTIAL = "partial", "partial"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


class FileWorkState(models.TextChoices):
    """The states of the work on one file inside a job: a skim part, a file transfer."""

    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


FINAL_STATES = {JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED}


class Job(models.Model):
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    events = GenericRelation("dss.JobEvent")

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def percent(self) -> int:
        if self.progress_total <= 0:
            return 100 if self.state == JobState.SUCCEEDED else 0
        return min(100, int(100 * self.progress_done / self.progress_total))

    @property
    def duration(self):
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def log(self, kind: str, message: str = "", **data) -> None:
        """Append an event to this job's log."""
        from .models import JobEvent

        JobEvent.objects.create(job=self, kind=kind, message=message[:4000], data=data or {})

    def claim(self) -> bool:
        """Move a queued job to running; False if another worker (or a cancel) got there first."""
        now = timezone.now()
        won = (
            type(self)
            .objects.filter(pk=self.pk, state=JobState.QUEUED)
            .update(state=JobState.RUNNING, started_at=now)
        )
        if won:
            self.state, self.started_at = JobState.RUNNING, now
            self.log("started")
        return bool(won)

    def set_progress(self, done: int, total: int | None = None) -> None:
        self.progress_done = done
        fields = ["progress_done"]
        if total is not None:
            self.progress_total = total
            fields.append("progress_total")
        type(self).objects.filter(pk=self.pk).update(**{f: getattr(self, f) for f in fields})

    def finish(self, state: str, message: str = "", **fields) -> bool:
        """Record the outcome unless the job already ended (a cancel wins over a late finish).

        ``fields`` are set in the same update (a leased job clears its lease with it)."""
        now = timezone.now()
        with transaction.atomic():
            won = (
                type(self)
                .objects.filter(pk=self.pk)
                .exclude(state__in=FINAL_STATES)
                .update(state=state, message=message[:4000], finished_at=now, **fields)
            )
            if won:
                self.state, self.message, self.finished_at = state, message, now
                self.log(state, message)
        return bool(won)
