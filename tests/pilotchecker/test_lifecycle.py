"""A pilot's life through the batch system: submitted, queued, running, then reported, failed
to report, lost or cancelled. The batch system here is a stand-in the test drives; the real
local and Slurm ones are in test_end_to_end.py."""

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from pilotchecker import actions, pilot, tasks
from pilotchecker.batch import FAILED, TIMEOUT, BatchError
from pilotchecker.models import Pilot
from tests.pilotchecker.conftest import a_report, send, token_of

pytestmark = pytest.mark.django_db


def test_submitting_creates_pilots_and_queues_them_after_the_commit(
    site, siteadmin, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        pilots = actions.do_submit_pilots(site, 3, user=siteadmin)

    assert len(callbacks) == 3
    assert [p.state for p in pilots] == ["submitted"] * 3
    assert pilots[0].owner == siteadmin and not pilots[0].periodic
    assert pilots[0].requirements["min_cores"] == 1
    assert pilots[0].requirements["min_work_disk_gb"] == 2.0  # the pilot's default


@pytest.mark.parametrize("n", [0, -1, 51, "2", True])
def test_it_refuses_a_number_of_pilots_out_of_range(site, n):
    with pytest.raises(actions.InvalidInput) as err:
        actions.do_submit_pilots(site, n)
    assert err.value.where == "n"
    assert not Pilot.objects.exists()


def test_the_task_writes_the_pilot_and_its_configuration_then_submits(fake_batch, site):
    (p,) = send(site)

    workdir = Path(p.workdir)
    assert workdir.parent == Path(fake_batch.jobs[p.batch_job_id]["workdir"]).parent
    job = fake_batch.jobs[p.batch_job_id]
    assert job["script"] == workdir / "pilot.py"
    assert (workdir / "pilot.py").read_text() == Path(pilot.__file__).read_text()
    assert job["args"] == ["--config", str(workdir / "pilot.json")]
    assert job["job_name"] == f"dss-pilot-{p.pk}"
    assert job["time_limit"] == site.pilot_timeout_minutes * 60
    assert job["env"] == {"DSS_PILOT_ID": str(p.pk)}
    config = json.loads((workdir / "pilot.json").read_text())
    assert config["report_url"] == f"http://portal.example:8000/api/pilots/{p.pk}/report/"
    assert config["ping_url"] == "http://portal.example:8000/api/ping/"
    assert config["min_cores"] == 1 and config["token"] == token_of(p)
    assert pilot.normalize_config(config)[1] == []  # the pilot accepts every key
    assert stat.S_IMODE((workdir / "pilot.json").stat().st_mode) == 0o600
    assert p.state == "queued" and p.submitted_at is not None
    assert "batch_submitted" in [e.kind for e in p.events.all()]


def test_a_second_run_of_the_task_submits_nothing(fake_batch, site):
    (p,) = send(site)

    tasks.submit_pilot(p.pk)
    tasks.submit_pilot(987654)  # a pilot that no longer exists

    assert len(fake_batch.jobs) == 1


def test_polling_follows_the_batch_system_and_keeps_its_view(fake_batch, site):
    (p,) = send(site)

    actions.do_poll_pilots()
    p.refresh_from_db()
    assert (p.state, p.batch_raw_state, p.batch_reason) == ("queued", "PENDING", "Priority")

    fake_batch.run(p.batch_job_id)
    actions.do_poll_pilots()
    p.refresh_from_db()
    assert (p.state, p.batch_state) == ("running", "running") and p.started_at is not None


def test_a_posted_report_then_the_job_end_keeps_both_views(fake_batch, site):
    from rest_framework.test import APIClient

    (p,) = send(site)
    fake_batch.run(p.batch_job_id)
    actions.do_poll_pilots()
    r = APIClient().post(
        f"/api/pilots/{p.pk}/report/",
        json.dumps(a_report("passed")),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Pilot {token_of(p)}",
    )
    assert r.status_code == 201
    fake_batch.end(p.batch_job_id, stdout="the report\n", stderr="dss-pilot: report accepted\n")

    actions.do_poll_pilots()

    p.refresh_from_db()
    assert (p.state, p.verdict, p.report_source) == ("reported", "passed", "post")
    assert (p.batch_raw_state, p.batch_exit_code, p.batch_done) == ("COMPLETED", 0, True)
    assert p.stderr_tail == "dss-pilot: report accepted\n" and p.is_settled
    assert actions.do_poll_pilots() == 0  # nothing left to ask about


def test_a_report_printed_but_never_posted_is_recovered_from_the_output(fake_batch, site):
    (p,) = send(site)
    fake_batch.end(
        p.batch_job_id,
        stdout="noise\n" + pilot.format_report(a_report("failed")),
        stderr="dss-pilot: report not delivered after 5 attempt(s): connection refused\n",
        state=FAILED,
        raw="FAILED",
        exit_code=4,
    )

    actions.do_poll_pilots()

    p.refresh_from_db()
    assert (p.state, p.verdict, p.report_source) == ("reported", "failed", "output file")
    assert p.report["checks"][1]["code"] == "cvmfs_not_mounted"
    assert p.token_used_at is not None  # a late post is refused


def test_a_pilot_that_crashes_before_reporting_shows_its_error_log(fake_batch, site, siteadmin):
    (p,) = send(site)
    traceback = 'Traceback (most recent call last):\n  File "pilot.py", line 1\nMemoryError\n'
    fake_batch.end(p.batch_job_id, stderr=traceback, state=FAILED, raw="FAILED", exit_code=1)

    actions.do_poll_pilots()

    p.refresh_from_db()
    assert p.state == "failed" and p.verdict == "" and p.report is None
    assert p.message.startswith("the batch job ended (FAILED, exit code 1) without a report")
    assert p.stderr_tail == traceback
    from django.test import Client

    c = Client()
    c.force_login(siteadmin)
    html = c.get(f"/pilots/{p.pk}/").content.decode()
    assert "MemoryError" in html and "Error log" in html and "without a report" in html
    assert 'hx-trigger="every 2s"' not in html  # settled: the page stops refreshing


def test_a_job_killed_at_its_wall_time_fails_to_report(fake_batch, site):
    (p,) = send(site)
    fake_batch.end(p.batch_job_id, state=TIMEOUT, raw="TIMEOUT", exit_code=None)

    actions.do_poll_pilots()

    p.refresh_from_db()
    assert p.state == "failed" and "TIMEOUT" in p.message


def test_a_batch_system_that_cannot_answer_loses_nothing(fake_batch, site, monkeypatch):
    (p,) = send(site)

    def down(job_ids):
        raise BatchError("squeue failed: Unable to contact slurm controller", transient=True)

    monkeypatch.setattr(fake_batch, "status", down)
    assert actions.do_poll_pilots() == 0
    p.refresh_from_db()
    assert p.state == "queued"


def test_a_pilot_without_a_report_in_time_is_lost_and_its_job_cancelled(fake_batch, site):
    (p,) = send(site)
    fake_batch.run(p.batch_job_id)
    actions.do_poll_pilots()

    assert actions.do_mark_lost(timezone.now() + timedelta(minutes=29)) == []
    lost = actions.do_mark_lost(timezone.now() + timedelta(minutes=31))

    assert [x.pk for x in lost] == [p.pk]
    p.refresh_from_db()
    assert (
        p.state == "lost"
        and p.message == "no report within 30 min; the batch system last said RUNNING"
    )
    assert fake_batch.cancelled == [p.batch_job_id]


def test_cancelling_stops_the_batch_job(fake_batch, site, siteadmin):
    (p,) = send(site)

    actions.do_cancel_pilot(p, user=siteadmin)

    p.refresh_from_db()
    assert p.state == "cancelled" and p.message == "cancelled by admin1"
    assert fake_batch.cancelled == [p.batch_job_id]
    with pytest.raises(actions.Conflict):
        actions.do_cancel_pilot(p, user=siteadmin)


def test_a_pilot_cancelled_before_the_worker_took_it_is_never_submitted(fake_batch, site):
    (p,) = actions.do_submit_pilots(site, 1)
    actions.do_cancel_pilot(p)

    tasks.submit_pilot(p.pk)

    assert fake_batch.jobs == {}


def test_a_refused_submission_fails_the_pilot_with_the_reason(fake_batch, site):
    fake_batch.refuse = BatchError("sbatch failed: invalid partition specified: nope")

    (p,) = send(site)

    assert p.state == "failed" and p.batch_job_id == ""
    assert "invalid partition specified: nope" in p.message


def test_a_transient_refusal_is_retried_by_the_task(fake_batch, site):
    fake_batch.refuse = BatchError("Unable to contact slurm controller", transient=True)
    (p,) = actions.do_submit_pilots(site, 1)

    with pytest.raises(Retry):
        tasks.submit_pilot.apply(args=[p.pk], throw=True)

    p.refresh_from_db()
    assert p.state == "submitted" and p.submitted_at is None  # free for the retry
    fake_batch.refuse = None
    tasks.submit_pilot(p.pk)
    p.refresh_from_db()
    assert p.batch_job_id in fake_batch.jobs


def test_on_its_last_attempt_a_transient_refusal_fails_the_pilot(fake_batch, site):
    fake_batch.refuse = BatchError("Unable to contact slurm controller", transient=True)
    (p,) = actions.do_submit_pilots(site, 1)

    actions.do_send_pilot(p, last_attempt=True)

    p.refresh_from_db()
    assert p.state == "failed" and "Unable to contact" in p.message


def test_the_management_command_submits_pilots(site, capsys, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("submit_pilots", "UKI-TEST", "-n", "2")

    out = capsys.readouterr().out
    assert out.count("submitted to UKI-TEST") == 2 and len(callbacks) == 2
    assert {p.sent_by for p in Pilot.objects.all()} == {"command line"}


def test_the_management_command_names_an_unknown_site(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as err:
        call_command("submit_pilots", "NOPE")
    assert "no site named 'NOPE'" in str(err.value) and err.value.returncode == 3


def test_the_management_command_waits_and_exits_1_unless_every_pilot_passed(
    site, capsys, django_capture_on_commit_callbacks
):
    from django.core.management import CommandError, call_command

    with django_capture_on_commit_callbacks(execute=False), pytest.raises(CommandError) as err:
        call_command("submit_pilots", "UKI-TEST", "--wait", "0.5")

    assert "still submitted after 0.5 s" in capsys.readouterr().out
    assert err.value.returncode == 1 and "1 of 1 pilot(s) did not pass" in str(err.value)
