"""The conditions database (the HSF reference model, as nopayloaddb serves it): payload
types, global tags, one payload list per type attached to a global tag, and payload IOVs.

An IOV (interval of validity) starts at (major, minor) = (run, lumiblock or time),
inclusive, and ends at (major_end, minor_end), exclusive, or never (both ends NULL). IOVs
of one payload list never overlap, so the IOV valid at a point is the one of the list that
starts last at or before the point, if it has not ended: one index probe per list on
(payload_list, major_iov, minor_iov).
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}\Z")
NAME_RULE = "1 to 80 letters, digits, '_', '.' or '-', starting with a letter or digit"


def validate_name(value: str) -> None:
    if not NAME_RE.match(value or ""):
        raise ValidationError(f"a name is {NAME_RULE}")


class PayloadType(models.Model):
    """A kind of conditions data: ``beamspot``, ``lumi``, ``dq``, a detector's calibration."""

    name = models.CharField(max_length=80, unique=True, validators=[validate_name])
    description = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


GLOBAL_TAG_STATUSES = [("unlocked", "unlocked"), ("locked", "locked")]


class GlobalTag(models.Model):
    """A named, versioned set of payload lists, one per payload type. A locked global tag
    takes no change that alters an answer it gave: only IOVs past what it holds."""

    UNLOCKED = "unlocked"
    LOCKED = "locked"
    STATUSES = GLOBAL_TAG_STATUSES

    name = models.CharField(max_length=80, unique=True, validators=[validate_name])
    author = models.CharField(max_length=80, blank=True)
    description = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=UNLOCKED)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_locked(self) -> bool:
        return self.status == self.LOCKED


class PayloadList(models.Model):
    """The IOVs of one payload type, attached to at most one global tag; a global tag has
    at most one list per type. Named ``<type>_<id>`` as nopayloaddb names them."""

    name = models.CharField(max_length=255, unique=True)
    payload_type = models.ForeignKey(PayloadType, on_delete=models.PROTECT, related_name="lists")
    global_tag = models.ForeignKey(
        GlobalTag, on_delete=models.CASCADE, null=True, blank=True, related_name="payload_lists"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["global_tag", "payload_type"],
                condition=Q(global_tag__isnull=False),
                name="one_payload_list_per_type_and_global_tag",
            )
        ]

    def __str__(self) -> str:
        return self.name


class PayloadIOV(models.Model):
    """One payload file (URL, checksum, size) valid from (major, minor) inclusive to
    (major_end, minor_end) exclusive, or for ever when the end is NULL."""

    payload_list = models.ForeignKey(
        PayloadList, on_delete=models.CASCADE, null=True, blank=True, related_name="iovs"
    )
    payload_url = models.CharField(max_length=500)
    checksum = models.CharField(max_length=255)
    size = models.BigIntegerField(null=True, blank=True)
    major_iov = models.BigIntegerField()
    minor_iov = models.BigIntegerField()
    major_iov_end = models.BigIntegerField(null=True, blank=True)
    minor_iov_end = models.BigIntegerField(null=True, blank=True)
    inserted = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["major_iov", "minor_iov"]
        constraints = [
            # also the index of the lookup: list = ? AND (major, minor) <= (?, ?) ORDER BY
            # major DESC, minor DESC LIMIT 1
            models.UniqueConstraint(
                fields=["payload_list", "major_iov", "minor_iov"], name="one_iov_start_per_list"
            ),
            models.CheckConstraint(
                condition=Q(major_iov_end__isnull=True, minor_iov_end__isnull=True)
                | Q(major_iov_end__isnull=False, minor_iov_end__isnull=False),
                name="iov_end_both_or_neither",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payload_url} [{self.start}, {self.end or 'open'})"

    @property
    def start(self) -> tuple[int, int]:
        return (self.major_iov, self.minor_iov)

    @property
    def end(self) -> tuple[int, int] | None:
        if self.major_iov_end is None:
            return None
        return (self.major_iov_end, self.minor_iov_end)
