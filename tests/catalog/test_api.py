"""The catalog's REST API: listing, detail, registration, errors as JSON, tokens."""

import pytest
from rest_framework.test import APIClient

from dmu.models import Dataset
from tests.conftest import HZZ, api_token, corrupt_basket, put_file

pytestmark = pytest.mark.django_db


def client_for(user):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def test_it_lists_datasets_with_totals(demo_datasets, physicist):
    r = client_for(physicist).get("/api/datasets/")
    assert r.status_code == 200
    rows = {d["name"]: d for d in r.json()["results"]}
    assert rows["demo.hzz"]["events"] == 2421 and rows["demo.zmumu"]["events"] == 2304
    assert rows["demo.hzz"]["files"] == 1 and rows["demo.hzz"]["bytes"] > 0
    r = client_for(physicist).get("/api/datasets/?q=zmu")
    assert [d["name"] for d in r.json()["results"]] == ["demo.zmumu"]


def test_it_shows_a_dataset_with_files_and_replicas(demo_datasets, physicist):
    body = client_for(physicist).get("/api/datasets/demo.hzz/").json()
    (f,) = body["files"]
    assert f["events"] == 2421 and f["guid"] == "76a647e8-03ee-11e2-9717-668ba983beef"
    assert f["replicas"][0]["storage_element"] == "LOCAL"
    assert f["replicas"][0]["url"].startswith("file://")


def test_an_admin_registers_through_the_api(local_se, storage_root, siteadmin):
    put_file(storage_root, HZZ, "up/hzz.root")
    r = client_for(siteadmin).post(
        "/api/datasets/register/",
        {"dataset": "user.admin1.hzz", "storage_element": "LOCAL", "paths": ["up/hzz.root"]},
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert r.json()["files_added"] == 1 and r.json()["events"] == 2421
    r = client_for(siteadmin).post(
        "/api/datasets/register/",
        {"dataset": "user.admin1.hzz", "storage_element": "LOCAL", "paths": ["up/hzz.root"]},
        format="json",
    )
    assert r.status_code == 200 and r.json()["files_added"] == 0


def test_api_errors_are_json_naming_what_and_where(local_se, storage_root, siteadmin):
    (storage_root / "junk.root").write_bytes(b"nope" * 10)
    c = client_for(siteadmin)
    r = c.post(
        "/api/datasets/register/",
        {"dataset": "a.b", "storage_element": "LOCAL", "paths": ["junk.root"]},
        format="json",
    )
    assert r.status_code == 400
    assert r.json() == {
        "error": "bad_event_file",
        "detail": "not a ROOT file nor a Parquet file (it begins with neither signature)",
        "where": "LOCAL:junk.root",
    }
    r = c.post(
        "/api/datasets/register/",
        {"dataset": "a.b", "storage_element": "NOPE", "paths": ["x"]},
        format="json",
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = c.post(
        "/api/datasets/register/", {"dataset": "a.b", "storage_element": "LOCAL"}, format="json"
    )
    assert r.status_code == 400 and r.json()["where"] == "paths"
    r = c.post(
        "/api/datasets/register/",
        {"dataset": "bad name", "storage_element": "LOCAL", "paths": ["../x"]},
        format="json",
    )
    assert r.status_code == 400 and r.json()["where"] == "dataset name"
    assert not Dataset.objects.exists()


def test_a_file_with_a_damaged_basket_is_a_json_400_naming_the_branch(
    local_se, storage_root, siteadmin
):
    rel = put_file(storage_root, HZZ, "up/damaged.root")
    corrupt_basket(storage_root / rel, "Muon_Px")
    r = client_for(siteadmin).post(
        "/api/datasets/register/",
        {"dataset": "a.damaged", "storage_element": "LOCAL", "paths": [rel]},
        format="json",
    )
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "bad_event_file" and body["where"] == "LOCAL:up/damaged.root"
    assert body["detail"].startswith("branch 'Muon_Px' cannot be read (entries 0-")
    assert not Dataset.objects.exists()


def test_a_physicist_cannot_register(local_se, storage_root, physicist):
    put_file(storage_root, HZZ, "hzz.root")
    r = client_for(physicist).post(
        "/api/datasets/register/",
        {"dataset": "a.b", "storage_element": "LOCAL", "paths": ["hzz.root"]},
        format="json",
    )
    assert r.status_code == 403
    assert not Dataset.objects.exists()


def test_anonymous_api_calls_are_refused_not_redirected(demo_datasets):
    r = APIClient().get("/api/datasets/")
    assert r.status_code == 401
    assert APIClient().get("/api/schema/").status_code == 401


def test_a_token_is_issued_for_a_password(physicist):
    r = APIClient().post("/api/token/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 201 and r.json()["token"].startswith("dss_")
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {r.json()['token']}")
    assert c.get("/api/datasets/").status_code == 200


def test_the_openapi_schema_describes_the_catalog(physicist):
    c = client_for(physicist)
    r = c.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/datasets/" in paths and "/api/datasets/register/" in paths
    c.force_login(physicist)
    assert c.get("/api/docs/").status_code == 200
