"""Compute sites, the pilots submitted to them, and each site's status history."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.contenttypes.fields import GenericRelation
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property

from dss.errors import InvalidInput
from dss.models import JobEvent

from . import batch, pilot

SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Requirements a site may set: the pilot's own configuration keys that describe the node.
# Where to report, the token and the retry policy are DSS's business, not the site's.
REQUIREMENT_KEYS = (
    "min_cores",
    "min_memory_mb",
    "min_work_disk_gb",
    "min_tmp_disk_gb",
    "python_min",
    "credential_min_hours",
    "require_credential",
    "cvmfs_repos",
    "paths",
    "tools",
    "allowed_commands",
    "reach",
    "timeout_s",
)
# Requirements the portal turns into the pilot's own configuration when it sends a pilot:
# names of allow-listed commands (settings.DSS_PILOT_COMMANDS) become their argv lists, and
# storage element names become the host and port to connect to. A site never gives an argv.
PORTAL_REQUIREMENT_DEFAULTS: dict[str, Any] = {"allowed_commands": [], "reach": []}
DEFAULT_PORTS = {"root": 1094, "xroot": 1094, "https": 443, "davs": 443, "http": 80, "dav": 80}
# Submit parameters DSS sets itself for every pilot.
RESERVED_PARAMS = ("args",)


# Words the site pages use after /sites/.
RESERVED_SITE_NAMES = frozenset({"new"})


def check_site_name(name: str) -> str:
    if isinstance(name, str) and name.lower() in RESERVED_SITE_NAMES:
        raise InvalidInput(f"{name!r} is reserved for the site pages", where="name")
    if not isinstance(name, str) or not SITE_NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a valid site name (letters, digits, '_', '.', '-'; up to 64 "
            "characters, starting with a letter or digit)",
            where="name",
        )
    return name


def check_requirements(requirements: Any) -> dict[str, Any]:
    """The site's requirements, checked with the pilot's own rules; the bad key is ``where``."""
    if requirements in (None, ""):
        return {}
    if not isinstance(requirements, dict):
        raise InvalidInput("must be a JSON object of requirement: value", where="requirements")
    for key, value in requirements.items():
        if key not in REQUIREMENT_KEYS:
            raise InvalidInput(
                f"not a requirement (known: {', '.join(REQUIREMENT_KEYS)})", where=str(key)
            )
        if value is None:
            continue
        if key == "allowed_commands":
            check_allowed_commands(value)
            continue
        if key == "reach":
            for name in _names(value, "reach"):
                reach_endpoint(name)
            continue
        problem = pilot.CONFIG_RULES[key](value)
        if problem:
            raise InvalidInput(problem, where=key)
    return {k: v for k, v in requirements.items() if v is not None}


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput("must be a list of names", where=where)
    return value


def check_allowed_commands(names: Any) -> dict[str, list[str]]:
    """The allow-listed commands ``names`` asks for, as name -> argv from the settings.

    A site names checks; only the deployment (settings.DSS_PILOT_COMMANDS) says what runs.
    """
    allowed = settings.DSS_PILOT_COMMANDS
    chosen = {}
    for name in _names(names, "allowed_commands"):
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none: the deployment configured none"
            raise InvalidInput(
                f"{name!r} is not a command of this portal's allow-list (DSS_PILOT_COMMANDS; "
                f"known: {known})",
                where="allowed_commands",
            )
        chosen[name] = list(allowed[name])
    return chosen


def reach_endpoint(se_name: str) -> dict[str, Any]:
    """The host and port a pilot connects to in order to show it reaches storage element
    ``se_name``; InvalidInput for an unknown SE or one that is a local directory."""
    from dmu.models import StorageElement

    se = StorageElement.objects.filter(name=se_name).first()
    if se is None:
        raise InvalidInput(f"no storage element named {se_name!r}", where="reach")
    url = urlsplit(se.url)
    if url.scheme not in DEFAULT_PORTS or not url.hostname:
        raise InvalidInput(
            f"storage element {se_name} ({url.scheme}://) is not reached over the network",
            where="reach",
        )
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return {"name": se.name, "host": host, "port": url.port or DEFAULT_PORTS[url.scheme]}


def program_config(requirements: dict[str, Any]) -> dict[str, Any]:
    """A pilot's requirements (as stored on it) as the pilot program's own configuration."""
    config = {k: v for k, v in requirements.items() if k not in PORTAL_REQUIREMENT_DEFAULTS}
    config["commands"] = check_allowed_commands(requirements.get("allowed_commands") or [])
    config["reach"] = [reach_endpoint(name) for name in requirements.get("reach") or []]
    return config


def check_submit_params(batch_system: str, params: Any) -> dict[str, Any]:
    """The site's submit parameters as its batch system's adapter accepts them."""
    adapter = batch.get_adapter(batch_system)
    if params in (None, ""):
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput("must be a JSON object of parameter: value", where="submit_params")
    for key in RESERVED_PARAMS:
        if key in params:
            raise InvalidInput("set by DSS for every pilot; a site cannot change it", where=key)
    adapter.validate_params(params)
    return {k: v for k, v in params.items() if v not in (None, "", [], {})}


def adapter_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in batch.adapter_names()]


class SiteStatus(models.TextChoices):
    ONLINE = "online", "online"
    TEST = "test", "test"
    BROKER_OFF = "broker-off", "broker-off"
    OFFLINE = "offline", "offline"


# The longest pilot timeout or interval a site may set (a year): longer is a typo, and far
# longer would not fit the database column.
MAX_MINUTES = 366 * 24 * 60


class Site(models.Model):
    """A compute site: where its batch system is, how to submit to it, what a node must offer.

    Its status says whether production work (skims) may go there: only ``online`` sites
    take it. ``test`` and ``offline`` are set by an admin; periodic pilots move an online
    site to ``broker-off`` and back (see ``actions.apply_status_rules``).
    """

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    batch_system = models.CharField(max_length=32, choices=adapter_choices)
    submit_params = models.JSONField(
        default=dict,
        blank=True,
        help_text='batch options, e.g. {"partition": "debug", "time_limit": "00:30:00"}',
    )
    requirements = models.JSONField(
        default=dict,
        blank=True,
        help_text='what a worker node must offer, e.g. {"min_cores": 4, "cvmfs_repos": ["atlas.cern.ch"]}',
    )
    status = models.CharField(max_length=16, choices=SiteStatus.choices, default=SiteStatus.TEST)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    pilot_interval_minutes = models.PositiveIntegerField(
        "pilot every (minutes)",
        null=True,
        blank=True,
        help_text="submit a periodic pilot this often; empty: no periodic pilots",
    )
    pilot_timeout_minutes = models.PositiveIntegerField(
        "pilot timeout (minutes)",
        default=30,
        help_text="a pilot without a report after this long is lost",
    )
    last_scheduled_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    contacts = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="contact_for_sites",
        help_text="people who may read this site's pilot reports and logs (besides admins)",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # A site whose configuration is invalid is never stored, whichever path saves it.
        self.check_configuration()
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("pilotchecker:site", args=[self.name])

    @cached_property
    def can_take_skims(self) -> bool:
        """Whether the broker may send skim jobs here: the site is online and its latest
        pilot with an outcome passed. Whether its nodes reach the storage a skim needs is
        asked per skim, when the broker places its parts."""
        if self.status != SiteStatus.ONLINE:
            return False
        latest = (
            self.pilots.filter(state__in=(PilotState.REPORTED, PilotState.FAILED, PilotState.LOST))
            .order_by("-finished_at", "-id")
            .first()
        )
        return latest is not None and latest.outcome == Verdict.PASSED

    def _configuration_errors(self) -> list[tuple[str, InvalidInput]]:
        """Each problem with the settings as (model field, error naming the bad key)."""
        errors = []
        try:
            check_site_name(self.name)
        except InvalidInput as e:
            errors.append(("name", e))
        try:
            self.submit_params = check_submit_params(self.batch_system, self.submit_params)
        except InvalidInput as e:
            errors.append(("batch_system" if e.where == "batch_system" else "submit_params", e))
        try:
            self.requirements = check_requirements(self.requirements)
        except InvalidInput as e:
            errors.append(("requirements", e))
        if self.pilot_timeout_minutes is None or self.pilot_timeout_minutes < 1:
            errors.append(
                (
                    "pilot_timeout_minutes",
                    InvalidInput("must be at least 1 minute", where="pilot_timeout_minutes"),
                )
            )
        for name in ("pilot_timeout_minutes", "pilot_interval_minutes"):
            value = getattr(self, name)
            if value is not None and value > MAX_MINUTES:
                errors.append(
                    (name, InvalidInput(f"must be at most {MAX_MINUTES} (a year)", where=name))
                )
        if self.pilot_interval_minutes is not None and self.pilot_interval_minutes < 1:
            errors.append(
                (
                    "pilot_interval_minutes",
                    InvalidInput(
                        "must be at least 1 minute, or empty for no periodic pilots",
                        where="pilot_interval_minutes",
                    ),
                )
            )
        return errors

    def check_configuration(self) -> None:
        """Raise InvalidInput (``where`` = the bad key) unless every setting is usable;
        normalizes ``submit_params`` and ``requirements`` on the way."""
        errors = self._configuration_errors()
        if errors:
            raise errors[0][1]

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        for field, e in self._configuration_errors():
            errors.setdefault(field, []).append(str(e))
        if errors:
            raise ValidationError(errors)

    def pilot_config(self) -> dict[str, Any]:
        """The requirements merged over the pilot's defaults: what a pilot will check."""
        config = {
            k: pilot.DEFAULT_CONFIG[k]
            if k in pilot.DEFAULT_CONFIG
            else PORTAL_REQUIREMENT_DEFAULTS[k]
            for k in REQUIREMENT_KEYS
        }
        config.update(self.requirements)
        return config

    def may_read_pilot_output(self, user) -> bool:
        """Admins and the site's contacts read its pilots' reports and logs; others see only
        each pilot's state and verdict (a report holds what the node revealed)."""
        if user is None or not user.is_authenticated:
            return False
        if user.is_superuser or user.has_perm("pilotchecker.change_site"):
            return True
        return self.contacts.filter(pk=user.pk).exists()


