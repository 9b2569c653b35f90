"""The PilotChecker pages: who may see and do what, and that each page is complete (a title,
one h1, a label for every form control)."""

from html.parser import HTMLParser

import pytest
from django.test import Client

from pilotchecker import actions
from pilotchecker.models import Pilot, Site
from tests.pilotchecker.conftest import a_report, body, send, token_of

pytestmark = pytest.mark.django_db


class PageShape(HTMLParser):
    """Collects the title, the h1 count, form controls and the labels' targets."""

    def __init__(self):
        super().__init__()
        self.title, self.in_title, self.h1 = "", False, 0
        self.controls: list[str] = []
        self.labels: set[str] = set()
        self.aria_labelled: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title" and not self.title:  # the page's, not an SVG bar's tooltip
            self.in_title = True
        elif tag == "h1":
            self.h1 += 1
        elif tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") not in (
            "hidden",
            "submit",
        ):
            if a.get("aria-label"):
                self.aria_labelled.append(a.get("name", ""))
            else:
                self.controls.append(a.get("id") or f"<{tag} name={a.get('name')} without id>")

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.in_title:
            self.title += data


def assert_complete(html: str) -> PageShape:
    shape = PageShape()
    shape.feed(html)
    assert shape.title.strip().endswith("· DSS") and len(shape.title.strip()) > 6
    assert shape.h1 == 1
    unlabelled = [c for c in shape.controls if c not in shape.labels]
    assert not unlabelled, f"form controls without a label: {unlabelled}"
    return shape


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def history(fake_batch, site, siteadmin):
    """A site with a passed, a failed (periodic) and a still running pilot."""
    ok, bad, running = send(site, 2, user=siteadmin) + send(site, periodic=True)
    actions.check_receive_report(ok.pk, token_of(ok), body(a_report("passed")))
    actions.check_receive_report(bad.pk, token_of(bad), body(a_report("failed")))
    fake_batch.run(running.batch_job_id)
    actions.do_poll_pilots()
    actions.check_receive_report(running.pk, token_of(running), body(a_report("failed")))
    (again,) = send(site, periodic=True)
    fake_batch.run(again.batch_job_id)
    actions.do_poll_pilots()
    return ok, bad, running, again


PAGES = ["/sites/", "/sites/UKI-TEST/", "/pilots/{pk}/"]
ADMIN_PAGES = ["/sites/new/", "/sites/UKI-TEST/edit/", "/pilots/submit/"]


