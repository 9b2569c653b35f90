"""The PilotChecker REST API: everyone logged in reads; the admin role changes sites and
sends pilots; errors are JSON naming the field."""

import pytest
from rest_framework.test import APIClient

from pilotchecker import actions, tasks
from pilotchecker.models import Pilot, Site
from tests.pilotchecker.conftest import a_report, body, send, token_of

pytestmark = pytest.mark.django_db


def api(user=None) -> APIClient:
    c = APIClient()
    if user is not None:
        c.force_authenticate(user)
    return c


def test_an_anonymous_client_gets_401(site):
    for url in ("/api/sites/", f"/api/sites/{site.name}/", "/api/pilots/"):
        assert api().get(url).status_code == 401


def test_everyone_logged_in_lists_sites_with_status_and_pass_rate(fake_batch, site, physicist):
    (p,) = send(site, periodic=True)
    actions.check_receive_report(p.pk, token_of(p), body(a_report("failed")))

    (s,) = api(physicist).get("/api/sites/").json()

    assert (s["name"], s["status"], s["can_take_skims"]) == ("UKI-TEST", "broker-off", False)
    assert s["latest_outcome"] == "failed" and s["recent_outcomes"] == ["failed"]
    assert s["pass_rate"] == 0 and s["requirements"] == {"min_cores": 1}
    detail = api(physicist).get("/api/sites/UKI-TEST/").json()
    assert [c["new_status"] for c in detail["status_changes"]] == ["broker-off", "online"]
    assert detail["status_changes"][0]["by"] == "schedule"
    assert api(physicist).get("/api/sites/NOPE/").status_code == 404


def test_an_admin_adds_a_site_and_bad_settings_come_back_as_400_naming_the_field(siteadmin):
    c = api(siteadmin)
    r = c.post(
        "/api/sites/",
        {
            "name": "UKI-API",
            "batch_system": "slurm",
            "submit_params": {"partition": "debug"},
            "requirements": {"min_cores": 2, "paths": ["/scratch"]},
            "pilot_interval_minutes": 30,
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert r.json()["status"] == "test" and r.json()["status_changes"][0]["by"] == "admin1"

    r = c.post(
        "/api/sites/",
        {"name": "UKI-BAD", "batch_system": "slurm", "requirements": {"min_cores": "two"}},
        format="json",
    )
    assert r.status_code == 400
    assert r.json() == {"error": "invalid", "detail": "must be an integer", "where": "min_cores"}
    r = c.post("/api/sites/", {"name": "UKI-BAD", "batch_system": "pbs"}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "batch_system"
    assert (
        c.post(
            "/api/sites/", {"name": "UKI-API", "batch_system": "local"}, format="json"
        ).status_code
        == 409
    )
    assert list(Site.objects.values_list("name", flat=True)) == ["UKI-API"]


def test_an_admin_changes_a_site_and_its_status(site, siteadmin):
    c = api(siteadmin)

    r = c.patch("/api/sites/UKI-TEST/", {"requirements": {"min_cores": 8}}, format="json")
    assert r.status_code == 200 and r.json()["requirements"] == {"min_cores": 8}
    r = c.patch("/api/sites/UKI-TEST/", {"requirements": {"min_cores": -8}}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "min_cores"
    r = c.patch("/api/sites/UKI-TEST/", {"status": "offline"}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "status"
    r = c.post(
        "/api/sites/UKI-TEST/status/", {"status": "offline", "reason": "cooling"}, format="json"
    )
    assert r.status_code == 200 and r.json()["by"] == "admin1"
    r = c.post("/api/sites/UKI-TEST/status/", {"status": "online"}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "reason"
    site.refresh_from_db()
    assert (site.status, site.status_reason, site.requirements) == (
        "offline",
        "cooling",
        {"min_cores": 8},
    )


def test_a_physicist_cannot_change_sites_or_send_pilots(fake_batch, site, physicist):
    (p,) = send(site)
    c = api(physicist)

    assert (
        c.post("/api/sites/", {"name": "X", "batch_system": "local"}, format="json").status_code
        == 403
    )
    assert c.patch("/api/sites/UKI-TEST/", {"description": "x"}, format="json").status_code == 403
    r = c.post("/api/sites/UKI-TEST/status/", {"status": "offline", "reason": "x"}, format="json")
    assert r.status_code == 403
    r = c.post("/api/pilots/", {"site": "UKI-TEST", "n": 1}, format="json")
    assert r.status_code == 403 and "admin role" in r.json()["detail"]
    assert c.post(f"/api/pilots/{p.pk}/cancel/").status_code == 403
    assert Pilot.objects.count() == 1 and Site.objects.get().status == "online"


def test_an_admin_sends_pilots_and_reads_them_back(
    fake_batch, site, siteadmin, django_capture_on_commit_callbacks
):
    c = api(siteadmin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = c.post("/api/pilots/", {"site": "UKI-TEST", "n": 2}, format="json")
    assert r.status_code == 202 and len(callbacks) == 2
    ids = [p["id"] for p in r.json()]
    assert [p["state"] for p in r.json()] == ["submitted", "submitted"]
    for pk in ids:  # what the worker does with each queued pilot
        tasks.submit_pilot(pk)
    assert len(fake_batch.jobs) == 2
    p = Pilot.objects.get(pk=ids[0])
    actions.check_receive_report(p.pk, token_of(p), body(a_report("passed")))

    listed = c.get("/api/pilots/?site=UKI-TEST&state=reported").json()
    assert listed["count"] == 1 and listed["results"][0]["verdict"] == "passed"
    detail = c.get(f"/api/pilots/{ids[0]}/").json()
    assert detail["report"]["checks"][0]["name"] == "python_version"
    assert detail["sent_by"] == "admin1" and detail["periodic"] is False
    assert detail["batch"]["state"] == "" and detail["batch_job_id"] in fake_batch.jobs
    assert [e["kind"] for e in detail["events"]][:2] == ["submitted", "batch_submitted"]
    assert "token" not in str(detail).lower().replace("token_", "")

    r = c.post(f"/api/pilots/{ids[1]}/cancel/")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert c.post(f"/api/pilots/{ids[1]}/cancel/").status_code == 409
    assert (
        c.post("/api/pilots/", {"site": "UKI-TEST", "n": 0}, format="json").json()["where"] == "n"
    )
    assert c.post("/api/pilots/", {"site": "NOPE"}, format="json").status_code == 404


def test_the_openapi_schema_describes_the_pilot_endpoints(physicist):
    r = api(physicist).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    paths = r.json()["paths"]
    for path in (
        "/api/ping/",
        "/api/sites/",
        "/api/sites/{name}/",
        "/api/sites/{name}/status/",
        "/api/pilots/",
        "/api/pilots/{id}/",
        "/api/pilots/{id}/report/",
        "/api/pilots/{id}/cancel/",
    ):
        assert path in paths, path
