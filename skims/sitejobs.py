"""Skims on sites: each part of a skim that runs on sites is one batch job.

``send_part`` queues a part where its skim runs. For a skim on sites,
``do_submit_site_job`` asks the broker (:mod:`skims.brokerage`) for a site, writes the
part's description and a one-time token into a work directory under PILOT_DIR and submits
the job wrapper (:mod:`skims.jobwrapper`) through the site's batch adapter. The wrapper
posts its outcome once (``check_receive_job_report``); the portal checks the output it
stored and records the part exactly as a worker-run part is recorded.
``do_poll_site_jobs`` (beat) follows the batch systems: a job that ends without a report
failed (its error log says why, e.g. it could not reach the portal), one the batch system
cancelled or forgot is lost. A failed or lost job's part gets another job, on another site
where there is one, up to DSS_SITE_JOB_ATTEMPTS; a site whose last DSS_SITE_JOB_FAILURES
skim jobs all failed goes broker-off, as after a failed pilot, and gets no new jobs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import shutil
import uuid
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from dmu.checksum import file_checksum
from dmu.storage import temp_name
from dss import leases
from dss.errors import Conflict, DSSError, Forbidden, InvalidInput
from dss.jobs import JobState
from pilotchecker import actions as pilot_actions
from pilotchecker import batch
from pilotchecker.models import Site, hash_token

from . import brokerage
from .models import (
    SITE_JOB_ACTIVE,
    PartState,
    RunOn,
    SiteJob,
    SiteJobState,
    SkimJob,
    SkimPart,
)

log = logging.getLogger(__name__)

REPORT_MAX_BYTES = 64 * 1024
GUID_RE = re.compile(r"^[0-9a-fA-F-]{32,36}$")
ADLER32_RE = re.compile(r"^[0-9a-f]{8}$")
# A job the batch system has no record of this long after submission is lost.
FORGOTTEN_AFTER = timedelta(minutes=5)


class JobReportRefused(Forbidden):
    """A skim job report whose token is wrong, already used or expired (HTTP 403)."""

    code = "report_refused"


# ---------------------------------------------------------------- queueing


def send_part(part: SkimPart) -> None:
    """Queue ``part`` where its skim runs: a portal worker's task, or a batch job on a site
    (submitted after the commit)."""
    if part.skim.run_on == RunOn.PORTAL:
        leases.send(part)
        return
    from .tasks import submit_site_job

    transaction.on_commit(lambda pk=part.pk: submit_site_job.delay(pk))


def _sources(part: SkimPart):
    from .actions import part_sources

    return list(part_sources(part))


def _replicas(file) -> list[dict]:
    return [
        {
            "url": r.storage_element.endpoint().url(r.path),
            "storage_element": r.storage_element.name,
            "state": r.state,
        }
        for r in file.replicas.select_related("storage_element").order_by("storage_element__name")
    ]


def job_spec(part: SkimPart, job: SiteJob, token: str) -> dict[str, Any]:
    """What the job wrapper needs to run ``part``: its inputs (with their replicas and
    selected entries), the output's place and options, and where to report."""
    from .actions import copy_limits, output_lfn, output_path

    skim = part.skim
    inputs = [
        {
            "lfn": f.lfn,
            "guid": str(f.guid),
            "adler32": f.adler32,
            "bytes": f.bytes,
            "tree": f.tree,
            "entries": base64.b64encode(zlib.compress(entries.astype("<i8").tobytes())).decode(),
            "replicas": _replicas(f),
        }
        for f, entries in _sources(part)
    ]
    limits = copy_limits()
    return {
        "skim": skim.pk,
        "part": part.number,
        "job": job.pk,
        "report_url": settings.DSS_PORTAL_URL.rstrip("/")
        + reverse("api-skim-job-report", args=[job.pk]),
        "token": token,
        "read": "remote" if job.site.name in settings.DSS_SITE_REMOTE_READ else "copy",
        "inputs": inputs,
        "branches": list(skim.branches),
        "copy_objects": list(skim.copy_objects),
        "limits": {"entries": limits.entries, "bytes": limits.bytes},
        "chunk": settings.DSS_SKIM_CHUNK_EVENTS,
        "events": part.n_entries,
        "output": {
            "lfn": output_lfn(skim, part.number),
            "path": output_path(skim, part.number),
            "url": skim.output_se.url,
            "storage_element": skim.output_se.name,
            "tag": job.output_tag,
            "format": skim.output_format,
            "tree": skim.output_tree,
        },
    }


