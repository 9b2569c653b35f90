"""Site status: periodic pilots move an online site to broker-off and back after three good
ones in a row; admins set any status by hand with a reason; the schedule sends the pilots."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pilotchecker import actions, pilot, tasks
from pilotchecker.batch import FAILED
from pilotchecker.models import Site
from tests.pilotchecker.conftest import a_report, body, send, token_of

pytestmark = pytest.mark.django_db


def periodic(site, verdict: str):
    """One periodic pilot that reports ``verdict``."""
    (p,) = send(site, periodic=True)
    actions.check_receive_report(p.pk, token_of(p), body(a_report(verdict)))
    site.refresh_from_db()
    return p


def history(site) -> list[tuple[str, str, str]]:
    return [(c.old_status, c.new_status, c.by) for c in site.status_changes.order_by("at", "id")]


def test_a_failed_periodic_pilot_moves_an_online_site_to_broker_off(fake_batch, site):
    p = periodic(site, "failed")

    assert site.status == "broker-off" and not site.can_take_skims
    assert site.status_reason == (
        f"periodic pilot #{p.pk} failed its checks: cvmfs: /cvmfs/atlas.cern.ch is not mounted: "
        "/cvmfs does not exist on this node"
    )
    change = site.status_changes.first()
    assert (change.old_status, change.new_status, change.by, change.pilot) == (
        "online",
        "broker-off",
        "schedule",
        p,
    )


def test_the_site_comes_back_online_only_after_three_good_pilots_in_a_row(fake_batch, site):
    periodic(site, "failed")

    periodic(site, "passed")
    periodic(site, "passed")
    assert site.status == "broker-off"
    periodic(site, "warning")  # not good: the count starts again
    periodic(site, "passed")
    periodic(site, "passed")
    assert site.status == "broker-off"
    last = periodic(site, "passed")

    assert site.status == "online"
    assert site.status_reason.startswith("3 periodic pilots passed in a row")
    assert f"#{last.pk})" in site.status_reason
    assert history(site) == [
        ("", "online", "command line"),
        ("online", "broker-off", "schedule"),
        ("broker-off", "online", "schedule"),
    ]


def test_a_warning_keeps_an_online_site_online(fake_batch, site):
    periodic(site, "warning")

    assert site.status == "online"


def test_a_periodic_pilot_that_ends_without_a_report_moves_the_site_to_broker_off(fake_batch, site):
    (p,) = send(site, periodic=True)
    fake_batch.end(
        p.batch_job_id, stderr="Segmentation fault\n", state=FAILED, raw="FAILED", exit_code=139
    )

    actions.do_poll_pilots()

    site.refresh_from_db()
    assert site.status == "broker-off"
    assert f"periodic pilot #{p.pk} ended without a report" in site.status_reason


def test_a_lost_periodic_pilot_moves_the_site_to_broker_off(fake_batch, site):
    (p,) = send(site, periodic=True)

    actions.do_mark_lost(timezone.now() + timedelta(hours=1))

    site.refresh_from_db()
    assert site.status == "broker-off" and "was lost: no report within 30 min" in site.status_reason


def test_pilots_sent_by_hand_never_change_the_status(fake_batch, site, siteadmin):
    (p,) = send(site, user=siteadmin)
    actions.check_receive_report(p.pk, token_of(p), body(a_report("failed")))

    site.refresh_from_db()
    assert site.status == "online"


@pytest.mark.parametrize("status", ["test", "offline"])
def test_sites_in_test_or_offline_are_left_to_their_admins(fake_batch, site, siteadmin, status):
    actions.do_set_site_status(site, status, "downtime GGUS-123", user=siteadmin)

    periodic(site, "failed")
    for _ in range(3):
        periodic(site, "passed")

    assert site.status == status and site.status_reason == "downtime GGUS-123"


def test_an_admin_sets_the_status_by_hand_and_the_reason_is_kept(site, siteadmin):
    change = actions.do_set_site_status(
        site, "offline", "  power cut in the machine room ", user=siteadmin
    )

    site.refresh_from_db()
    assert (site.status, site.status_reason) == ("offline", "power cut in the machine room")
    assert (change.old_status, change.new_status, change.by, change.changed_by) == (
        "online",
        "offline",
        "admin1",
        siteadmin,
    )
    assert site.status_changes.first().reason == "power cut in the machine room"


def test_a_status_without_a_reason_or_of_an_unknown_kind_is_refused(site, siteadmin):
    with pytest.raises(actions.InvalidInput) as err:
        actions.do_set_site_status(site, "offline", "  ", user=siteadmin)
    assert err.value.where == "reason"
    with pytest.raises(actions.InvalidInput) as err:
        actions.do_set_site_status(site, "maybe", "why not", user=siteadmin)
    assert err.value.where == "status"
    site.refresh_from_db()
    assert site.status == "online" and site.status_changes.count() == 1


def test_the_schedule_sends_a_periodic_pilot_when_the_interval_has_passed(
    site, django_capture_on_commit_callbacks
):
    quiet = actions.do_add_site("QUIET", "local", status="online")  # no schedule
    off = actions.do_add_site("DOWN", "local", status="offline", pilot_interval_minutes=5)
    now = timezone.now()

    with django_capture_on_commit_callbacks(execute=False):
        first = actions.do_schedule_pilots(now)
        again = actions.do_schedule_pilots(now + timedelta(minutes=59))
        # beat's minute is never exact: a few seconds early is on time
        later = actions.do_schedule_pilots(now + timedelta(minutes=60) - timedelta(seconds=3))

    assert (
        [p.site for p in first] == [site] and first[0].periodic and first[0].sent_by == "schedule"
    )
    assert again == [] and [p.site for p in later] == [site]
    assert not quiet.pilots.exists() and not off.pilots.exists()


def test_the_periodic_tasks_run_the_actions(fake_batch, site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        tasks.schedule_pilots()
    (p,) = site.pilots.all()
    tasks.submit_pilot(p.pk)
    p.refresh_from_db()
    fake_batch.end(p.batch_job_id, stdout=pilot.format_report(a_report("failed")))

    tasks.poll_pilots()

    site.refresh_from_db()
    assert site.status == "broker-off"


def test_pass_rates_over_time(fake_batch, site):
    for verdict in ("passed", "passed", "failed", "warning"):
        periodic(site, verdict)

    (overview,) = [s for s in actions.sites_overview() if s.name == site.name]
    assert [p.outcome for p in overview.recent] == ["passed", "passed", "failed", "warning"]
    assert overview.latest.outcome == "warning" and overview.pass_rate == 50
    today = actions.daily_pass_rates(site, days=3)[-1]
    assert (today["pilots"], today["passed"], today["rate"]) == (4, 2, 50)
    assert [s.name for s in actions.sites_taking_skims()] == []  # broker-off after the failure
    Site.objects.filter(pk=site.pk).update(status="online")
    assert [s.name for s in actions.sites_taking_skims()] == []  # its latest pilot warned
    periodic(site, "passed")
    Site.objects.filter(pk=site.pk).update(status="online")
    assert [s.name for s in actions.sites_taking_skims()] == [site.name]


def test_the_overview_keeps_only_the_last_twenty_outcomes_per_site(fake_batch, site):
    for _ in range(22):
        periodic(site, "passed")

    (overview,) = actions.sites_overview()
    assert len(overview.recent) == 20 and overview.pass_rate == 100
