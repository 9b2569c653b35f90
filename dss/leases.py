"""Leases: how every unit of long work ends, whatever happens to the worker running it.

A *unit* is one row that one worker at a time works on: a skim's planning or finishing step
(the SkimJob row), a skim part, a file of a TAG build, a TAG build's publishing step, a
registration, the copy of one file. Each unit model inherits :class:`Leased` and says, in a
few methods, which of its rows wait for a worker, which are being worked on, how to put one
back in the queue, how to fail it, and what temporaries an attempt leaves.

The rules, the same for every unit:

- **One holder.** A worker starts a unit by :func:`acquire`, a conditional update that gives
  the row a fresh token (the attempt), its host:pid and an expiry ``DSS_LEASE_SECONDS``
  ahead. A second delivery of the same task (Redis redelivers after its visibility timeout,
  the embedded broker after a restart) finds the lease held and does nothing.
- **Heartbeat.** While it works, a thread of the holder renews the expiry every
  ``DSS_LEASE_HEARTBEAT_SECONDS`` (only while the token is still the row's). The work
  calls :meth:`Lease.check` between chunks; it raises :class:`LeaseLost` when the unit was
  given to another worker or cancelled (cancel clears the token), so cancel is a flag read
  within seconds, never a killed process.
- **Outputs per attempt.** An attempt writes under names that carry its token and makes
  them visible only in :meth:`Lease.committing`, a transaction that locks the row and
  checks the token first: a late or duplicate attempt finds the unit no longer its own,
  discards what it wrote and stops.
- **The sweep.** Celery beat runs :func:`sweep` every ``DSS_SWEEP_SECONDS``. A unit whose
  lease expired (its worker was killed, or hangs) is put back in the queue and its task
  sent again, up to ``DSS_LEASE_ATTEMPTS`` attempts; then it fails, naming the worker that
  went silent. Temporaries of the dead attempt are removed. A unit that waits for a
  worker while the broker's queue is empty (the embedded broker forgets a message it
  handed to a worker that died) has its task sent again.
- A worker that finds an expired lease, or one held by a process of its own host that no
  longer exists, takes the unit over at once instead of waiting for the sweep.

Plain ``transaction.atomic`` and conditional updates: the same on PostgreSQL, MariaDB and
SQLite (where a write transaction locks the database), with Redis or the embedded broker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This attempt no longer holds its unit: it was cancelled, or given to another worker
    after this one went silent. The attempt must discard its outputs and stop."""


def worker_name() -> str:
    """``host:pid`` of this process: who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_is_gone(worker: str) -> bool:
    """True when ``worker`` names a process of this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_seconds() -> float:
    return float(settings.DSS_LEASE_SECONDS)


class Leased(models.Model):
    """A row that one worker at a time works on, under a lease (see the module docstring).

    Subclasses set :attr:`lease_task` (or override :meth:`lease_task_name`) and implement
    :meth:`waiting`, :meth:`working`, :meth:`start_fields`, :meth:`requeue_fields` and
    :meth:`give_up`; :meth:`discard_attempt` and :meth:`job_label` when they have
    something to say.
    """

    lease_token = models.CharField(max_length=32, blank=True, default="", db_index=True)
    lease_worker = models.CharField(
        max_length=200, blank=True, help_text="host:pid of the last worker that held it"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_attempts = models.PositiveIntegerField(
        default=0, help_text="how many times a worker started it"
    )
    lease_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="when its task was last sent to the queue"
    )

    lease_task: ClassVar[str] = ""

    class Meta:
        abstract = True

    # -- what each unit model says about itself

    @classmethod
    def waiting(cls) -> Q:
        """Rows whose task is (or should be) in the queue, waiting for a worker."""
        raise NotImplementedError

    @classmethod
    def working(cls) -> Q:
        """Rows a worker has started (they hold a token)."""
        raise NotImplementedError

    def start_fields(self) -> dict[str, Any]:
        """Fields to set when a worker starts the unit."""
        return {}

    def requeue_fields(self) -> dict[str, Any]:
        """Fields to set when the sweep puts the unit back in the queue."""
        return {}

    def give_up(self, message: str) -> None:
        """Fail the unit (and what depends on it) after its last attempt went silent."""
        raise NotImplementedError

    def discard_attempt(self, token: str) -> None:
        """Remove the temporaries that attempt ``token`` may have left (idempotent)."""

    def lease_task_name(self) -> str:
        """The Celery task that works on this unit, called with ``[pk]``."""
        return self.lease_task

    def job_label(self) -> str:
        """The unit in a log line: 'part 3 of skim #7'."""
        return str(self)

    def log_event(self, kind: str, message: str) -> None:
        """Append to the log of the job the unit belongs to (if it has one)."""

    @classmethod
    def settle(cls) -> list[str]:
        """Bring jobs whose units have all ended to their end, in case the worker that
        ended the last unit died before it could (called by every sweep). Returns what
        it ended, for the sweep's report."""
        return []

    @property
    def lease_held(self) -> bool:
        return bool(self.lease_token)