def job_script() -> str:
    """The batch script: the nodes' interpreter runs the job wrapper."""
    code = settings.DSS_SKIM_JOB_CODE
    path_line = f"sys.path.insert(0, {code!r})\n" if code else ""
    return (
        f"#!{settings.DSS_SKIM_JOB_PYTHON}\n"
        "# A DSS skim job: runs one skim part (see skims/jobwrapper.py).\n"
        "import sys\n"
        f"{path_line}"
        "from skims.jobwrapper import main\n"
        "sys.exit(main())\n"
    )


def _fail_part(part: SkimPart, message: str) -> None:
    from .actions import do_fail_part, finish_if_done

    SkimPart.objects.filter(pk=part.pk, state=PartState.QUEUED).update(state=PartState.RUNNING)
    if do_fail_part(part, message):
        transaction.on_commit(lambda: finish_if_done(part.skim_id))


def do_submit_site_job(part_id: int) -> SiteJob | None:
    """Give a queued part of a skim on sites its next batch job, on a site the broker
    chooses (the named one, for a skim on a named site). A part without a site that may
    take it, or past its last attempt, fails saying why. Safe to run twice: only a queued
    part without an active job is submitted."""
    with transaction.atomic():
        part = (
            SkimPart.objects.select_for_update(of=("self",))
            .select_related("skim", "skim__output_se", "skim__site", "input_file")
            .filter(pk=part_id)
            .first()
        )
        if (
            part is None
            or part.state != PartState.QUEUED
            or part.skim.state != JobState.RUNNING
            or part.skim.run_on == RunOn.PORTAL
            or part.job_state in SITE_JOB_ACTIVE
        ):
            return None
        skim = part.skim
        last = part.site_jobs.order_by("-attempt").first()
        if part.job_attempts >= settings.DSS_SITE_JOB_ATTEMPTS:
            why = f"; the last: {last.message}" if last is not None and last.message else ""
            _fail_part(part, f"gave up after {part.job_attempts} batch job(s){why}")
            return None
        needed = brokerage.storage_needed([f for f, _ in _sources(part)], skim.output_se)
        failed_at = part.site_jobs.filter(
            state__in=[SiteJobState.FAILED, SiteJobState.LOST]
        ).values_list("site", flat=True)
        try:
            site = brokerage.choose_site(
                needed, named=skim.site if skim.run_on == RunOn.SITE else None, avoid=failed_at
            )
        except brokerage.NoSite as e:
            _fail_part(part, e.message)
            return None
        token = secrets.token_urlsafe(32)
        job = SiteJob.objects.create(
            part=part,
            attempt=(last.attempt if last is not None else 0) + 1,
            site=site,
            output_tag=uuid.uuid4().hex,
            token_hash=hash_token(token),
            token_expires_at=timezone.now() + timedelta(minutes=settings.DSS_SITE_JOB_MINUTES),
        )
        SkimPart.objects.filter(pk=part.pk).update(
            state=PartState.RUNNING,
            started_at=timezone.now(),
            message="",
            site=site,
            batch_job_id="",
            batch_node="",
            job_state=SiteJobState.QUEUED,
            job_attempts=F("job_attempts") + 1,
        )
        part.refresh_from_db()
        spec = job_spec(part, job, token)
    return _submit(part, job, spec)


