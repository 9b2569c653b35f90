"""The kernel's tables: the append-only log of every job of every app, API tokens, and the
generations of cached data."""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone


class JobEvent(models.Model):
    """One line of a job's append-only log: started, a file done, a retry, the outcome."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    job = GenericForeignKey("content_type", "object_id")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=32)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["content_type", "object_id", "at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.message}"


class ApiToken(models.Model):
    """One of a user's API tokens, for the ``dss`` and ``dmu`` command lines.

    A user may hold several, each with a name and an expiry. Only the SHA-256 of the key is
    kept (the key is shown once, when it is made); ``prefix`` is its first characters, so
    that its owner can tell tokens apart. A revoked or rotated token keeps its row, with
    when and why it stopped, so the account page can say so.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=200, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user_id and self.user}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired


class Generation(models.Model):
    """The generation of some data that pages cache (the dataset catalog, …): a random token
    replaced after every transaction that changed that data (see ``dss.generations``)."""

    name = models.CharField(max_length=64, primary_key=True)
    token = models.CharField(max_length=32)

    def __str__(self) -> str:
        return f"{self.name} at {self.token}"
