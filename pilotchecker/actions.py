"""PilotChecker operations: sites, pilot submission, reports, polling, timeouts, site status.

A pilot's life: ``do_submit_pilots`` creates the rows and queues one task per pilot; the task
calls ``do_send_pilot``, which writes the pilot and its configuration (with a one-time
token) to the pilot's work directory and submits it through the site's batch adapter. The
pilot posts its report (``check_receive_report``); ``do_poll_pilots`` follows the batch
system and recovers a report from the job's output when the post never arrived;
``do_mark_lost`` gives up on pilots past the site's timeout. Every outcome of a periodic
pilot goes through ``apply_status_rules``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.urls import reverse
from django.utils import timezone

from dss.errors import Conflict, Forbidden, InvalidInput, NotFound
from dss.parsers import refused_text

from . import batch, pilot
from .models import (
    NO_REPORT,
    PILOT_ACTIVE_STATES,
    Pilot,
    PilotState,
    Site,
    SiteStatus,
    SiteStatusChange,
    Verdict,
    check_site_name,
    hash_token,
    program_config,
)

log = logging.getLogger(__name__)
# A row a batch system runs: a pilot or a skim job (it has a site and a batch_job_id).
J = TypeVar("J")

MAX_PILOTS_PER_SUBMIT = 50
GOOD_IN_A_ROW = 3
STRIP_LENGTH = 20
TAIL_BYTES = 32 * 1024
SCHEDULE_SLACK = timedelta(seconds=10)
OUTCOME_STATES = (PilotState.REPORTED, PilotState.FAILED, PilotState.LOST)
# Outcomes that take an online site out of production, and how the history words them.
BAD_OUTCOMES = {
    Verdict.FAILED: "failed its checks",
    NO_REPORT: "ended without a report",
    PilotState.LOST: "was lost",
}
SITE_FIELDS = (
    "description",
    "batch_system",
    "submit_params",
    "requirements",
    "pilot_interval_minutes",
    "pilot_timeout_minutes",
)


class ReportRefused(Forbidden):
    """A pilot report whose token is wrong, expired or already used (HTTP 403)."""

    code = "report_refused"
    exit_code = 9


# ---------------------------------------------------------------- sites


def get_site(name: str) -> Site:
    check_site_name(name)
    try:
        return Site.objects.get(name=name)
    except Site.DoesNotExist:
        raise NotFound(f"no site named {name!r}", where="site") from None


def get_pilot(pk: int) -> Pilot:
    try:
        return Pilot.objects.select_related("site", "owner").get(pk=pk)
    except (Pilot.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"no pilot #{pk}", where="pilot") from None


def _who(user) -> str:
    """Who acted: a user name, or "command line" for an admin command run without one."""
    return user.get_username() if user is not None else "command line"


def _record_status(
    site: Site, status: str, reason: str, *, user=None, by: str | None = None, pilot=None
) -> SiteStatusChange:
    """Set ``site.status`` (the caller holds the row) and append the change to its history."""
    now = timezone.now()
    change = SiteStatusChange.objects.create(
        site=site,
        old_status=site.status,
        new_status=status,
        reason=reason[:500],
        changed_by=user,
        by=by or _who(user),
        pilot=pilot,
        at=now,
    )
    Site.objects.filter(pk=site.pk).update(
        status=status, status_reason=reason[:500], status_changed_at=now
    )
    site.status, site.status_reason, site.status_changed_at = status, reason[:500], now
    return change


def do_add_site(
    name: str,
    batch_system: str,
    *,
    submit_params: dict | None = None,
    requirements: dict | None = None,
    description: str = "",
    pilot_interval_minutes: int | None = None,
    pilot_timeout_minutes: int = 30,
    status: str = SiteStatus.TEST,
    contacts: list[str] | None = None,
    user=None,
) -> Site:
    """Register a compute site; refuses (naming the field) a configuration a pilot cannot use.

    A new site starts in ``test`` unless told otherwise; the first entry of its history says
    who added it. ``contacts`` are user names who may read the site's pilot reports.
    """
    contact_users = users_named(contacts or [])
    if status not in SiteStatus.values:
        raise InvalidInput(
            f"{status!r} is not a site status ({', '.join(SiteStatus.values)})", where="status"
        )
    site = Site(
        name=name,
        batch_system=batch_system,
        submit_params=submit_params or {},
        requirements=requirements or {},
        description=description,
        pilot_interval_minutes=pilot_interval_minutes,
        pilot_timeout_minutes=pilot_timeout_minutes,
        status=status,
        status_reason="site added",
        created_by=user,
    )
    site.check_configuration()
    with transaction.atomic():
        if Site.objects.filter(name=name).exists():
            raise Conflict(f"a site named {name!r} already exists", where="name")
        site.save()
        site.contacts.set(contact_users)
        SiteStatusChange.objects.create(
            site=site,
            new_status=status,
            reason="site added",
            changed_by=user,
            by=_who(user),
        )
    return site


def users_named(names: Any) -> list:
    """The users called ``names`` (a site's contacts); InvalidInput names one that is unknown."""
    from django.contrib.auth import get_user_model

    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise InvalidInput("must be a list of user names", where="contacts")
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    User = get_user_model()
    found = {u.get_username(): u for u in User.objects.filter(**{"username__in": wanted})}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise InvalidInput(f"no user named {missing[0]!r}", where="contacts")
    return [found[n] for n in wanted]


def check_update_site(site: Site, *, user=None, **changes: Any) -> Site:
    """Change a site's settings; nothing is saved unless the new configuration is valid."""
    contacts = changes.pop("contacts", None)
    contact_users = users_named(contacts) if contacts is not None else None
    unknown = sorted(set(changes) - set(SITE_FIELDS))
    if unknown:
        raise InvalidInput(
            f"cannot be changed (changeable: {', '.join(SITE_FIELDS)})", where=unknown[0]
        )
    for field, value in changes.items():
        setattr(site, field, value)
    try:
        site.check_configuration()
    except InvalidInput:
        site.refresh_from_db()
        raise
    with transaction.atomic():
        if changes:
            site.save(update_fields=list(changes))
        if contact_users is not None:
            site.contacts.set(contact_users)
    return site


def do_set_site_status(site: Site, status: str, reason: str, *, user=None) -> SiteStatusChange:
    """An admin sets the status by hand; the reason is required and kept in the history."""
    if status not in SiteStatus.values:
        raise InvalidInput(
            f"{status!r} is not a site status ({', '.join(SiteStatus.values)})", where="status"
        )
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("say why the status changes; the reason is kept", where="reason")
    with transaction.atomic():
        site = Site.objects.select_for_update().get(pk=site.pk)
        return _record_status(site, status, reason, user=user)


def do_ensure_demo_site() -> Site:
    """The demo portal's site: pilots run as local processes on the portal's own machine."""
    site = Site.objects.filter(name="LOCAL").first()
    if site is not None:
        return site
    site = do_add_site(
        "LOCAL",
        "local",
        description="Local processes on the portal's machine",
        submit_params={"time_limit": 10},
        requirements={"min_work_disk_gb": 1, "paths": ["/tmp"], "tools": ["python3", "uname"]},
        pilot_timeout_minutes=15,
        status=SiteStatus.ONLINE,
    )
    return site


def do_broker_off(site: Site, reason: str, *, by: str) -> SiteStatusChange | None:
    """Take an online site out of production for ``reason``, as a failed periodic pilot
    does (e.g. its skim jobs fail); the history records it. None when it was not online.
    Periodic pilots bring it back online as usual (``apply_status_rules``)."""
    with transaction.atomic():
        locked = Site.objects.select_for_update().get(pk=site.pk)
        if locked.status != SiteStatus.ONLINE:
            return None
        return _record_status(locked, SiteStatus.BROKER_OFF, reason, by=by)


def sites_taking_skims() -> list[Site]:
    """The sites skim jobs may go to now: online, and their latest pilot passed."""
    return [s for s in Site.objects.filter(status=SiteStatus.ONLINE) if s.can_take_skims]


# ---------------------------------------------------------------- submission


def adapter_for(site: Site) -> batch.BatchAdapter:
    """The site's batch adapter; local jobs keep their state files under PILOT_DIR."""
    options: dict[str, Any] = {}
    if site.batch_system == "local":
        options["state_dir"] = Path(settings.PILOT_DIR) / "local-jobs"
        # Local pilots run on the portal's machine: as an unprivileged user, and never as
        # a production portal's own user (it can read the portal's secrets).
        options["run_as"] = settings.DSS_PILOT_USER
        options["own_user_ok"] = settings.DEBUG
    return batch.get_adapter(site.batch_system, **options)


def do_submit_pilots(site: Site, n: int = 1, *, user=None, periodic: bool = False) -> list[Pilot]:
    """Create ``n`` pilots for ``site`` and queue each for submission (after the commit)."""
    from .tasks import submit_pilot

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PILOTS_PER_SUBMIT:
        raise InvalidInput(f"must be a whole number from 1 to {MAX_PILOTS_PER_SUBMIT}", where="n")
    site.check_configuration()
    pilots = []
    with transaction.atomic():
        for _ in range(n):
            p = Pilot.objects.create(
                site=site, owner=user, periodic=periodic, requirements=site.pilot_config()
            )
            p.log("submitted", f"by {p.sent_by}")
            pilots.append(p)
        for p in pilots:
            transaction.on_commit(lambda pk=p.pk: submit_pilot.delay(pk))
    return pilots


def pilot_urls(pilot_id: int) -> tuple[str, str]:
    """Where the pilot posts its report and where it pings the portal."""
    base = settings.DSS_PORTAL_URL.rstrip("/")
    return (
        base + reverse("api-pilot-report", args=[pilot_id]),
        base + reverse("api-ping"),
    )


def _deadline(p: Pilot) -> datetime:
    return p.created_at + timedelta(minutes=p.site.pilot_timeout_minutes)


def do_send_pilot(p: Pilot, *, last_attempt: bool = True) -> bool:
    """Write the pilot and its configuration to its work directory and submit it.

    Claims the pilot first, so a second run of the task does nothing. A refusal by the batch
    system fails the pilot; a transient one (controller down) is raised for the task to
    retry unless this is the ``last_attempt``. Returns True when the job was submitted.
    """
    now = timezone.now()
    token = secrets.token_urlsafe(32)
    workdir = Path(settings.PILOT_DIR) / str(p.pk)
    # The token hash is stored before the job exists: its report may come back at once.
    won = Pilot.objects.filter(pk=p.pk, state=PilotState.SUBMITTED, submitted_at=None).update(
        submitted_at=now,
        token_hash=hash_token(token),
        token_expires_at=_deadline(p),
        workdir=str(workdir),
    )
    if not won:
        return False
    site = p.site
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "pilot.py"
        shutil.copyfile(pilot.__file__, script)
        script.chmod(0o755)
        report_url, ping_url = pilot_urls(p.pk)
        config = dict(
            program_config(p.requirements), report_url=report_url, ping_url=ping_url, token=token
        )
        config_path = workdir / "pilot.json"
        config_path.touch(mode=0o600)
        config_path.write_text(json.dumps(config, indent=2))
        params = dict(site.submit_params)
        params.setdefault("job_name", f"dss-pilot-{p.pk}")
        params.setdefault("time_limit", site.pilot_timeout_minutes)
        params["env"] = {**params.get("env", {}), "DSS_PILOT_ID": str(p.pk)}
        params["args"] = ["--config", str(config_path)]
        adapter = adapter_for(site)
        job_id = adapter.submit(script, workdir, params)
    except batch.BatchError as e:
        if e.transient and not last_attempt:
            Pilot.objects.filter(pk=p.pk).update(submitted_at=None, token_hash="")
            p.log("retry", f"the batch system is not answering: {e}")
            raise
        do_fail_pilot(p, f"the batch system refused the pilot: {e}")
        return False
    except (InvalidInput, OSError) as e:
        do_fail_pilot(p, f"the pilot could not be submitted: {e}")
        return False
    Pilot.objects.filter(pk=p.pk).update(batch_job_id=job_id)
    # The batch system has the job now: queued there until the poller sees it run.
    Pilot.objects.filter(pk=p.pk, state=PilotState.SUBMITTED).update(state=PilotState.QUEUED)
    p.batch_job_id = job_id
    p.log("batch_submitted", f"{site.batch_system} job {job_id}", job_id=job_id)
    if Pilot.objects.filter(pk=p.pk, state=PilotState.CANCELLED).exists():
        # Cancelled while it was being submitted: stop the job that now exists.
        adapter.cancel(job_id)
    return True


def _finish(p: Pilot, state: str, message: str, **fields: Any) -> bool:
    """Move an active pilot to a final state; False when it already ended (first one wins)."""
    now = timezone.now()
    won = Pilot.objects.filter(pk=p.pk, state__in=PILOT_ACTIVE_STATES).update(
        state=state, message=message[:4000], finished_at=now, **fields
    )
    if won:
        p.state, p.message, p.finished_at = state, message[:4000], now
        for name, value in fields.items():
            setattr(p, name, value)
        p.log(state, message)
    return bool(won)


def do_fail_pilot(p: Pilot, message: str) -> None:
    """End an active pilot as ``failed`` (no report will come) and apply the status rules."""
    if _finish(p, PilotState.FAILED, message):
        apply_status_rules(p)


# ---------------------------------------------------------------- reports


# How deeply a report's JSON may nest: the pilot's own reports nest five levels.
REPORT_MAX_DEPTH = 32
# Text PostgreSQL cannot store: NUL, and halves of UTF-16 surrogate pairs standing alone.
UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


def _escape_unstorable(text: str) -> str:
    return UNSTORABLE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _checked_json(value: Any, *, escape: bool, path: str = "", depth: int = 0) -> Any:
    """``value`` with every string storable; InvalidInput (or, with ``escape``, a written-out
    escape) for NUL and lone surrogates, InvalidInput for nesting deeper than the limit."""
    if depth > REPORT_MAX_DEPTH:
        raise InvalidInput(f"nested deeper than {REPORT_MAX_DEPTH} levels", where=path or "body")
    if isinstance(value, str):
        if UNSTORABLE_RE.search(value):
            if not escape:
                raise InvalidInput(
                    "text holds a NUL character or a lone UTF-16 surrogate", where=path or "body"
                )
            return _escape_unstorable(value)
        return value
    if isinstance(value, list):
        return [
            _checked_json(v, escape=escape, path=f"{path}[{i}]", depth=depth + 1)
            for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            where = f"{path}.{k}" if path else k
            key = _checked_json(k, escape=escape, path=_escape_unstorable(where), depth=depth)
            out[key] = _checked_json(
                v, escape=escape, path=_escape_unstorable(where), depth=depth + 1
            )
        return out
    return value


def _strict_json(text: str, *, escape: bool) -> Any:
    """JSON as RFC 8259 has it: no NaN or Infinity, no number too large for a double (or, with
    ``escape``, such numbers kept as their text)."""

    def constant(name: str):
        if escape:
            return name
        raise InvalidInput(f"{name} is not a JSON number", where="body")

    def number(literal: str):
        value = float(literal)
        if math.isinf(value):
            if escape:
                return literal
            raise InvalidInput(f"the number {literal[:40]} is out of range", where="body")
        return value

    try:
        return json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as e:
        raise InvalidInput(
            f"not JSON: {e.msg}", where=f"line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise InvalidInput(f"nested deeper than {REPORT_MAX_DEPTH} levels", where="body") from None
    except ValueError as e:  # an integer of thousands of digits
        raise InvalidInput(f"not a usable JSON number: {e}", where="body") from None


def parse_report(body: bytes, *, recovered: bool = False) -> dict:
    """A report body as a dict, or InvalidInput naming what is wrong and where.

    A posted report must be storable as it is (no NUL, no lone surrogate, no NaN, no
    infinite number, at most ``REPORT_MAX_DEPTH`` levels deep). A report ``recovered`` from
    the job's output keeps such text written out as escapes instead: it is all there is.
    """
    limit = settings.PILOT_REPORT_MAX_BYTES
    if len(body) > limit:
        raise InvalidInput(
            f"the report is {len(body)} bytes; at most {limit} are accepted", where="body"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"not UTF-8 text: {e.reason}", where=f"byte {e.start}") from None
    report = _checked_json(_strict_json(text, escape=recovered), escape=recovered)
    if not isinstance(report, dict):
        raise InvalidInput("the report must be a JSON object", where="body")
    # text the database cannot store (NUL, lone surrogates), numbers past a double
    if (problem := refused_text(report)) is not None:
        raise problem
    checks = report.get("checks")
    if not isinstance(checks, list) or not checks:
        raise InvalidInput("must be a non-empty list of checks", where="checks")
    for i, c in enumerate(checks):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise InvalidInput("each check must be an object with a name", where=f"checks[{i}]")
        if c.get("status") not in (pilot.PASS, pilot.WARN, pilot.FAIL):
            raise InvalidInput(
                f"{c.get('status')!r} is not pass, warn or fail", where=f"checks[{i}].status"
            )
    if not isinstance(report.get("facts", {}), dict):
        raise InvalidInput("must be an object", where="facts")
    return report


def _accept_report(p: Pilot, report: dict, source: str) -> bool:
    """Store a report on an active pilot and judge it; the caller holds the pilot's row."""
    verdict = pilot.verdict_of(report["checks"])
    bad = [c for c in report["checks"] if c["status"] != pilot.PASS]
    summary = "; ".join(f"{c['name']}: {c.get('message', c['status'])}" for c in bad[:3])
    message = f"{verdict}" + (f" ({summary})" if summary else ": every check passed")
    won = _finish(
        p,
        PilotState.REPORTED,
        message,
        verdict=verdict,
        report=report,
        report_source=source,
        token_used_at=timezone.now(),
    )
    if won:
        apply_status_rules(p)
    return won


def check_receive_report(pilot_id: int, token: str, body: bytes) -> Pilot:
    """Accept a pilot's report posted with its one-time token.

    A wrong, expired or already used token, or a pilot that is no longer waiting for one,
    raises ReportRefused (403); a body that is too large or not a report raises InvalidInput
    (400). In either case nothing is stored.
    """
    refused = ReportRefused("wrong or unknown pilot token", where=f"pilot {pilot_id}")
    if not token:
        raise ReportRefused("no token: send 'Authorization: Pilot <token>'", where="Authorization")
    with transaction.atomic():
        p = Pilot.objects.select_for_update().select_related("site").filter(pk=pilot_id).first()
        if p is None or not p.token_matches(token):
            raise refused
        if p.token_used_at is not None:
            raise ReportRefused("this token was already used", where=f"pilot {pilot_id}")
        if p.token_expires_at is None or p.token_expires_at <= timezone.now():
            raise ReportRefused("this token has expired", where=f"pilot {pilot_id}")
        if p.is_final:
            raise ReportRefused(f"the pilot is {p.state}", where=f"pilot {pilot_id}")
        report = parse_report(body)
        _accept_report(p, report, "post")
    return p


# ---------------------------------------------------------------- following the batch system


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log file as text ('' when there is no file)."""
    try:
        # Never through a link: a job could have put one where its log was.
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return ""
    # A NUL cannot be stored in a text column: written out, like the pilot does.
    text = data.decode("utf-8", "replace").replace("\x00", "\\x00")
    if size > limit:
        text = f"[… {size - limit} earlier bytes not shown]\n" + text.split("\n", 1)[-1]
    return text


def _describe_end(status: batch.BatchStatus) -> str:
    parts = [status.raw or status.state]
    if status.exit_code is not None:
        parts.append(f"exit code {status.exit_code}")
    if status.reason:
        parts.append(status.reason)
    return ", ".join(parts)


def _follow(p: Pilot, status: batch.BatchStatus, adapter: batch.BatchAdapter) -> None:
    """Record what the batch system says of one pilot and act on a change."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "batch_state": status.state,
        "batch_raw_state": status.raw[:64],
        "batch_exit_code": status.exit_code,
        "batch_reason": status.reason[:500],
        "batch_checked_at": now,
    }
    out_path = err_path = None
    if p.workdir:
        out_path, err_path = adapter.output_paths(p.batch_job_id, p.workdir)
        fields["stdout_tail"] = read_tail(out_path)
        fields["stderr_tail"] = read_tail(err_path)
    if status.final or (status.state == batch.UNKNOWN and p.is_final):
        fields["batch_done"] = True
    if status.state != p.batch_state or status.raw != p.batch_raw_state:
        p.log("batch", _describe_end(status), state=status.state, raw=status.raw)
    Pilot.objects.filter(pk=p.pk).update(**fields)
    for name, value in fields.items():
        setattr(p, name, value)

    if status.state == batch.QUEUED:
        Pilot.objects.filter(pk=p.pk, state=PilotState.SUBMITTED).update(state=PilotState.QUEUED)
    elif status.state == batch.RUNNING:
        Pilot.objects.filter(pk=p.pk, state__in=(PilotState.SUBMITTED, PilotState.QUEUED)).update(
            state=PilotState.RUNNING, started_at=now
        )
    elif status.final and not p.is_final:
        report = None
        if out_path is not None:
            # The pilot prints its report before posting it: recover it when the post failed.
            report_text = read_tail(out_path, 2 * settings.PILOT_REPORT_MAX_BYTES)
            found = pilot.extract_report_text(report_text)
            if found is not None:
                try:
                    # recovered: what a database cannot store is kept as written-out escapes
                    report = parse_report(found.encode(), recovered=True)
                except InvalidInput as e:
                    log.warning("pilot %s printed an unusable report: %s", p.pk, e)
        with transaction.atomic():
            locked = Pilot.objects.select_for_update().select_related("site").get(pk=p.pk)
            if locked.is_final:
                return
            if report is not None:
                _accept_report(locked, report, "output file")
            else:
                do_fail_pilot(
                    locked,
                    f"the batch job ended ({_describe_end(status)}) without a report; "
                    "see the error log",
                )


def ask_batch_systems(
    jobs: Iterable[J],
) -> Iterator[tuple[J, batch.BatchStatus, batch.BatchAdapter]]:
    """Each of ``jobs`` (rows with a ``site`` and a ``batch_job_id``: pilots, skim jobs)
    with what its site's batch system says of it and that site's adapter, asking each batch
    system once for all its jobs. A batch system that cannot be asked is skipped this time
    (logged); a job it does not answer for is left out."""
    by_site: dict[int, list[J]] = defaultdict(list)
    for job in jobs:
        by_site[job.site_id].append(job)
    for site_jobs in by_site.values():
        site = site_jobs[0].site
        adapter = adapter_for(site)
        try:
            statuses = adapter.status([j.batch_job_id for j in site_jobs])
        except (batch.BatchError, InvalidInput) as e:
            log.warning("cannot ask %s's batch system: %s", site.name, e)
            continue
        for job in site_jobs:
            status = statuses.get(job.batch_job_id)
            if status is not None:
                yield job, status, adapter


def do_poll_pilots() -> int:
    """Ask each site's batch system about its unfinished pilot jobs; returns how many were seen.

    A batch system that cannot be asked is skipped this time (its pilots are not lost for
    that: only the timeout loses a pilot).
    """
    pending = (
        Pilot.objects.filter(batch_done=False)
        .exclude(batch_job_id="")
        .select_related("site")
        .order_by("site_id", "pk")
    )
    seen = 0
    for p, status, adapter in ask_batch_systems(pending):
        try:
            _follow(p, status, adapter)
        except Exception as e:
            # One pilot's trouble must not stop the others being followed; a pilot whose
            # job ended is not left open with its outcome unrecorded.
            log.exception("following pilot %s failed", p.pk)
            if status.final:
                do_fail_pilot(p, f"its outcome could not be recorded: {type(e).__name__}: {e}")
        seen += 1
    return seen


def do_mark_lost(now: datetime | None = None) -> list[Pilot]:
    """Give up on pilots with no report within their site's timeout; cancel their jobs."""
    now = now or timezone.now()
    lost = []
    for p in Pilot.objects.filter(state__in=PILOT_ACTIVE_STATES).select_related("site"):
        if _deadline(p) > now:
            continue
        minutes = p.site.pilot_timeout_minutes
        seen = f"; the batch system last said {p.batch_raw_state}" if p.batch_raw_state else ""
        if not _finish(p, PilotState.LOST, f"no report within {minutes} min{seen}"):
            continue
        if p.batch_job_id:
            try:
                adapter_for(p.site).cancel(p.batch_job_id)
            except (batch.BatchError, InvalidInput) as e:
                p.log("cancel_failed", str(e))
        apply_status_rules(p)
        lost.append(p)
    return lost


def do_cancel_pilot(p: Pilot, *, user=None) -> Pilot:
    """Stop a pilot through its batch system's cancel; its token stops working at once."""
    if p.is_final:
        raise Conflict(f"pilot #{p.pk} has already ended ({p.state})", where=f"pilot {p.pk}")
    if p.batch_job_id:
        adapter_for(p.site).cancel(p.batch_job_id)
    if not _finish(p, PilotState.CANCELLED, f"cancelled by {_who(user)}"):
        p.refresh_from_db()
        raise Conflict(f"pilot #{p.pk} has already ended ({p.state})", where=f"pilot {p.pk}")
    return p


# ---------------------------------------------------------------- site status


def apply_status_rules(p: Pilot) -> SiteStatusChange | None:
    """Periodic pilots drive an online site's status.

    A periodic pilot that failed (verdict failed, no report, lost) moves an online site to
    broker-off; once broker-off, the site comes back online after ``GOOD_IN_A_ROW``
    periodic pilots in a row passed. Sites in test or offline are left to their admins, and
    pilots sent by hand never change a status.
    """
    if not p.periodic or not p.outcome:
        return None
    with transaction.atomic():
        site = Site.objects.select_for_update().get(pk=p.site_id)
        if p.outcome in BAD_OUTCOMES:
            if site.status != SiteStatus.ONLINE:
                return None
            if p.outcome == Verdict.FAILED:
                detail = "; ".join(
                    f"{c['name']}: {c.get('message', '')}"
                    for c in p.checks
                    if c.get("status") == pilot.FAIL
                )
            else:
                detail = p.message
            reason = f"periodic pilot #{p.pk} {BAD_OUTCOMES[p.outcome]}: {detail}"
            return _record_status(site, SiteStatus.BROKER_OFF, reason, by="schedule", pilot=p)
        if p.outcome == Verdict.PASSED and site.status == SiteStatus.BROKER_OFF:
            recent = list(
                site.pilots.filter(
                    periodic=True,
                    state__in=OUTCOME_STATES,
                    finished_at__gte=site.status_changed_at,
                ).order_by("-finished_at", "-id")[:GOOD_IN_A_ROW]
            )
            if len(recent) == GOOD_IN_A_ROW and all(r.outcome == Verdict.PASSED for r in recent):
                ids = ", ".join(f"#{r.pk}" for r in reversed(recent))
                reason = f"{GOOD_IN_A_ROW} periodic pilots passed in a row ({ids})"
                return _record_status(site, SiteStatus.ONLINE, reason, by="schedule", pilot=p)
    return None


def do_schedule_pilots(now: datetime | None = None) -> list[Pilot]:
    """Send a periodic pilot to every site whose interval has passed (not to offline sites)."""
    now = now or timezone.now()
    sent = []
    due = Site.objects.filter(pilot_interval_minutes__isnull=False).exclude(
        status=SiteStatus.OFFLINE
    )
    for site in due:
        last = site.last_scheduled_at
        interval = timedelta(minutes=site.pilot_interval_minutes)
        # Beat runs this about once a minute, never exactly: a little early still counts.
        if last is not None and last + interval - SCHEDULE_SLACK > now:
            continue
        # Only one scheduler run may take this slot.
        if Site.objects.filter(pk=site.pk, last_scheduled_at=last).update(last_scheduled_at=now):
            sent += do_submit_pilots(site, 1, periodic=True)
    return sent


# ---------------------------------------------------------------- pass rates


def recent_outcomes(sites, limit: int = STRIP_LENGTH) -> dict[int, list[Pilot]]:
    """Each site's last ``limit`` finished pilots (oldest first), in one query."""
    ranked = (
        Pilot.objects.filter(site__in=sites, state__in=OUTCOME_STATES)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("site_id")],
                order_by=[F("finished_at").desc(), F("id").desc()],
            )
        )
        .filter(rank__lte=limit)
        .only("id", "site_id", "state", "verdict", "finished_at", "message", "periodic")
    )
    out: dict[int, list[Pilot]] = defaultdict(list)
    for p in ranked:
        out[p.site_id].append(p)
    for pilots in out.values():
        pilots.sort(key=lambda p: (p.finished_at, p.pk))
    return out


