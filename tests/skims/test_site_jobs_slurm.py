"""Skims on a real site: the one-node Slurm from ``bash .ci/slurm.sh start``.

Each part of a skim runs as a Slurm job: the job wrapper stages its input in with the DMU,
skims it with the portal's own code, stores the output with a verified copy and posts its
report to a live portal with a one-time token. These tests skip without the cluster
(``SLURM_CONF``) and fail under CI=true."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import pytest
from django.utils import timezone

from pilotchecker import actions as pilot_actions
from pilotchecker.models import Pilot, PilotState, Site, SiteStatus, Verdict
from skims import actions, sitejobs
from skims.models import SiteJob, SkimJob
from skims.tasks import finish_skim, plan_skim
from tests.conftest import ROOT, api_token, free_port, wait_for
from tests.pilotchecker.test_end_to_end import slurm_up
from tests.services import require
from tests.skims.conftest import same_events, write_split
from tests.skims.test_skim_correctness import outputs, run_skim
from tests.xrootd import XRootDUnavailable, start_xrootd

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SELECTION = "n_muon >= 2"


@pytest.fixture
def slurm():
    require(slurm_up(), "a Slurm cluster (SLURM_CONF from `bash .ci/slurm.sh start`)")


@pytest.fixture
def portal(live_server, settings, pilots_dir, slurm):
    settings.DSS_PORTAL_URL = live_server.url
    settings.PILOT_DIR = pilots_dir
    return live_server.url


def slurm_site(name: str, storage_root) -> Site:
    """An online Slurm site whose pilots check that the storage directory is on its nodes,
    and whose latest pilot passed."""
    site = pilot_actions.do_add_site(
        name,
        "slurm",
        submit_params={"time_limit": "00:10:00"},
        requirements={"paths": [str(storage_root)]},
        status="online",
    )
    Pilot.objects.create(
        site=site, state=PilotState.REPORTED, verdict=Verdict.PASSED, finished_at=timezone.now()
    )
    return site


def submit(user, dataset, name: str, site: str) -> SkimJob:
    run_on, named = ("auto", None) if site == "auto" else ("site", site)
    skim = actions.check_submit_skim(
        user=user,
        inputs=[actions.InputSpec(dataset, None)],
        selection=SELECTION,
        output_name=name,
        run_on=run_on,
        site=named,
    )
    plan_skim(skim.pk)
    return skim


def submitted(skim: SkimJob) -> list:
    """Poll until every part has a batch job id; the parts."""

    def check():
        sitejobs.do_poll_site_jobs()
        parts = list(skim.parts.order_by("number"))
        return parts if all(p.batch_job_id for p in parts) else None

    return wait_for(check, timeout=60, interval=0.5, what="every part to have a Slurm job")


def drive(skim: SkimJob, timeout: float = 240) -> SkimJob:
    """Poll the batch system (as beat does) until every part has ended, then finish."""

    def ended():
        sitejobs.do_poll_site_jobs()
        return not skim.parts.filter(state__in=["queued", "running"]).exists()

    wait_for(ended, timeout=timeout, interval=1.0, what="the skim's Slurm jobs to end")
    finish_skim(skim.pk)
    skim.refresh_from_db()
    return skim


def test_a_skim_runs_as_slurm_jobs_and_equals_the_same_skim_on_the_portals_workers(
    portal, split_hzz, physicist, storage_root, client
):
    site = slurm_site("SLURM-A", storage_root)
    # submitted as a physicist does from the command line
    cli = subprocess.run(
        [sys.executable, "-m", "dss.cli", "--url", portal, "--token", api_token(physicist)]
        + [
            "--json",
            "skim",
            "submit",
            "-d",
            split_hzz.name,
            "-s",
            SELECTION,
            "-o",
            "user.phys.on_slurm",
        ]
        + ["--site", "SLURM-A"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert cli.returncode == 0, cli.stderr
    submitted_skim = SkimJob.objects.get(pk=json.loads(cli.stdout)["id"])
    assert (submitted_skim.run_on, submitted_skim.site) == ("site", site)
    plan_skim(submitted_skim.pk)

    on_site = drive(submitted_skim)

    assert on_site.state == "succeeded", on_site.message
    parts = list(on_site.parts.select_related("site").order_by("number"))
    assert len(parts) == 3
    for p in parts:
        assert p.site == site and p.batch_job_id.isdigit() and p.job_state == "done"
        assert p.batch_node == socket.gethostname() and p.job_attempts == 1
    # the same skim on the portal's workers, event for event
    on_portal = run_skim(
        actions.check_submit_skim(
            user=physicist,
            inputs=[actions.InputSpec(split_hzz, None)],
            selection=SELECTION,
            output_name="user.phys.on_portal",
            force=True,
        )
    )
    assert on_portal.state == "succeeded", on_portal.message
    assert on_site.events_written == on_portal.events_written > 0
    assert same_events(outputs(on_portal), outputs(on_site))
    # registered, verified, and where each part ran is on record
    files = list(on_site.output_dataset.files.order_by("lfn"))
    assert [f.adler32 for f in files] == [p.output_adler32 for p in parts]
    record = on_site.provenance
    ran = [o["ran_on"] for o in record.outputs]
    assert [r["batch_job_id"] for r in ran] == [p.batch_job_id for p in parts]
    assert {r["site"] for r in ran} == {"SLURM-A"}
    status = subprocess.run(
        [sys.executable, "-m", "dss.cli", "--url", portal, "--token", api_token(physicist)]
        + ["skim", "status", str(on_site.pk)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert f"[SLURM-A job {parts[0].batch_job_id} on {socket.gethostname()}]" in status.stdout
    assert "runs on    SLURM-A" in status.stdout
    assert record.workers == [socket.gethostname()]
    # the skim page shows where each part ran
    client.force_login(physicist)
    page = client.get(on_site.get_absolute_url()).content.decode()
    for p in parts:
        assert f'job <span class="mono">{p.batch_job_id}</span> (done)' in page
    assert "site SLURM-A" in page


def test_a_job_killed_with_scancel_is_resubmitted_and_the_skim_succeeds(
    portal, split_hzz, physicist, storage_root
):
    slurm_site("SLURM-A", storage_root)
    skim = submit(physicist, split_hzz, "user.phys.scancelled", "SLURM-A")
    first = submitted(skim)[0]

    subprocess.run(["scancel", first.batch_job_id], check=True, timeout=30)

    skim = drive(skim)
    assert skim.state == "succeeded", skim.message
    jobs = list(SiteJob.objects.filter(part=first).order_by("attempt"))
    assert [j.state for j in jobs] == ["lost", "done"]
    assert "CANCELLED" in jobs[0].message
    first.refresh_from_db()
    assert first.job_attempts == 2 and first.batch_job_id == jobs[1].batch_job_id
    assert skim.events_written == skim.events_selected


def test_a_site_set_to_broker_off_mid_skim_gets_no_new_jobs(
    portal, split_hzz, physicist, storage_root
):
    a = slurm_site("SLURM-A", storage_root)
    b = slurm_site("SLURM-B", storage_root)
    skim = submit(physicist, split_hzz, "user.phys.brokered", "auto")
    parts = submitted(skim)
    on_a = [p for p in parts if p.site_id == a.pk]
    assert on_a and any(p.site_id == b.pk for p in parts)  # the broker spreads the parts

    pilot_actions.do_set_site_status(a, SiteStatus.BROKER_OFF, "maintenance")
    changed = Site.objects.get(pk=a.pk).status_changed_at
    for p in on_a:  # A's jobs are lost: their parts need new jobs
        subprocess.run(["scancel", p.batch_job_id], check=True, timeout=30)

    skim = drive(skim)
    assert skim.state == "succeeded", skim.message
    assert not SiteJob.objects.filter(site=a, created_at__gt=changed).exists()
    for p in on_a:
        p.refresh_from_db()
        assert p.site_id == b.pk and p.job_attempts == 2 and p.job_state == "done"


def test_jobs_that_cannot_reach_the_portal_fail_saying_so_and_the_site_goes_broker_off(
    portal, split_hzz, physicist, storage_root, settings
):
    site = slurm_site("SLURM-A", storage_root)
    # a portal address nothing listens on
    settings.DSS_PORTAL_URL = f"http://127.0.0.1:{free_port()}"
    settings.DSS_SITE_JOB_ATTEMPTS = 1
    skim = drive(submit(physicist, split_hzz, "user.phys.unreachable", "SLURM-A"))

    assert skim.state == "failed"
    for job in SiteJob.objects.filter(part__skim=skim):
        assert job.state == "failed"
        assert "without a report: dss-skim-job: cannot reach the portal at http://127.0.0.1:" in (
            job.message
        ), job.message
    part = skim.parts.first()
    assert part.message.startswith("gave up after 1 batch job(s); the last: the batch job ended")
    site.refresh_from_db()
    assert site.status == "broker-off"
    change = site.status_changes.first()
    assert change.by == "skim jobs" and "its last 3 skim jobs failed" in change.reason


@pytest.fixture(scope="module")
def xrootd_server():
    try:
        server = start_xrootd()
    except XRootDUnavailable as exc:
        require(False, f"XRootD server ({exc})")
        raise
    yield server
    server.close()


def test_a_site_configured_to_read_remotely_reads_its_inputs_over_root(
    portal, storage_root, physicist, settings, xrootd_server
):
    from dmu import actions as dmu_actions
    from dmu.transfer import copy

    xrd = dmu_actions.do_add_storage_element(
        "XRD", xrootd_server.se_url(f"sites-{uuid.uuid4().hex[:8]}"), "XRootD on loopback"
    )
    dmu_actions.do_add_storage_element("LOCAL", storage_root.as_uri(), "disk", user_writable=True)
    rels = write_split(storage_root, 2)
    for rel in rels:
        copy((storage_root / rel).as_uri(), (xrd.endpoint(), rel))
    dataset, _ = dmu_actions.check_register_dataset("demo.hzz_xrd", xrd, rels)
    site = pilot_actions.do_add_site(
        "SLURM-X",
        "slurm",
        submit_params={"time_limit": "00:10:00"},
        requirements={"paths": [str(storage_root)], "reach": ["XRD"]},
        status="online",
    )
    Pilot.objects.create(
        site=site, state=PilotState.REPORTED, verdict=Verdict.PASSED, finished_at=timezone.now()
    )
    settings.DSS_SITE_REMOTE_READ = ["SLURM-X"]

    skim = drive(submit(physicist, dataset, "user.phys.remote", "SLURM-X"))

    assert skim.state == "succeeded", skim.message
    for job in SiteJob.objects.filter(part__skim=skim):
        (read,) = job.report["inputs"]
        assert read["read"] == "remote" and read["url"].startswith("root://127.0.0.1:")
    assert skim.events_written == skim.events_selected > 0
