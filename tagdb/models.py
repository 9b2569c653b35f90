"""TAG schemas, TAG collections (one per dataset and schema), their builds, saved queries."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from dmu.models import Dataset
from dss.jobs import Job


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


class TagBuild(Job):
    """Building (or rebuilding) a collection: one Celery task per file, then a publish step."""

    collection = models.ForeignKey(TagCollection, on_delete=models.CASCADE, related_name="builds")
    # The dataset's files when the build started (File pks); progress counts them.
    file_ids = models.JSONField(default=list, blank=True)
    n_events = models.BigIntegerField(default=0, help_text="events tagged so far")
    # Set by the one task that wins the right to load and publish the collection.
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
