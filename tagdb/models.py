"""TAG schemas, TAG collections (one per dataset and schema), their builds, saved queries."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from dmu.models import Dataset, File
from dss.jobs import FINAL_STATES, FileWorkState, Job, JobState
from dss.leases import Leased


class TagSchema(models.Model):
    """A versioned TAG schema; ``definition`` is its YAML text, as loaded by tagdb.schema."""

    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    tree = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    definition = models.TextField()
    automatic = models.BooleanField(default=False, help_text="made from the tree's branches")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="tagschema_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def load(self):
        """The parsed schema (tagdb.schema.Schema)."""
        from .schema import load_schema

        return load_schema(self.definition)


class CollectionState(models.TextChoices):
    EMPTY = "empty", "not built"
    BUILDING = "building", "building"
    READY = "ready", "ready"
    FAILED = "failed", "failed"


class TagCollection(models.Model):
    """The TAGs of one dataset under one schema: one row per event in the TAG DB."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="tag_collections")
    schema = models.ForeignKey(TagSchema, on_delete=models.PROTECT, related_name="collections")
    state = models.CharField(
        max_length=16, choices=CollectionState.choices, default=CollectionState.EMPTY
    )
    n_events = models.BigIntegerField(default=0)
    n_files = models.IntegerField(default=0)
    built_at = models.DateTimeField(null=True, blank=True)
    # The build whose TAGs are published: its files (GUID and adler32) are what they cover.
    published_build = models.ForeignKey(
        "TagBuild", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["dataset__name", "schema__name"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "schema"], name="tagcollection_unique")
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} / {self.schema}"

    def get_absolute_url(self) -> str:
        return reverse("tagdb:collection", args=[self.pk])

    @property
    def key(self) -> str:
        """The collection's name in the TAG DB (its table is ``tag_<key>``)."""
        return f"c{self.pk}"


class TagBuild(Job, Leased):
    """Building (or rebuilding) a collection: one unit of work per file
    (:class:`TagBuildFile`), then a publishing step, which is a unit on this row."""

    collection = models.ForeignKey(TagCollection, on_delete=models.CASCADE, related_name="builds")
    n_events = models.BigIntegerField(default=0, help_text="events tagged so far")
    # When the publishing step last started (loading into the TAG DB).
    publish_started_at = models.DateTimeField(null=True, blank=True)

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"build of {self.collection}"

    def get_absolute_url(self) -> str:
        return reverse("tagdb:build", args=[self.pk])

    @property
    def phase(self) -> str:
        """What the build is doing, in the users' words."""
        if self.is_final:
            return self.get_state_display()
        if self.publish_started_at:
            return "loading into the TAG DB"
        if self.state == "running":
            return "tagging files"
        return "waiting for a worker"

    # -- the publishing step as a unit of work (dss.leases)

    lease_task = "tagdb.tasks.publish_build"

    @classmethod
    def waiting(cls) -> Q:
        """Every file is tagged: the build waits to be loaded into the TAG DB."""
        files = TagBuildFile.objects.filter(build=OuterRef("pk"))
        pending = files.exclude(state=FileWorkState.SUCCEEDED)
        return Q(state=JobState.RUNNING) & Q(Exists(files)) & ~Q(Exists(pending))

    @classmethod
    def working(cls) -> Q:
        return Q(state=JobState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        return {"publish_started_at": timezone.now()}

    def give_up(self, message: str) -> None:
        from .actions import do_fail_build

        do_fail_build(self, message)

    def discard_attempt(self, token: str) -> None:
        from .actions import discard_publish_attempt

        discard_publish_attempt(self, token)

    def job_label(self) -> str:
        return f"TAG build #{self.pk} of {self.collection} (publishing)"

    def log_event(self, kind: str, message: str) -> None:
        self.log(kind, message)


class TagBuildFile(Leased):
    """Tagging one file of a build: its TAGs computed and left in the build's scratch
    folder. Records which file (GUID, adler32) the build read, so that a published
    collection says exactly what it covers."""

    build = models.ForeignKey(TagBuild, on_delete=models.CASCADE, related_name="files")
    # Kept (as lfn, guid, adler32) when the file later leaves the dataset: the build's
    # record of what it covered must outlive it.
    file = models.ForeignKey(File, null=True, on_delete=models.SET_NULL, related_name="+")
    lfn = models.CharField(max_length=256)
    guid = models.CharField(max_length=36)
    adler32 = models.CharField(max_length=8)
    state = models.CharField(
        max_length=16, choices=FileWorkState.choices, default=FileWorkState.QUEUED
    )
    n_events = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    lease_task = "tagdb.tasks.build_file"

    class Meta:
        ordering = ["build", "lfn"]
        constraints = [
            models.UniqueConstraint(fields=["build", "file"], name="tagbuildfile_unique_file")
        ]

    def __str__(self) -> str:
        return f"{self.lfn} in TAG build #{self.build_id}"

    @classmethod
    def waiting(cls) -> Q:
        return Q(state=FileWorkState.QUEUED, build__state__in=[JobState.QUEUED, JobState.RUNNING])

    @classmethod
    def working(cls) -> Q:
        return Q(state=FileWorkState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        return {"state": FileWorkState.RUNNING, "started_at": timezone.now(), "message": ""}

    def requeue_fields(self) -> dict:
        return {"state": FileWorkState.QUEUED}

    def give_up(self, message: str) -> None:
        from .actions import do_fail_build, file_failure_message

        TagBuildFile.objects.filter(pk=self.pk).update(
            state=FileWorkState.FAILED, message=message, finished_at=timezone.now()
        )
        do_fail_build(self.build, file_failure_message(self.lfn, message))

    def discard_attempt(self, token: str) -> None:
        from .actions import partial_tags_path

        partial_tags_path(self.build, self.guid, token).unlink(missing_ok=True)

    def job_label(self) -> str:
        return f"{self.lfn} of TAG build #{self.build_id}"

    @classmethod
    def settle(cls) -> list[str]:
        from .actions import do_fail_build, file_failure_message

        ended = []
        failed = TagBuildFile.objects.filter(build=OuterRef("pk"), state=FileWorkState.FAILED)
        for build in TagBuild.objects.filter(
            Exists(failed), state__in=[JobState.QUEUED, JobState.RUNNING]
        ):
            unit = build.files.filter(state=FileWorkState.FAILED).select_related("file").first()
            if do_fail_build(build, file_failure_message(unit.lfn, unit.message)):
                ended.append(str(build))
        return ended

    def log_event(self, kind: str, message: str) -> None:
        if self.build.state not in FINAL_STATES:
            self.build.log(kind, message)


class SavedQuery(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_queries"
    )
    collection = models.ForeignKey(
        TagCollection, on_delete=models.CASCADE, related_name="saved_queries"
    )
    name = models.CharField(max_length=100)
    selection = models.TextField(max_length=4000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "collection", "name"], name="savedquery_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name