def leased_models() -> list[type[Leased]]:
    """Every installed unit model."""
    return [m for m in apps.get_models() if issubclass(m, Leased)]


def live_tokens() -> set[str]:
    """The tokens of every lease held now: temporaries named with them belong to work
    under way and must be left alone."""
    now = timezone.now()
    tokens: set[str] = set()
    for model in leased_models():
        tokens.update(
            model.objects.exclude(lease_token="")
            .filter(lease_expires_at__gte=now)
            .values_list("lease_token", flat=True)
        )
    return tokens


# --------------------------------------------------------------------------- sending


def send(unit: Leased) -> None:
    """Queue the unit's task after the current transaction commits, and note when."""
    model = type(unit)
    model.objects.filter(pk=unit.pk).update(lease_sent_at=timezone.now())
    name, pk = unit.lease_task_name(), unit.pk
    transaction.on_commit(lambda: _send_task(name, pk))


def _send_task(name: str, pk: int) -> None:
    from dss.celery import app

    if app.conf.task_always_eager:
        app.tasks[name].apply(args=[pk])
        return
    app.send_task(name, args=[pk], queue=settings.CELERY_TASK_DEFAULT_QUEUE)


# --------------------------------------------------------------------------- holding


@dataclass
class Lease:
    """One attempt's hold on a unit; use as a context manager around the work."""

    model: type[Leased]
    pk: int
    token: str
    unit: Leased
    taken_over: str = ""  # the token of the dead attempt this one took the unit from
    _lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(
            target=self._beat_forever, name=f"lease-{self.model.__name__}-{self.pk}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.close()
        if exc_type is not None and issubclass(exc_type, LeaseLost):
            # Someone else owns the unit now (or it was cancelled): forget this attempt.
            self.unit.discard_attempt(self.token)
            log.info("%s: %s", self.unit.job_label(), exc)
            return True
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _rows(self):
        return self.model.objects.filter(pk=self.pk, lease_token=self.token)

    def beat(self) -> bool:
        """Renew the lease now; False (and the lease is lost) if the token is not ours."""
        renewed = self._rows().update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds())
        )
        if not renewed:
            self._lost.set()
        return bool(renewed)

    def _beat_forever(self) -> None:
        interval = float(settings.DSS_LEASE_HEARTBEAT_SECONDS)
        try:
            while not self._stop.wait(interval):
                try:
                    if not self.beat():
                        return
                except Exception:  # a database hiccup: try again at the next beat
                    log.warning("heartbeat of %s failed", self.unit.job_label(), exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise LeaseLost if the unit is no longer this attempt's (call between chunks)."""
        if self._lost.is_set():
            raise LeaseLost(
                f"{self.unit.job_label()} is no longer this worker's (cancelled or reassigned)"
            )

    @contextmanager
    def committing(self) -> Iterator[Leased]:
        """A transaction in which this attempt still holds the unit, its row locked: make
        outputs visible and record them here. Raises LeaseLost (and rolls back) if the
        unit is no longer ours. The lease is released when the block commits."""
        with transaction.atomic():
            row = (
                self.model.objects.select_for_update()
                .filter(pk=self.pk, lease_token=self.token)
                .first()
            )
            if row is None:
                self._lost.set()
                raise LeaseLost(f"{self.unit.job_label()} is no longer this worker's")
            yield row
            self.model.objects.filter(pk=self.pk, lease_token=self.token).update(
                lease_token="", lease_expires_at=None
            )

    def assert_held(self) -> None:
        """Inside a transaction: lock the unit's row and raise LeaseLost unless this
        attempt still holds it (for work that commits through another function)."""
        if (
            not self.model.objects.select_for_update()
            .filter(pk=self.pk, lease_token=self.token)
            .exists()
        ):
            self._lost.set()
            raise LeaseLost(f"{self.unit.job_label()} is no longer this worker's")

    def end_job(self, state: str, message: str) -> bool:
        """For a unit that is a job row (dss.jobs.Job): record its outcome and release the
        lease in one update, if this attempt still holds it."""
        with transaction.atomic():
            if not self._rows().select_for_update().exists():
                self._lost.set()
                return False
            return self.unit.finish(state, message, lease_token="", lease_expires_at=None)

    def release(self, **fields: Any) -> bool:
        """End the attempt, setting ``fields`` (e.g. a failed state), if still ours."""
        return bool(self._rows().update(lease_token="", lease_expires_at=None, **fields))


def acquire(model: type[Leased], pk: int, when: Q | None = None) -> Lease | None:
    """Start work on unit ``pk`` for this worker; None when it is not ours to do (done,
    cancelled, held by a live worker, or not matching ``when``, which tells apart the steps
    of a job row that is a unit more than once). Takes over an expired lease, or one whose
    holder was a process of this host that has died; after ``DSS_LEASE_ATTEMPTS``
    attempts such a unit fails instead, naming the silent worker."""
    now = timezone.now()
    rows = model.objects.filter(pk=pk)
    if when is not None:
        rows = rows.filter(when)
    row = rows.first()
    if row is None:
        return None
    waiting = rows.filter(model.waiting(), lease_token="").exists()
    if not waiting:
        working = rows.filter(model.working(), lease_token=row.lease_token)
        if not row.lease_token or not working.exists():
            return None
        dead = row.lease_expires_at is None or row.lease_expires_at < now
        if not dead and not _holder_is_gone(row.lease_worker):
            return None  # a live worker has it: this is a duplicate delivery
        if row.lease_attempts >= settings.DSS_LEASE_ATTEMPTS:
            _give_up(row, now)
            return None
    token = uuid.uuid4().hex
    condition = Q(lease_token=row.lease_token) & (model.waiting() if waiting else model.working())
    won = rows.filter(condition).update(
        lease_token=token,
        lease_worker=worker_name(),
        lease_expires_at=now + timedelta(seconds=lease_seconds()),
        lease_attempts=F("lease_attempts") + 1,
        **row.start_fields(),
    )
    if not won:
        return None
    unit = model.objects.get(pk=pk)
    lease = Lease(model, pk, token, unit, taken_over=row.lease_token)
    if row.lease_token:
        unit.discard_attempt(row.lease_token)
        unit.log_event(
            "taken-over",
            f"{unit.job_label()}: taken over from {row.lease_worker}, which went silent "
            f"(attempt {unit.lease_attempts})",
        )
    return lease


def work_on(
    model: type[Leased],
    pk: int,
    work: Callable[[Lease], Any],
    fail: Callable[[Lease, Exception], Any],
    when: Q | None = None,
) -> Lease | None:
    """What a task does with its unit: :func:`acquire` it, then :func:`hold` it while
    ``work(lease)`` runs. Returns the lease, or None when the unit was not this worker's."""
    lease = acquire(model, pk, when)
    if lease is None:
        return None
    return hold(lease, work, fail)


def hold(
    lease: Lease, work: Callable[[Lease], Any], fail: Callable[[Lease, Exception], Any]
) -> Lease:
    """Run ``work(lease)`` with the lease's heartbeat going. A LeaseLost (cancelled, or
    given to another worker) ends it quietly, its temporaries discarded. Any other error is
    logged (with its traceback, unless it is a DSSError a user should read) and given to
    ``fail(lease, error)``, in one transaction, so that the failure is recorded together
    with the release of the lease."""
    from dss.errors import DSSError

    with lease:
        try:
            work(lease)
        except LeaseLost:
            raise
        except Exception as exc:
            if not isinstance(exc, DSSError):
                log.exception("%s failed", lease.unit.job_label())
            with transaction.atomic():
                fail(lease, exc)
    return lease


def silent_message(row: Leased) -> str:
    since = (row.lease_expires_at or timezone.now()) - timedelta(seconds=lease_seconds())
    return (
        f"worker {row.lease_worker or '?'} went silent (no heartbeat since "
        f"{timezone.localtime(since):%Y-%m-%d %H:%M:%S})"
    )


def _give_up(row: Leased, now) -> bool:
    """Fail a unit whose every attempt went silent; False if another process got there first."""
    model = type(row)
    cleared = model.objects.filter(model.working(), pk=row.pk, lease_token=row.lease_token).update(
        lease_token="", lease_expires_at=None
    )
    if not cleared:
        return False
    message = f"{silent_message(row)}; gave up after {row.lease_attempts} attempt(s)"
    row.discard_attempt(row.lease_token)
    row.refresh_from_db()
    row.give_up(message)
    return True


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.resent or self.settled)