def _submit(part: SkimPart, job: SiteJob, spec: dict) -> SiteJob | None:
    """Write the job's directory and hand it to the site's batch system (outside any
    transaction: a batch command may take seconds)."""
    site = job.site
    workdir = Path(settings.PILOT_DIR) / "skim-jobs" / str(job.pk)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)
        script = workdir / "skimjob.py"
        script.write_text(job_script())
        script.chmod(0o755)
        spec_path = workdir / "job.json"
        spec_path.touch(mode=0o600)
        spec_path.write_text(json.dumps(spec))
        params = dict(site.submit_params)
        params["job_name"] = f"dss-skim-{part.skim_id}-{part.number}"
        params.setdefault("time_limit", settings.DSS_SITE_JOB_MINUTES)
        params["env"] = {**params.get("env", {}), "DSS_SKIM_JOB_ID": str(job.pk)}
        params["args"] = ["--spec", str(spec_path)]
        adapter = pilot_actions.adapter_for(site)
        job_id = adapter.submit(script, workdir, params)
    except (DSSError, OSError) as e:
        SiteJob.objects.filter(pk=job.pk).update(workdir=str(workdir))
        job.workdir = str(workdir)
        _job_ended(job, SiteJobState.FAILED, f"{site.name} refused the job: {e}")
        return job
    SiteJob.objects.filter(pk=job.pk).update(batch_job_id=job_id, workdir=str(workdir))
    SkimPart.objects.filter(pk=part.pk).update(batch_job_id=job_id)
    job.batch_job_id, job.workdir = job_id, str(workdir)
    part.skim.log(
        "site-job",
        f"part {part.number}: {site.batch_system} job {job_id} on {site.name} "
        f"(attempt {job.attempt})",
        part=part.number,
    )
    if not SkimPart.objects.filter(pk=part.pk, state=PartState.RUNNING).exists():
        # Cancelled while it was being submitted: stop the job that now exists.
        _cancel(job)
    return job


# ---------------------------------------------------------------- how a job ends


def _job_ended(
    job: SiteJob, state: str, message: str, node: str = "", *, data_error: bool = False
) -> bool:
    """Record that ``job`` ended without a good output; give its part another job (or fail
    it after the last), and take its site out of production after repeated failures. A
    ``data_error`` (an input that cannot be read as asked, on any node) fails the part at
    once and is not held against the site. False when the job had already ended."""
    with transaction.atomic():
        won = SiteJob.objects.filter(pk=job.pk, state__in=SITE_JOB_ACTIVE).update(
            state=state,
            message=message[:4000],
            finished_at=timezone.now(),
            node=node or job.node,
            site_fault=not data_error,
        )
        if not won:
            return False
        job.state, job.message = state, message
        part = SkimPart.objects.select_related("skim").get(pk=job.part_id)
        current = part.site_jobs.order_by("-attempt").first()
        again = part.state == PartState.RUNNING and current is not None and current.pk == job.pk
        if again and data_error:
            from .actions import do_fail_part, finish_if_done

            SkimPart.objects.filter(pk=part.pk).update(job_state=state)
            do_fail_part(part, message)
            transaction.on_commit(lambda: finish_if_done(part.skim_id))
            again = False
        elif again:
            SkimPart.objects.filter(pk=part.pk).update(
                state=PartState.QUEUED, job_state=state, message=message[:4000]
            )
        if part.skim.state == JobState.RUNNING:
            part.skim.log(
                f"site-job-{state}",
                f"part {part.number}: job {job.batch_job_id or '(not submitted)'} on "
                f"{job.site.name} {state}: {message}",
                part=part.number,
            )
    if not data_error:
        _note_site_failure(job.site)
    if again:
        do_submit_site_job(part.pk)
    return True


def _note_site_failure(site: Site) -> None:
    """Broker-off an online site whose last DSS_SITE_JOB_FAILURES skim jobs all failed."""
    n = settings.DSS_SITE_JOB_FAILURES
    site.refresh_from_db()
    recent = list(
        SiteJob.objects.filter(site=site, finished_at__gte=site.status_changed_at)
        .exclude(state__in=SITE_JOB_ACTIVE)
        .exclude(state=SiteJobState.CANCELLED)
        .exclude(site_fault=False)
        .select_related("part")
        .order_by("-finished_at", "-id")[:n]
    )
    if len(recent) < n or any(j.state == SiteJobState.DONE for j in recent):
        return
    last = recent[0]
    reason = (
        f"its last {n} skim jobs failed (the last, job {last.batch_job_id or '?'} of part "
        f"{last.part.number} of skim #{last.part.skim_id}: {last.message})"
    )
    pilot_actions.do_broker_off(site, reason, by="skim jobs")


