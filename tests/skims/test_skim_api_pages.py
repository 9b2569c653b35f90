"""The skim service's REST API and pages."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from skims.models import SkimJob
from tests.conftest import api_token

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def test_a_physicist_submits_through_the_api(
    hzz_tags, physicist, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = api(physicist).post(
            "/api/skims/",
            {
                "collections": [hzz_tags.pk],
                "selection": "n_muon >= 2",
                "output_name": "user.phys.api",
                "branches": ["NMuon"],
            },
            format="json",
        )
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["state"] == "queued" and body["inputs"] == [
        {"dataset": "demo.hzz", "collection": hzz_tags.pk, "schema": "hzz"}
    ]
    assert len(callbacks) == 1
    assert (
        api(physicist).get(f"/api/skims/{body['id']}/").json()["selection_normalised"]
        == "n_muon >= 2"
    )
    assert [s["id"] for s in api(physicist).get("/api/skims/?mine=1").json()["results"]] == [
        body["id"]
    ]


def test_a_dataset_name_uses_its_tags(hzz_tags, physicist):
    r = api(physicist).post(
        "/api/skims/",
        {"datasets": ["demo.hzz"], "selection": "n_muon >= 2", "output_name": "user.phys.byname"},
        format="json",
    )
    assert r.status_code == 201 and r.json()["inputs"][0]["collection"] == hzz_tags.pk


@pytest.mark.parametrize(
    "body, status, error, where",
    [
        (
            {"collections": [1], "selection": "n_muon >= ", "output_name": "user.phys.x"},
            400,
            "bad_selection",
            "column 11",
        ),
        (
            {"collections": [1], "selection": "n_muon >= 2", "output_name": "bad name"},
            400,
            "invalid",
            "dataset name",
        ),
        (
            {"collections": [999], "selection": "n_muon >= 2", "output_name": "user.phys.x"},
            404,
            "not_found",
            "collections",
        ),
        ({"selection": "n_muon >= 2", "output_name": "user.phys.x"}, 400, "invalid", "inputs"),
        (
            # another scope than the physicist's own (user.phys.*)
            {"collections": [1], "selection": "n_muon >= 2", "output_name": "demo.zmumu"},
            403,
            "forbidden",
            "dataset name",
        ),
        (
            {
                "collections": [1],
                "selection": "n_muon >= 2",
                "output_name": "user.phys.x",
                "output_format": "csv",
            },
            400,
            "invalid",
            "output_format",
        ),
        (
            {"collections": [1], "selection": "x" * 5000, "output_name": "user.phys.x"},
            400,
            "invalid",
            "selection",
        ),
    ],
)
def test_bad_requests_get_json_errors_never_500(hzz_tags, physicist, body, status, error, where):
    body = {
        **body,
        "collections": [hzz_tags.pk if c == 1 else c for c in body.get("collections", [])],
    }
    r = api(physicist).post("/api/skims/", body, format="json")
    assert r.status_code == status, r.json()
    assert r.json()["error"] == error and r.json()["where"] == where
    assert not SkimJob.objects.exists()


def test_an_operator_cannot_submit_and_outsiders_cannot_cancel(
    hzz_tags, physicist, operator, outsider
):
    r = api(operator).post(
        "/api/skims/",
        {"collections": [hzz_tags.pk], "selection": "n_muon >= 2", "output_name": "user.o.x"},
        format="json",
    )
    assert r.status_code == 403
    r = api(physicist).post(
        "/api/skims/",
        {"collections": [hzz_tags.pk], "selection": "n_muon >= 2", "output_name": "user.phys.y"},
        format="json",
    )
    sid = r.json()["id"]
    assert api(outsider).post(f"/api/skims/{sid}/cancel/").status_code == 403
    assert api(physicist).post(f"/api/skims/{sid}/cancel/").json()["state"] == "cancelled"
    assert api(physicist).post(f"/api/skims/{sid}/cancel/").status_code == 409


def test_provenance_api_needs_the_operator_role(physicist):
    assert api(physicist).get("/api/provenance/").status_code == 403


def test_the_skim_form_prefills_from_the_tag_page_and_submits(
    hzz_tags, physicist, django_capture_on_commit_callbacks
):
    c = Client()
    c.force_login(physicist)
    html = c.get(f"/skims/new/?collection={hzz_tags.pk}&selection=n_muon+%3E%3D+2").content.decode()
    assert "n_muon &gt;= 2</textarea>" in html and f'value="{hzz_tags.pk}" selected' in html
    with django_capture_on_commit_callbacks(execute=False):
        r = c.post(
            "/skims/new/",
            {
                "collections": [hzz_tags.pk],
                "selection": "n_muon >= 2",
                "content": "all",
                "output_format": "root",
                "output_name": "user.phys.form",
                "output_se": "LOCAL",
                "failure_policy": "fail",
            },
        )
    skim = SkimJob.objects.get()
    assert r.status_code == 302 and r.url == f"/skims/{skim.pk}/"
    page = c.get(r.url).content.decode()
    assert "Skim #" in page and "user.phys.form" in page and "queued" in page and "Cancel" in page
    assert 'hx-trigger="every 1s"' in page
    assert "user.phys.form" in c.get("/skims/").content.decode()


def test_the_form_shows_a_selection_error_next_to_the_box(hzz_tags, physicist):
    c = Client()
    c.force_login(physicist)
    r = c.post(
        "/skims/new/",
        {
            "collections": [hzz_tags.pk],
            "selection": "n_muon >= 2 && met_x > 3",
            "content": "all",
            "output_format": "root",
            "output_name": "user.phys.bad",
            "failure_policy": "fail",
        },
    )
    html = r.content.decode()
    assert r.status_code == 200 and "unknown attribute" in html and "column 16" in html
    assert "did you mean" in html
    assert not SkimJob.objects.exists()


def test_outsiders_cannot_open_the_skim_form(outsider):
    c = Client()
    c.force_login(outsider)
    assert c.get("/skims/new/").status_code == 403
