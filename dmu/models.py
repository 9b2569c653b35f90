"""The site's dataset catalog: storage elements, datasets, files and their replicas."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from dss import generations
from dss.errors import DSSError, InvalidInput
from dss.jobs import FileWorkState, Job, JobState
from dss.leases import Leased

from .names import check_dataset_name, check_se_name, scope_of

# The generation (dss.generations) of what the dataset lists show: datasets and their files.
CATALOG = "catalog"


class CatalogQuerySet(models.QuerySet):
    """Datasets' and files' rows: a change in bulk (update, bulk_create, bulk_update, a fast
    delete) replaces the catalog's generation as a change row by row does (the signals
    below), so that no cached dataset list outlives what it shows."""

    def update(self, **kwargs):
        n = super().update(**kwargs)
        if n:
            generations.bump(CATALOG)
        return n

    def bulk_create(self, objs, *args, **kwargs):
        made = super().bulk_create(objs, *args, **kwargs)
        if made:
            generations.bump(CATALOG)
        return made

    def bulk_update(self, objs, *args, **kwargs):
        n = super().bulk_update(objs, *args, **kwargs)
        if n:
            generations.bump(CATALOG)
        return n

    def _raw_delete(self, using):
        n = super()._raw_delete(using)
        if n:
            generations.bump(CATALOG)
        return n


def validate_dataset_name(value: str) -> None:
    try:
        check_dataset_name(value)
    except InvalidInput as e:
        raise ValidationError(e.message) from None


def validate_se_name(value: str) -> None:
    try:
        check_se_name(value)
    except InvalidInput as e:
        raise ValidationError(e.message) from None


class StorageElement(models.Model):
    """A place files live, reached by URL: ``file:///data/se1`` or ``root://host:1094//data``."""

    name = models.CharField(max_length=64, unique=True, validators=[validate_se_name])
    url = models.CharField(
        max_length=500, help_text="file:///path, root://host:port//path or https://…"
    )
    description = models.CharField(max_length=200, blank=True)
    user_writable = models.BooleanField(
        "users may write here",
        default=False,
        help_text="physicists may write datasets of their own scope (user.<name>.*) here; "
        "only admins write to other storage elements",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dmu:storage_element", args=[self.name])

    def endpoint(self):
        """The storage element's endpoint, refused (InvalidInput) if the site's URL policy
        does not allow its URL (checked at every use: a name may resolve elsewhere now)."""
        from .storage import StorageEndpoint

        return StorageEndpoint(self.url, policy=storage_policy())


def storage_policy():
    """The URLs this portal may reach for storage, from its settings: local roots
    (``DSS_STORAGE_ROOT`` and ``DSS_STORAGE_ROOTS``), hosts (``DSS_STORAGE_HOSTS``) and
    whether plain ``http://`` is allowed (``DSS_STORAGE_ALLOW_HTTP``)."""
    from .storage import UrlPolicy

    return UrlPolicy(
        file_roots=(str(settings.DSS_STORAGE_ROOT), *map(str, settings.DSS_STORAGE_ROOTS)),
        hosts=tuple(settings.DSS_STORAGE_HOSTS),
        allow_http=settings.DSS_STORAGE_ALLOW_HTTP,
    )


class Dataset(models.Model):
    name = models.CharField(max_length=256, unique=True, validators=[validate_dataset_name])
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = CatalogQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dmu:dataset", args=[self.name])

    @property
    def scope(self) -> str:
        return scope_of(self.name)


class File(models.Model):
    """One event file: its logical name, the ROOT file's own UUID as GUID, size and checksum."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="files")
    lfn = models.CharField("logical name", max_length=256)
    guid = models.UUIDField(db_index=True)
    bytes = models.BigIntegerField()
    adler32 = models.CharField(max_length=8)
    events = models.BigIntegerField()
    tree = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    objects = CatalogQuerySet.as_manager()

    class Meta:
        ordering = ["dataset", "lfn"]
        constraints = [models.UniqueConstraint(fields=["dataset", "lfn"], name="file_unique_lfn")]
        # The dataset lists' totals (files, events, bytes per dataset and over the catalog)
        # read this index alone, never the wider table.
        indexes = [models.Index(fields=["dataset", "events", "bytes"], name="file_dataset_totals")]

    def __str__(self) -> str:
        return self.lfn


@receiver(post_save, sender=Dataset, dispatch_uid="dmu.catalog_saved.dataset")
@receiver(post_save, sender=File, dispatch_uid="dmu.catalog_saved.file")
@receiver(post_delete, sender=Dataset, dispatch_uid="dmu.catalog_deleted.dataset")
@receiver(post_delete, sender=File, dispatch_uid="dmu.catalog_deleted.file")
def catalog_changed(sender, **kwargs) -> None:
    """A dataset or file was saved or deleted: the dataset lists change."""
    generations.bump(CATALOG)


class ReplicaState(models.TextChoices):
    AVAILABLE = "available", "available"
    COPYING = "copying", "copying"
    BAD = "bad", "bad"  # its bytes differ from the catalog's
    LOST = "lost", "lost"  # it is not on its storage element


class Replica(models.Model):
    """A verified copy of a File on a StorageElement, at a path relative to the SE's root."""

    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="replicas")
    storage_element = models.ForeignKey(
        StorageElement, on_delete=models.PROTECT, related_name="replicas"
    )
    path = models.CharField(max_length=1000)
    state = models.CharField(
        max_length=16, choices=ReplicaState.choices, default=ReplicaState.AVAILABLE
    )
    created_at = models.DateTimeField(default=timezone.now)
    # What the storage element said about the file when its bytes were last found to match
    # the catalog (by a full adler32 or the server's own checksum): a reader may trust the
    # bytes unchanged while size and modification time are still these (see
    # dmu.actions.check_replica_intact). None: not recorded (replicas older than this).
    verified_bytes = models.BigIntegerField(null=True, blank=True)
    verified_mtime_ns = models.BigIntegerField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["file", "storage_element"]
        constraints = [
            models.UniqueConstraint(fields=["file", "storage_element"], name="replica_unique_se")
        ]

    def __str__(self) -> str:
        return f"{self.file.lfn}@{self.storage_element.name}"

    @property
    def url(self) -> str:
        return self.storage_element.url.rstrip("/") + "/" + self.path