# ---------------------------------------------------------------- reports


def _check_report(body: bytes) -> dict:
    """The report as a dict, checked field by field; InvalidInput naming the field."""
    if len(body) > REPORT_MAX_BYTES:
        raise InvalidInput(f"larger than {REPORT_MAX_BYTES} bytes", where="body")
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"not JSON: {e}", where="body") from None
    if not isinstance(report, dict):
        raise InvalidInput("must be a JSON object", where="body")
    state = report.get("state")
    if state not in ("done", "failed"):
        raise InvalidInput("must be 'done' or 'failed'", where="state")
    node = report.get("node")
    if not isinstance(node, str) or not 0 < len(node) <= 255:
        raise InvalidInput("must be the node's host name", where="node")
    if state == "failed":
        if not isinstance(report.get("reason"), str) or not report["reason"].strip():
            raise InvalidInput("a failed job says why", where="reason")
        if not isinstance(report.get("data_error", False), bool):
            raise InvalidInput("must be true or false", where="data_error")
        return report
    if not isinstance(report.get("guid"), str) or not GUID_RE.match(report["guid"]):
        raise InvalidInput("must be the output's GUID", where="guid")
    for key in ("events", "bytes"):
        value = report.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput("must be a whole number, 0 or more", where=key)
    if not isinstance(report.get("adler32"), str) or not ADLER32_RE.match(report["adler32"]):
        raise InvalidInput("must be 8 lowercase hex digits", where="adler32")
    copied = report.get("copied", [])
    if not isinstance(copied, list) or not all(isinstance(c, str) for c in copied):
        raise InvalidInput("must be a list of object names", where="copied")
    return report


