"""Skims on sites without a batch system: the broker's rules, submission through a stand-in
adapter, and the report endpoint's refusals (the real Slurm runs are in
test_site_jobs_slurm.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from dss.errors import Conflict, InvalidInput
from pilotchecker import actions as pilot_actions
from pilotchecker.models import Pilot, PilotState, Site, Verdict
from skims import actions, brokerage, sitejobs
from skims.models import SiteJob, SkimJob
from skims.tasks import plan_skim
from tests.pilotchecker.conftest import FakeBatch

pytestmark = pytest.mark.django_db


def pilot(site: Site, verdict: str = Verdict.PASSED) -> Pilot:
    return Pilot.objects.create(
        site=site, state=PilotState.REPORTED, verdict=verdict, finished_at=timezone.now()
    )


def a_site(name: str, storage_root, *, status="online", verdict=Verdict.PASSED, paths=None):
    site = pilot_actions.do_add_site(
        name,
        "local",
        requirements={"paths": [str(storage_root)] if paths is None else paths},
        status=status,
    )
    if verdict:
        pilot(site, verdict)
    return site


def needed(dataset, se):
    return brokerage.storage_needed(dataset.files.all(), se)


def test_the_broker_takes_an_online_site_whose_pilot_passed_and_that_reaches_the_storage(
    split_hzz, local_se, storage_root
):
    good = a_site("GOOD", storage_root)
    a_site("TESTING", storage_root, status="test")
    a_site("FAILING", storage_root, verdict=Verdict.FAILED)
    a_site("NO-PILOT", storage_root, verdict=None)
    a_site("ELSEWHERE", storage_root, paths=["/data/other"])

    fit, refused = brokerage.eligible_sites(needed(split_hzz, local_se))

    assert fit == [good]
    assert sorted(refused) == [
        "ELSEWHERE's pilots do not check that its nodes reach LOCAL (a network storage "
        "element must be in its 'reach' requirements, a local one under its 'paths')",
        "FAILING's latest pilot did not pass (or it has none)",
        "NO-PILOT's latest pilot did not pass (or it has none)",
        "TESTING is test: site added",
    ]


def test_a_later_passed_pilot_counts_and_a_broker_off_site_is_refused(
    split_hzz, local_se, storage_root
):
    site = a_site("S", storage_root, verdict=Verdict.FAILED)
    pilot(site, Verdict.PASSED)
    assert brokerage.choose_site(needed(split_hzz, local_se)) == site

    pilot_actions.do_set_site_status(site, "broker-off", "its disk is full")
    with pytest.raises(brokerage.NoSite) as e:
        brokerage.choose_site(needed(split_hzz, local_se), named=Site.objects.get(pk=site.pk))
    assert "S is broker-off: its disk is full" in e.value.message


def test_a_skim_for_sites_is_refused_when_no_site_can_take_it(split_hzz, physicist, storage_root):
    a_site("FAILING", storage_root, verdict=Verdict.FAILED)
    with pytest.raises(Conflict) as e:
        actions.check_submit_skim(
            user=physicist,
            inputs=[actions.InputSpec(split_hzz, None)],
            selection="n_muon >= 2",
            output_name="user.phys.nowhere",
            run_on="auto",
        )
    assert e.value.message.startswith("no site can take skim jobs now (FAILING's latest pilot")
    with pytest.raises(InvalidInput) as e:
        actions.check_submit_skim(
            user=physicist,
            inputs=[actions.InputSpec(split_hzz, None)],
            selection="n_muon >= 2",
            output_name="user.phys.nowhere",
            run_on="site",
            site="NO-SUCH-SITE",
        )
    assert e.value.where == "site"


@pytest.fixture
def fake_batch(monkeypatch, tmp_path, settings):
    settings.PILOT_DIR = tmp_path / "pilots"
    settings.DSS_PORTAL_URL = "http://portal.example:8000"
    fake = FakeBatch()
    monkeypatch.setattr(pilot_actions, "adapter_for", lambda site: fake)
    return fake


@pytest.fixture
def job(fake_batch, split_hzz, physicist, storage_root) -> SiteJob:
    """The first part's batch job of a skim on a site, submitted to the stand-in adapter."""
    a_site("SITE", storage_root)
    skim = actions.check_submit_skim(
        user=physicist,
        inputs=[actions.InputSpec(split_hzz, None)],
        selection="n_muon >= 2",
        output_name="user.phys.on_site",
        run_on="site",
        site="SITE",
    )
    plan_skim(skim.pk)
    part = skim.parts.order_by("number").first()
    return sitejobs.do_submit_site_job(part.pk)