@pytest.mark.parametrize("url", PAGES + ADMIN_PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(history, url):
    r = Client().get(url.format(pk=history[0].pk))
    assert r.status_code == 302 and r.url.startswith("/login/?next=")


@pytest.mark.parametrize("url", PAGES)
def test_everyone_logged_in_reads_the_pages(history, physicist, url):
    r = logged_in(physicist).get(url.format(pk=history[0].pk))
    assert r.status_code == 200
    assert_complete(r.content.decode())


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_the_admin_pages_are_complete(history, siteadmin, url):
    r = logged_in(siteadmin).get(url)
    assert r.status_code == 200
    assert_complete(r.content.decode())


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_a_physicist_cannot_open_the_admin_forms(history, physicist, url):
    assert logged_in(physicist).get(url).status_code == 403


def test_a_physicist_cannot_submit_pilots_cancel_them_or_set_a_status(
    site, physicist, operator, django_capture_on_commit_callbacks
):
    (p,) = actions.do_submit_pilots(site, 1)
    for user in (physicist, operator):
        c = logged_in(user)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert c.post("/pilots/submit/", {"site": site.name, "n": 1}).status_code == 403
        assert c.post(f"/pilots/{p.pk}/cancel/").status_code == 403
        r = c.post(f"/sites/{site.name}/status/", {"status": "offline", "reason": "x"})
        assert r.status_code == 403
        assert callbacks == []
    assert Pilot.objects.count() == 1 and Site.objects.get().status == "online"
    assert not physicist.has_perm("pilotchecker.add_pilot")


def test_an_admin_submits_pilots_from_the_form(site, siteadmin, django_capture_on_commit_callbacks):
    c = logged_in(siteadmin)
    html = c.get(f"/pilots/submit/?site={site.name}").content.decode()
    assert f'<option value="{site.name}" selected>' in html and "Submit pilots</button>" in html

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        one = c.post("/pilots/submit/", {"site": site.name, "n": 1})
        three = c.post("/pilots/submit/", {"site": site.name, "n": 3})

    p = Pilot.objects.order_by("pk").first()
    assert one.status_code == 302 and one.url == f"/pilots/{p.pk}/"
    assert three.status_code == 302 and three.url == f"/sites/{site.name}/"
    assert len(callbacks) == 4 and Pilot.objects.filter(owner=siteadmin).count() == 4
    r = c.post("/pilots/submit/", {"site": site.name, "n": 500})
    assert r.status_code == 200 and "less than or equal to 50" in r.content.decode()


def test_the_overview_shows_status_verdicts_pass_rates_and_who_takes_skims(history, physicist):
    other = actions.do_add_site("UKI-OTHER", "local", status="online")
    actions.do_add_site("UKI-UNTRIED", "local", status="online")
    (ok,) = send(other, user=physicist)
    actions.check_receive_report(ok.pk, token_of(ok), body(a_report("passed")))
    Site.objects.filter(name="UKI-OTHER").update(status="online")
    html = logged_in(physicist).get("/sites/").content.decode()

    assert "Can take skims now" in html
    takes = html[html.index("Can take skims now") : html.index("</section>")]
    assert "UKI-OTHER" in takes and "UKI-TEST" not in takes  # broker-off after a failure
    assert "UKI-UNTRIED" not in takes  # online, but no pilot has vouched for it yet
    assert Site.objects.get(name="UKI-OTHER").can_take_skims
    assert not Site.objects.get(name="UKI-UNTRIED").can_take_skims
    assert 'class="badge state-broker-off"' in html
    assert '<svg class="strip"' in html and 'aria-label="Last 3 pilots: 1 passed, 2 failed"' in html
    assert "33%" in html  # 1 of 3 passed
    assert "1 open" in html


def test_the_site_page_shows_history_status_changes_and_pilots(history, siteadmin):
    ok, bad, running, again = history
    html = logged_in(siteadmin).get("/sites/UKI-TEST/").content.decode()

    assert "Status history" in html and f"periodic pilot #{running.pk} failed its checks" in html
    assert "schedule" in html and "cvmfs" in html
    assert f'href="/pilots/{ok.pk}/"' in html and f'href="/pilots/{again.pk}/"' in html
    assert '<svg class="daily"' in html
    assert 'hx-trigger="every 2s"' in html  # a pilot is still running
    r = logged_in(siteadmin).get("/sites/UKI-TEST/", HTTP_HX_REQUEST="true")
    assert "<html" not in r.content.decode() and 'id="site-pilots"' in r.content.decode()
    assert "HX-Request" in r["Vary"]


def test_an_admin_sets_the_status_from_the_site_page(site, siteadmin):
    c = logged_in(siteadmin)

    r = c.post(
        f"/sites/{site.name}/status/", {"status": "offline", "reason": "disk array replaced"}
    )
    assert r.status_code == 302
    site.refresh_from_db()
    assert (site.status, site.status_reason) == ("offline", "disk array replaced")
    assert "disk array replaced" in c.get(f"/sites/{site.name}/").content.decode()

    c.post(f"/sites/{site.name}/status/", {"status": "online", "reason": ""})
    site.refresh_from_db()
    assert site.status == "offline"


def test_the_pilot_page_shows_checks_facts_and_the_batch_view(history, siteadmin):
    ok, bad, running, again = history
    c = logged_in(siteadmin)

    html = c.get(f"/pilots/{bad.pk}/").content.decode()
    assert "cvmfs_not_mounted" in html and "/cvmfs/atlas.cern.ch is not mounted" in html
    assert 'class="badge state-failed">fail<' in html and 'class="badge state-passed">pass<' in html
    assert "wn042" in html and "x86_64-v3" in html and "SLURM_JOB_ID" in html
    assert bad.batch_job_id in html

    live = c.get(f"/pilots/{again.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in live and "RUNNING" in live
    r = c.get(f"/pilots/{again.pk}/", HTTP_HX_REQUEST="true")
    assert "<html" not in r.content.decode() and 'id="pilot-live"' in r.content.decode()
    assert "HX-Request" in r["Vary"]  # the back button must not show the fragment


def test_an_admin_cancels_a_pilot_from_its_page(history, siteadmin, fake_batch):
    again = history[3]
    c = logged_in(siteadmin)
    assert "Cancel pilot" in c.get(f"/pilots/{again.pk}/").content.decode()

    r = c.post(f"/pilots/{again.pk}/cancel/")

    assert r.status_code == 302
    again.refresh_from_db()
    assert again.state == "cancelled" and fake_batch.cancelled == [again.batch_job_id]
    assert "Cancel pilot" not in c.get(f"/pilots/{again.pk}/").content.decode()


def test_every_model_is_in_the_admin(siteadmin, admin_client, history):
    for url in ("site", "pilot", "sitestatuschange"):
        assert admin_client.get(f"/admin/pilotchecker/{url}/").status_code == 200
    assert admin_client.get(f"/admin/pilotchecker/pilot/{history[0].pk}/change/").status_code == 200


def test_a_pilot_that_reported_before_any_poll_says_so(fake_batch, site, siteadmin):
    (quick,) = send(site, user=siteadmin)
    report = a_report("passed")
    nothing = "no CVMFS repositories required"
    report["checks"] = [
        *report["checks"],
        {"name": "cvmfs", "status": "pass", "code": "ok", "message": nothing, "threshold": []},
    ]
    actions.check_receive_report(quick.pk, token_of(quick), body(report))
    html = logged_in(siteadmin).get(f"/pilots/{quick.pk}/").content.decode()
    assert "not asked: the pilot reported first" in html
    assert "not asked yet" not in html
    checks = html[html.index('id="checks-h"') :]
    checks = checks[: checks.index("</section>")]
    assert nothing in checks and "[]" not in checks  # a requirement of nothing reads "none"


def test_check_values_read_as_words():
    from pilotchecker.templatetags.pilots import short_value

    assert short_value(None) == "–"
    assert short_value([]) == "none"
    assert short_value(["atlas.cern.ch", "sft.cern.ch"]) == "atlas.cern.ch, sft.cern.ch"
    assert short_value({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert short_value(2.5) == "2.5"