def check_receive_job_report(job_id: int, token: str, body: bytes) -> SiteJob:
    """Accept a skim job's report posted with its one-time token.

    A wrong, used or expired token, or a job that has already ended, is refused
    (JobReportRefused, 403); a body that is not a report is InvalidInput (400): nothing
    is recorded then. A failed job's part gets another job. A done job's output is
    checked on the output storage element (its size and adler32 as reported) and then
    published and recorded as a worker-run part's is; an output that does not match
    fails the job instead."""
    if not token:
        raise JobReportRefused(
            "no token: send 'Authorization: SkimJob <token>'", where="Authorization"
        )
    with transaction.atomic():
        job = (
            SiteJob.objects.select_for_update(of=("self",))
            .select_related("site", "part", "part__skim", "part__skim__output_se")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.token_hash != hash_token(token):
            raise JobReportRefused("wrong or unknown job token", where=f"job {job_id}")
        if job.token_used_at is not None:
            raise JobReportRefused("this token was already used", where=f"job {job_id}")
        if job.token_expires_at <= timezone.now():
            raise JobReportRefused("this token has expired", where=f"job {job_id}")
        if not job.is_active:
            raise JobReportRefused(
                f"the job has already ended ({job.state})", where=f"job {job_id}"
            )
        report = _check_report(body)
        SiteJob.objects.filter(pk=job.pk).update(
            token_used_at=timezone.now(), report=report, node=report["node"]
        )
    job.node = report["node"]
    if report["state"] == "failed":
        _job_ended(
            job,
            SiteJobState.FAILED,
            report["reason"],
            report["node"],
            data_error=report.get("data_error") is True,
        )
    else:
        _accept_output(job, report)
    job.refresh_from_db()
    return job


def _accept_output(job: SiteJob, report: dict) -> None:
    """Check the temporary the job stored and record the part as done (publishing it), or
    fail the job when the output is not what it reported."""
    from .actions import finish_if_done, output_lfn, output_path

    part = job.part
    skim = part.skim
    rel = output_path(skim, part.number)
    temp = temp_name(rel, job.output_tag)
    endpoint = skim.output_se.endpoint()
    try:
        size = endpoint.size(temp)
        adler32 = endpoint.server_checksum(temp)
        if adler32 is None:
            with endpoint.open_read(temp) as fh:
                adler32, _, _ = file_checksum(fh)
    except DSSError as e:
        _job_ended(job, SiteJobState.FAILED, f"its output cannot be read back: {e}", job.node)
        return
    if (size, adler32) != (report["bytes"], report["adler32"]):
        _discard(endpoint, temp)
        _job_ended(
            job,
            SiteJobState.FAILED,
            f"its output on {skim.output_se.name} ({size} bytes, adler32 {adler32}) is not "
            f"what it reported ({report['bytes']} bytes, adler32 {report['adler32']})",
            job.node,
        )
        return
    lfn = output_lfn(skim, part.number)
    with transaction.atomic():
        locked = SkimPart.objects.select_for_update().filter(pk=part.pk).first()
        latest = part.site_jobs.order_by("-attempt").first()
        won = (
            locked is not None
            and locked.state == PartState.RUNNING
            and latest is not None
            and latest.pk == job.pk
            and SiteJob.objects.filter(pk=job.pk, state__in=SITE_JOB_ACTIVE).update(
                state=SiteJobState.DONE, finished_at=timezone.now(), message=""
            )
        )
        if won:
            endpoint.publish(temp, rel, overwrite=True)
            SkimPart.objects.filter(pk=part.pk).update(
                state=PartState.SUCCEEDED,
                output_lfn=lfn,
                output_path=rel,
                output_guid=report["guid"],
                output_bytes=size,
                output_adler32=adler32,
                events_written=report["events"],
                copied=report.get("copied", []),
                finished_at=timezone.now(),
                job_state=SiteJobState.DONE,
                batch_node=job.node,
            )
            SkimJob.objects.filter(pk=skim.pk).update(
                events_written=F("events_written") + report["events"],
                progress_done=F("progress_done") + part.n_entries,
            )
            skim.log(
                "part",
                f"{part.inputs_label}: {report['events']} events → {lfn} (site {job.site.name}, "
                f"batch job {job.batch_job_id}, node {job.node})",
                part=part.number,
            )
            transaction.on_commit(lambda: finish_if_done(skim.pk))
    if not won:
        _discard(endpoint, temp)
        raise Conflict(
            f"part {part.number} of skim #{skim.pk} no longer waits for this job "
            "(cancelled, or given to another job)",
            where=f"job {job.pk}",
        )


def _discard(endpoint, temp: str) -> None:
    try:
        endpoint.delete(temp, missing_ok=True)
    except DSSError as e:
        log.warning("could not remove %s: %s", temp, e)


# ---------------------------------------------------------------- following the batch systems


def _last_words(job: SiteJob, adapter: batch.BatchAdapter) -> str:
    """The job wrapper's last line on its error log (why it ended), or ''."""
    if not job.workdir or not job.batch_job_id:
        return ""
    _, err = adapter.output_paths(job.batch_job_id, job.workdir)
    lines = [ln for ln in pilot_actions.read_tail(err, 8192).splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("dss-skim-job:")]
    return (said or lines or [""])[-1][:1000]


def _follow(job: SiteJob, status: batch.BatchStatus, adapter: batch.BatchAdapter) -> None:
    now = timezone.now()
    SiteJob.objects.filter(pk=job.pk).update(batch_raw_state=status.raw[:64])
    if status.state == batch.RUNNING and job.state == SiteJobState.QUEUED:
        if SiteJob.objects.filter(pk=job.pk, state=SiteJobState.QUEUED).update(
            state=SiteJobState.RUNNING, started_at=now
        ):
            SkimPart.objects.filter(pk=job.part_id, batch_job_id=job.batch_job_id).update(
                job_state=SiteJobState.RUNNING
            )
        return
    forgotten = status.state == batch.UNKNOWN and job.created_at < now - FORGOTTEN_AFTER
    if not (status.final or forgotten):
        return
    job.refresh_from_db()
    if not job.is_active:
        return
    described = pilot_actions._describe_end(status)
    if status.state in (batch.CANCELLED, batch.TIMEOUT) or forgotten:
        message = f"lost: the batch system says {described}"
        _job_ended(job, SiteJobState.LOST, message)
    else:
        words = _last_words(job, adapter)
        message = f"the batch job ended ({described}) without a report" + (
            f": {words}" if words else ""
        )
        _job_ended(job, SiteJobState.FAILED, message)


def do_poll_site_jobs() -> int:
    """Follow every active skim job through its site's batch system, end those that ended
    without a report or outlived their token, and submit parts that wait for a job.
    Returns how many jobs were asked about."""
    now = timezone.now()
    for job in SiteJob.objects.filter(state__in=SITE_JOB_ACTIVE, token_expires_at__lt=now):
        job = SiteJob.objects.select_related("site").get(pk=job.pk)
        if job.batch_job_id:
            _cancel(job, record=False)
        _job_ended(job, SiteJobState.LOST, "no report before its token expired")
    active = (
        SiteJob.objects.filter(state__in=SITE_JOB_ACTIVE)
        .exclude(batch_job_id="")
        .select_related("site")
        .order_by("site_id", "pk")
    )
    seen = 0
    for job, status, adapter in pilot_actions.ask_batch_systems(active):
        try:
            _follow(job, status, adapter)
        except Exception:
            # one job's trouble must not stop the others being followed
            log.exception("following skim job %s failed", job.pk)
        seen += 1
    do_remove_old_workdirs(now)
    waiting = SkimPart.objects.filter(state=PartState.QUEUED, skim__state=JobState.RUNNING).exclude(
        skim__run_on=RunOn.PORTAL
    )
    for pk in waiting.values_list("pk", flat=True):
        try:
            do_submit_site_job(pk)
        except Exception:
            log.exception("submitting a job for skim part %s failed", pk)
    return seen


def do_remove_old_workdirs(now=None, batch_size: int = 200) -> int:
    """Remove the work directories of jobs that ended more than DSS_SITE_JOB_KEEP_DAYS ago
    (only folders under PILOT_DIR/skim-jobs/); the job's row keeps its message. Returns how
    many were removed."""
    now = now or timezone.now()
    root = (Path(settings.PILOT_DIR) / "skim-jobs").resolve()
    old = (
        SiteJob.objects.exclude(state__in=SITE_JOB_ACTIVE)
        .exclude(workdir="")
        .filter(finished_at__lt=now - timedelta(days=settings.DSS_SITE_JOB_KEEP_DAYS))
        .values_list("pk", "workdir")[:batch_size]
    )
    removed = 0
    for pk, workdir in old:
        path = Path(workdir).resolve()
        if path.parent == root:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        else:
            log.warning(
                "skim job %s: work directory %s is not under %s; left alone", pk, path, root
            )
        SiteJob.objects.filter(pk=pk).update(workdir="")
    return removed


def _cancel(job: SiteJob, *, record: bool = True) -> None:
    try:
        pilot_actions.adapter_for(job.site).cancel(job.batch_job_id)
    except (batch.BatchError, InvalidInput) as e:
        log.warning("could not cancel job %s on %s: %s", job.batch_job_id, job.site.name, e)
    if record:
        SiteJob.objects.filter(pk=job.pk, state__in=SITE_JOB_ACTIVE).update(
            state=SiteJobState.CANCELLED, finished_at=timezone.now(), message="cancelled"
        )


def do_cancel_site_jobs(skim: SkimJob) -> None:
    """Stop the batch jobs of a cancelled skim's parts (their reports are then refused)."""
    jobs = SiteJob.objects.filter(part__skim=skim, state__in=SITE_JOB_ACTIVE).select_related("site")
    for job in jobs:
        if job.batch_job_id:
            _cancel(job)
        else:
            SiteJob.objects.filter(pk=job.pk).update(
                state=SiteJobState.CANCELLED, finished_at=timezone.now(), message="cancelled"
            )