def queue_length() -> int | None:
    """Messages waiting in this portal's Celery queue; None if the broker cannot say."""
    from dss.celery import app

    try:
        with app.connection_for_read() as conn, conn.channel() as channel:
            declared = channel.queue_declare(queue=settings.CELERY_TASK_DEFAULT_QUEUE, passive=True)
            return int(declared.message_count)
    except Exception:
        log.debug("could not measure the queue", exc_info=True)
        return None


def sweep() -> SweepReport:
    """Hand units whose worker went silent to another worker (or fail them after the last
    attempt), and send again the tasks of units that wait while the queue is empty."""
    report = SweepReport()
    now = timezone.now()
    for model in leased_models():
        stale = model.objects.filter(model.working()).exclude(lease_token="")
        stale = stale.filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
        for row in stale:
            if row.lease_attempts >= settings.DSS_LEASE_ATTEMPTS:
                if _give_up(row, now):
                    report.failed.append(row.job_label())
                continue
            old, quiet = row.lease_token, silent_message(row)
            requeued = model.objects.filter(model.working(), pk=row.pk, lease_token=old).update(
                lease_token="", lease_expires_at=None, **row.requeue_fields()
            )
            if not requeued:
                continue
            row.discard_attempt(old)
            row.refresh_from_db()
            row.log_event(
                "requeued",
                f"{row.job_label()}: {quiet}; sent to another worker (attempt "
                f"{row.lease_attempts + 1} of {settings.DSS_LEASE_ATTEMPTS})",
            )
            send(row)
            report.requeued.append(row.job_label())
    for model in leased_models():
        report.settled.extend(model.settle())
    waiting_for = timedelta(seconds=float(settings.DSS_LEASE_SECONDS))
    sent_long_ago = Q(lease_sent_at__lt=now - waiting_for) | Q(lease_sent_at__isnull=True)
    forgotten = [
        model.objects.filter(model.waiting(), sent_long_ago, lease_token="")
        for model in leased_models()
    ]
    if any(qs.exists() for qs in forgotten) and not queue_length():
        # Nothing is in the queue, yet these wait: their messages were lost with a worker.
        for qs in forgotten:
            for row in qs:
                send(row)
                report.resent.append(row.job_label())
    return report