def token_of(job: SiteJob) -> str:
    return json.loads((Path(job.workdir) / "job.json").read_text())["token"]


def post(client, job: SiteJob, body, token: str, scheme: str = "SkimJob"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"/api/skims/jobs/{job.pk}/report/",
        data,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"{scheme} {token}",
    )


def test_a_submitted_job_describes_its_part_and_runs_the_wrapper(job, fake_batch):
    spec = json.loads((Path(job.workdir) / "job.json").read_text())
    submitted = fake_batch.jobs[job.batch_job_id]
    assert submitted["args"] == ["--spec", str(Path(job.workdir) / "job.json")]
    assert "from skims.jobwrapper import main" in Path(submitted["script"]).read_text()
    assert spec["report_url"] == f"http://portal.example:8000/api/skims/jobs/{job.pk}/report/"
    assert spec["output"]["tag"] == job.output_tag and spec["read"] == "copy"
    assert [i["lfn"] for i in spec["inputs"]] == [job.part.input_file.lfn]
    job.part.refresh_from_db()
    assert (job.part.state, job.part.job_state, job.part.job_attempts) == ("running", "queued", 1)


def test_a_report_with_a_wrong_token_is_refused(client, job):
    answer = post(client, job, {"state": "failed", "node": "wn1", "reason": "x"}, "not-it")
    assert answer.status_code == 403
    assert "wrong or unknown job token" in answer.json()["detail"]
    no_scheme = post(client, job, {"state": "failed"}, token_of(job), scheme="Pilot")
    assert no_scheme.status_code == 403
    job.refresh_from_db()
    assert job.state == "queued" and job.token_used_at is None


BAD_REPORTS = [
    (b"{not json", "body"),
    ([1, 2], "body"),
    ({"state": "finished", "node": "wn1"}, "state"),
    ({"state": "failed", "node": ""}, "node"),
    ({"state": "failed", "node": "wn1"}, "reason"),
    ({"state": "done", "node": "wn1", "guid": "x"}, "guid"),
    (
        {"state": "done", "node": "wn1", "guid": "0" * 32, "events": -1, "bytes": 1},
        "events",
    ),
    (
        {
            "state": "done",
            "node": "wn1",
            "guid": "0" * 32,
            "events": 1,
            "bytes": 1,
            "adler32": "XYZ",
        },
        "adler32",
    ),
]


def test_a_report_that_is_not_a_report_is_a_400_naming_the_field(client, job):
    for body, where in BAD_REPORTS:
        answer = post(client, job, body, token_of(job))
        assert answer.status_code == 400, answer.content
        assert answer.json()["where"] == where
    job.refresh_from_db()
    assert job.token_used_at is None  # the token still works for a proper report


def test_a_failed_report_is_accepted_once_and_the_part_gets_another_job(client, job, fake_batch):
    token = token_of(job)
    answer = post(client, job, {"state": "failed", "node": "wn7", "reason": "disk full"}, token)
    assert answer.status_code == 201 and answer.json()["state"] == "failed"

    replay = post(client, job, {"state": "failed", "node": "wn7", "reason": "again"}, token)
    assert replay.status_code == 403 and "already used" in replay.json()["detail"]

    job.refresh_from_db()
    assert (job.state, job.message, job.node) == ("failed", "disk full", "wn7")
    part = job.part
    part.refresh_from_db()
    second = part.site_jobs.get(attempt=2)
    assert part.batch_job_id == second.batch_job_id and part.job_attempts == 2
    assert len(fake_batch.jobs) == 2