class PilotState(models.TextChoices):
    SUBMITTED = "submitted", "submitted"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    REPORTED = "reported", "reported"
    FAILED = "failed", "failed to report"
    LOST = "lost", "lost"
    CANCELLED = "cancelled", "cancelled"


PILOT_FINAL_STATES = frozenset(
    {PilotState.REPORTED, PilotState.FAILED, PilotState.LOST, PilotState.CANCELLED}
)
PILOT_ACTIVE_STATES = (PilotState.SUBMITTED, PilotState.QUEUED, PilotState.RUNNING)
# The outcome of a pilot whose job ended without a report (its verdict would be misleading).
NO_REPORT = "no-report"


class Verdict(models.TextChoices):
    PASSED = "passed", "passed"
    WARNING = "warning", "warning"
    FAILED = "failed", "failed"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Pilot(models.Model):
    """One pilot job sent to a site, what its batch system says of it, and its report.

    States: ``submitted`` (accepted by DSS, being handed to the batch system), ``queued`` and
    ``running`` (as the batch system says), then one final state: ``reported`` (with a
    verdict), ``failed`` (the job ended, or could not be submitted, without a report),
    ``lost`` (no report within the site's timeout) or ``cancelled``. Events go to the same
    append-only log as every other DSS job (``dss.JobEvent``).
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="pilots")
    state = models.CharField(
        max_length=16, choices=PilotState.choices, default=PilotState.SUBMITTED, db_index=True
    )
    verdict = models.CharField(max_length=16, choices=Verdict.choices, blank=True)
    message = models.TextField(blank=True)
    periodic = models.BooleanField(
        default=False, help_text="sent by the site's schedule; only these change its status"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What was asked of the node, as the pilot was configured (the site may change later).
    requirements = models.JSONField(default=dict, blank=True)
    workdir = models.CharField(max_length=1000, blank=True)
    # The batch system's own view of the job.
    batch_job_id = models.CharField(max_length=100, blank=True, db_index=True)
    batch_state = models.CharField(max_length=16, blank=True)
    batch_raw_state = models.CharField(max_length=64, blank=True)
    batch_exit_code = models.IntegerField(null=True, blank=True)
    batch_reason = models.CharField(max_length=500, blank=True)
    batch_checked_at = models.DateTimeField(null=True, blank=True)
    batch_done = models.BooleanField(default=False)
    # The pilot's report as received (or recovered from its output file), and its logs.
    report = models.JSONField(null=True, blank=True)
    report_source = models.CharField(max_length=16, blank=True)
    stdout_tail = models.TextField(blank=True)
    stderr_tail = models.TextField(blank=True)
    # One-time report token: only its SHA-256 is kept.
    token_hash = models.CharField(max_length=64, blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    token_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    events = GenericRelation("dss.JobEvent")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["site", "-created_at"])]

    def __str__(self) -> str:
        return f"pilot #{self.pk} to {self.site_id and self.site.name}"

    def get_absolute_url(self) -> str:
        return reverse("pilotchecker:pilot", args=[self.pk])

    @property
    def is_final(self) -> bool:
        return self.state in PILOT_FINAL_STATES

    @property
    def is_settled(self) -> bool:
        """Final, and the batch system has nothing more to say (pages stop refreshing)."""
        return self.is_final and (self.batch_done or not self.batch_job_id)

    @property
    def outcome(self) -> str:
        """What the pilot says about the site: its verdict, ``no-report`` or ``lost``; '' while open."""
        if self.state == PilotState.REPORTED:
            return self.verdict
        if self.state == PilotState.FAILED:
            return NO_REPORT
        if self.state == PilotState.LOST:
            return PilotState.LOST
        return ""

    @property
    def sent_by(self) -> str:
        """A user name, "schedule" for a periodic pilot, or "command line"."""
        if self.owner_id:
            return self.owner.get_username()
        return "schedule" if self.periodic else "command line"

    @property
    def checks(self) -> list[dict]:
        return list((self.report or {}).get("checks") or [])

    @property
    def facts(self) -> dict:
        return dict((self.report or {}).get("facts") or {})

    @property
    def failing_checks(self) -> list[dict]:
        return [c for c in self.checks if c.get("status") != pilot.PASS]

    @property
    def fact_rows(self) -> list[tuple[str, str]]:
        """What the pilot found on its node, as (label, text) rows for a page."""
        f = self.facts
        if not f:
            return []
        host, os_, cpu = f.get("host") or {}, f.get("os") or {}, f.get("cpu") or {}
        mem, disk, py = f.get("memory") or {}, f.get("disk") or {}, f.get("python") or {}
        bsys, clock, portal = f.get("batch") or {}, f.get("clock") or {}, f.get("portal") or {}
        cred = f.get("credential") or {}

        def known(*parts) -> str:
            return " ".join(str(p) for p in parts if p not in (None, "")) or "unknown"

        def space(d: dict) -> str:
            if d.get("free_gb") is None:
                return "unknown"
            return f"{d['free_gb']} GB free of {d.get('total_gb')} GB in {d.get('path')}"

        rows = [
            ("Host", known(host.get("hostname"), f"(uid {host.get('uid')})")),
            ("Operating system", known(os_.get("pretty_name") or os_.get("system"))),
            ("Kernel", known(os_.get("kernel"))),
            ("CPU", known(cpu.get("model"))),
            (
                "Architecture",
                known(cpu.get("arch"), f"({cpu['arch_level']})" if cpu.get("arch_level") else ""),
            ),
            (
                "Cores",
                f"{known(cpu.get('usable_cores'))} usable of {known(cpu.get('logical_cores'))}"
                f" on {known(cpu.get('sockets'))} socket(s)",
            ),
            (
                "Memory",
                f"{known(mem.get('job_limit_mb'))} MB for the job "
                f"({known(mem.get('total_mb'))} MB on the node, "
                f"{known(mem.get('available_mb'))} MB available)",
            ),
            ("Work directory", space(disk.get("work") or {})),
            ("Temporary space", space(disk.get("tmp") or {})),
            ("Python", known(py.get("implementation"), py.get("version"), py.get("executable"))),
            (
                "Batch system",
                known(bsys.get("system"), f"job {bsys['job_id']}" if bsys.get("job_id") else "")
                + (
                    f"; granted {bsys['allocated_cores']} core(s)"
                    if bsys.get("allocated_cores")
                    else ""
                )
                + (
                    f", {bsys['allocated_memory_mb']} MB" if bsys.get("allocated_memory_mb") else ""
                ),
            ),
            (
                "CVMFS mounted",
                ", ".join((f.get("cvmfs") or {}).get("mounted") or []) or "none",
            ),
            (
                "Credential",
                "; ".join(
                    f"{kind}: {c.get('remaining_hours')} h left"
                    for kind, c in (("proxy", cred.get("proxy")), ("token", cred.get("token")))
                    if c
                )
                or "none found",
            ),
            (
                "Portal",
                f"HTTP {portal['http_status']} in {portal.get('rtt_s')} s"
                if portal.get("http_status")
                else f"unreachable: {portal.get('error')}",
            ),
            (
                "Clock offset",
                f"{clock['offset_s']} s from the portal"
                if clock.get("offset_s") is not None
                else "unknown",
            ),
        ]
        return rows

    @property
    def batch_variables(self) -> dict[str, str]:
        return dict((self.facts.get("batch") or {}).get("variables") or {})

    @property
    def missing_facts(self) -> dict[str, str]:
        return dict(self.facts.get("missing") or {})

    @property
    def duration(self):
        if self.submitted_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.submitted_at

    def token_matches(self, token: str) -> bool:
        return bool(self.token_hash) and hmac.compare_digest(self.token_hash, hash_token(token))

    def log(self, kind: str, message: str = "", **data) -> None:
        """Append an event to this pilot's log (the same log as every DSS job)."""
        JobEvent.objects.create(job=self, kind=kind, message=message[:4000], data=data or {})


class SiteStatusChange(models.Model):
    """One change of a site's status: from what, to what, why, and by whom (or the schedule)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=16, choices=SiteStatus.choices, blank=True)
    new_status = models.CharField(max_length=16, choices=SiteStatus.choices)
    reason = models.CharField(max_length=500)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    by = models.CharField(max_length=150, help_text='a user name, or "schedule"')
    pilot = models.ForeignKey(
        Pilot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.site_id and self.site.name}: {self.old_status or '–'} → {self.new_status}"