def pass_rate(pilots: list[Pilot]) -> int | None:
    """Percent of pilots that passed, or None without any."""
    if not pilots:
        return None
    return round(100 * sum(p.outcome == Verdict.PASSED for p in pilots) / len(pilots))


def sites_overview() -> list[Site]:
    """Every site with its latest pilot outcome, last outcomes and pass rate, and open pilots."""
    sites = list(
        Site.objects.annotate(
            n_active=Count("pilots", filter=Q(pilots__state__in=PILOT_ACTIVE_STATES)),
            n_pilots=Count("pilots"),
        ).prefetch_related("contacts")
    )
    outcomes = recent_outcomes(sites)
    for site in sites:
        site.recent = outcomes.get(site.pk, [])
        site.latest = site.recent[-1] if site.recent else None
        site.pass_rate = pass_rate(site.recent)
        # what Site.can_take_skims asks of the database, from the outcomes already here
        site.can_take_skims = (
            site.status == SiteStatus.ONLINE
            and site.latest is not None
            and site.latest.outcome == Verdict.PASSED
        )
    return sites


def daily_pass_rates(site: Site, days: int = 14, today: date | None = None) -> list[dict]:
    """Per day for the last ``days`` days: pilots finished, passed, and the pass rate."""
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    counts: dict[date, list[int]] = {first + timedelta(days=i): [0, 0] for i in range(days)}
    rows = site.pilots.filter(state__in=OUTCOME_STATES, finished_at__gte=start).only(
        "state", "verdict", "finished_at"
    )
    for p in rows:
        day = timezone.localdate(p.finished_at)
        if day in counts:
            counts[day][0] += 1
            counts[day][1] += p.outcome == Verdict.PASSED
    return [
        {"day": day, "pilots": n, "passed": ok, "rate": round(100 * ok / n) if n else None}
        for day, (n, ok) in counts.items()
    ]