def test_a_done_report_whose_output_is_not_on_the_storage_fails_the_job(client, job):
    body = {
        "state": "done",
        "node": "wn1",
        "guid": "0" * 32,
        "events": 10,
        "bytes": 100,
        "adler32": "00000001",
        "copied": [],
    }
    answer = post(client, job, body, token_of(job))
    assert answer.status_code == 201 and answer.json()["state"] == "failed"
    assert "its output cannot be read back" in answer.json()["message"]
    job.part.refresh_from_db()
    assert job.part.state == "running" and job.part.job_attempts == 2  # resubmitted


def test_three_failed_jobs_in_a_row_take_the_site_out_of_production(client, job, settings):
    settings.DSS_SITE_JOB_ATTEMPTS = 5
    site = job.site
    current = job
    for n in range(3):
        post(
            client,
            current,
            {"state": "failed", "node": "wn1", "reason": f"bad {n}"},
            token_of(current),
        )
        current = current.part.site_jobs.order_by("-attempt").first()
    site.refresh_from_db()
    assert site.status == "broker-off"
    assert "its last 3 skim jobs failed" in site.status_reason and "bad 2" in site.status_reason
    # no new job goes there: the part fails, saying why
    part = job.part
    part.refresh_from_db()
    assert part.state == "failed" and "SITE is broker-off" in part.message


def test_a_physicist_chooses_a_site_in_the_form_and_the_page_shows_where_parts_run(
    client, fake_batch, split_hzz, physicist, storage_root
):
    a_site("SITE", storage_root)
    client.force_login(physicist)
    form = client.get("/skims/new/").content.decode()
    assert '<option value="SITE">site SITE</option>' in form
    answer = client.post(
        "/skims/new/",
        {
            "datasets": [split_hzz.name],
            "selection": "n_muon >= 2",
            "content": "all",
            "output_format": "root",
            "output_name": "user.phys.from_form",
            "failure_policy": "fail",
            "run_on": "SITE",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    skim = SkimJob.objects.get(output_name="user.phys.from_form")
    assert (skim.run_on, skim.site.name) == ("site", "SITE")
    plan_skim(skim.pk)
    sitejobs.do_poll_site_jobs()  # submits the waiting parts
    page = client.get(skim.get_absolute_url()).content.decode()
    assert "Runs on" in page and "Ran on" in page
    for p in skim.parts.all():
        assert f'job <span class="mono">{p.batch_job_id}</span> (queued)' in page


def test_an_input_that_is_bad_anywhere_fails_its_part_at_once_and_spares_the_site(
    client, job, fake_batch
):
    body = {
        "state": "failed",
        "node": "wn1",
        "reason": "hzz_0.root: cannot read basket of Muon_Px",
        "data_error": True,
    }
    assert post(client, job, body, token_of(job)).status_code == 201

    part = job.part
    part.refresh_from_db()
    assert part.state == "failed" and "cannot read basket" in part.message
    assert part.site_jobs.count() == 1 and len(fake_batch.jobs) == 1  # not resubmitted
    job.refresh_from_db()
    assert job.site_fault is False
    assert job.site.status_changes.filter(new_status="broker-off").count() == 0


def test_an_ended_jobs_work_directory_is_kept_a_while_then_removed(client, job, settings):
    workdir = Path(job.workdir)
    post(client, job, {"state": "failed", "node": "wn1", "reason": "scratch full"}, token_of(job))
    job.refresh_from_db()
    assert job.state == "failed" and workdir.is_dir()
    assert sitejobs.do_remove_old_workdirs() == 0  # ended just now: kept for a look
    later = timezone.now() + timedelta(days=settings.DSS_SITE_JOB_KEEP_DAYS, seconds=1)
    running = job.part.site_jobs.exclude(pk=job.pk).get()  # the part's next attempt
    assert sitejobs.do_remove_old_workdirs(later) == 1
    assert not workdir.exists() and Path(running.workdir).is_dir()
    job.refresh_from_db()
    assert job.workdir == "" and "scratch full" in job.message