class RegistrationJob(Job, Leased):
    """Registering files found on a storage element as a dataset, run by a Celery worker
    as one unit of work (dss.leases)."""

    dataset_name = models.CharField(max_length=256, validators=[validate_dataset_name])
    storage_element = models.ForeignKey(StorageElement, on_delete=models.PROTECT, related_name="+")
    paths = models.JSONField(default=list)
    tree = models.CharField(max_length=200, blank=True)
    files_added = models.IntegerField(default=0)

    lease_task = "dmu.tasks.register_dataset"

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"registration of {self.dataset_name}"

    @classmethod
    def waiting(cls) -> Q:
        return Q(state=JobState.QUEUED)

    @classmethod
    def working(cls) -> Q:
        return Q(state=JobState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        return {"state": JobState.RUNNING, "started_at": timezone.now()}

    def requeue_fields(self) -> dict:
        return {"state": JobState.QUEUED}

    def give_up(self, message: str) -> None:
        self.finish(JobState.FAILED, message, lease_token="", lease_expires_at=None)

    def job_label(self) -> str:
        return f"registration #{self.pk} of {self.dataset_name}"

    def log_event(self, kind: str, message: str) -> None:
        self.log(kind, message)


class Transfer(Job):
    """Copying files of a dataset to another storage element: one TransferFile per file.

    Progress counts bytes: ``progress_total`` is the size of every file, ``progress_done``
    grows as files end verified (or are found already there)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="transfers")
    destination = models.ForeignKey(
        StorageElement, on_delete=models.PROTECT, related_name="incoming_transfers"
    )
    source = models.ForeignKey(
        StorageElement,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="outgoing_transfers",
        help_text="copy only from replicas here; empty: from any available replica",
    )

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"transfer #{self.pk}: {self.dataset.name} → {self.destination.name}"

    def get_absolute_url(self) -> str:
        return reverse("dmu:transfer", args=[self.pk])

    @property
    def mean_rate_mb_s(self) -> float | None:
        """MB/s of the bytes actually copied over the run time; needs the ``bytes_copied``
        annotation of ``actions.transfers_with_totals()``."""
        copied = getattr(self, "bytes_copied", None)
        duration = self.duration
        if not copied or duration is None or duration.total_seconds() <= 0:
            return None
        return copied / 1e6 / duration.total_seconds()


TransferFileState = FileWorkState


class TransferFile(Leased):
    """The copy of one file in a Transfer: where from and to, how far, how fast, how it ended.
    One unit of work (dss.leases)."""

    transfer = models.ForeignKey(Transfer, on_delete=models.CASCADE, related_name="files")
    file = models.ForeignKey(File, on_delete=models.PROTECT, related_name="transfers")
    source = models.ForeignKey(
        StorageElement, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    path = models.CharField(max_length=1000, help_text="on the destination, relative to its root")
    state = models.CharField(
        max_length=16, choices=TransferFileState.choices, default=TransferFileState.QUEUED
    )
    bytes_done = models.BigIntegerField(default=0)
    rate_mb_s = models.FloatField(default=0.0)
    attempts = models.PositiveIntegerField(default=0)
    already_there = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    lease_task = "dmu.tasks.transfer_file"

    class Meta:
        ordering = ["transfer", "file__lfn"]
        indexes = [models.Index(fields=["state", "transfer"])]

    def __str__(self) -> str:
        return f"{self.file.lfn} in transfer #{self.transfer_id}"

    @property
    def is_active(self) -> bool:
        return self.state in (TransferFileState.QUEUED, TransferFileState.RUNNING)

    @property
    def percent(self) -> int:
        total = self.file.bytes
        if total <= 0:
            return 100 if self.state == TransferFileState.SUCCEEDED else 0
        return min(100, int(100 * self.bytes_done / total))

    @property
    def worker(self) -> str:
        """The host (and process) that copies, or last copied, the file."""
        return self.lease_worker

    @classmethod
    def waiting(cls) -> Q:
        return Q(
            state=TransferFileState.QUEUED,
            transfer__state__in=[JobState.QUEUED, JobState.RUNNING],
        )

    @classmethod
    def working(cls) -> Q:
        return Q(state=TransferFileState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        return {
            "state": TransferFileState.RUNNING,
            "started_at": timezone.now(),
            "bytes_done": 0,
            "rate_mb_s": 0.0,
            "attempts": 0,
            "error": "",
            "error_code": "",
        }

    def requeue_fields(self) -> dict:
        return {"state": TransferFileState.QUEUED, "bytes_done": 0, "rate_mb_s": 0.0}

    def give_up(self, message: str) -> None:
        from .actions import do_give_up_transfer_file

        do_give_up_transfer_file(self, message)

    def discard_attempt(self, token: str) -> None:
        from .storage import temp_name

        try:
            self.transfer.destination.endpoint().delete(
                temp_name(self.path, token), missing_ok=True
            )
        except DSSError:
            pass  # an unreachable storage element: its temporary stays for check_catalog

    def job_label(self) -> str:
        return f"{self.file.lfn} of transfer #{self.transfer_id}"

    def log_event(self, kind: str, message: str) -> None:
        if not self.transfer.is_final:
            self.transfer.log(kind, message, file=self.file.lfn)


class RucioState(models.TextChoices):
    PENDING = "pending", "pending"
    REGISTERED = "registered", "registered"
    FAILED = "failed", "failed"


class RucioRegistration(models.Model):
    """Whether a dataset is registered in the experiment's Rucio, and the retries to get there.

    One row per dataset, made when the dataset is queued for registration. ``pending`` waits
    for (another) attempt; ``failed`` is final until someone asks again."""

    dataset = models.OneToOneField(
        Dataset, on_delete=models.CASCADE, related_name="rucio_registration"
    )
    state = models.CharField(max_length=16, choices=RucioState.choices, default=RucioState.PENDING)
    scope = models.CharField(max_length=30, blank=True)
    rse = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    files_registered = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.dataset.name} in Rucio: {self.state}"

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.dataset.name}" if self.scope else ""
