"""The Rucio pages and API: search, a dataset's files, import, the registration status, and
what they say when Rucio refuses or is down."""

from __future__ import annotations

from rest_framework.test import APIClient

from dmu import actions, catalogs
from dmu.models import Dataset, RucioRegistration, RucioState
from dss import generations
from tests.conftest import HZZ, ZMUMU, api_token


def client_for(user):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def test_the_api_searches_lists_files_and_imports(in_rucio, physicist, siteadmin):
    scope, name = in_rucio
    r = client_for(physicist).get("/api/rucio/datasets/", {"scope": scope, "name": "*zmu*"})
    assert r.status_code == 200, r.json()
    assert [d["did"] for d in r.json()] == [f"{scope}:{name}"]

    r = client_for(physicist).get(f"/api/rucio/datasets/{scope}/{name}/")
    assert r.status_code == 200
    (f,) = r.json()
    assert f["name"] == "uproot-Zmumu.root" and f["bytes"] == ZMUMU.stat().st_size

    r = client_for(physicist).post("/api/rucio/import/", {"scope": scope, "name": name})
    assert r.status_code == 403

    r = client_for(siteadmin).post("/api/rucio/import/", {"scope": scope, "name": name})
    assert r.status_code == 201, r.json()
    assert r.json()["files_added"] == 1 and r.json()["events"] == 2304

    r = client_for(physicist).get(f"/api/datasets/{name}/rucio/")
    assert r.json()["state"] == "registered" and r.json()["did"] == f"{scope}:{name}"


def test_api_errors_name_what_and_where(rucio, physicist, settings):
    r = client_for(physicist).get("/api/rucio/datasets/", {"scope": "nosuchscope"})
    assert r.status_code == 404
    assert r.json() == {
        "error": "not_found",
        "detail": "Rucio has no scope 'nosuchscope'",
        "where": "scope",
    }
    r = client_for(physicist).get("/api/rucio/datasets/", {"scope": "x", "name": "a b"})
    assert r.status_code == 400 and r.json()["where"] == "name"

    settings.DSS_RUCIO_PASSWORD = "wrong"
    r = client_for(physicist).get("/api/rucio/datasets/", {"scope": "x"})
    assert r.status_code == 400 and r.json()["error"] == "rucio_auth"

    settings.DSS_RUCIO_URL = "http://127.0.0.1:9"
    r = client_for(physicist).get("/api/rucio/datasets/", {"scope": "x"})
    assert r.status_code == 502 and r.json()["error"] == "rucio_unavailable"
    assert "Rucio does not answer at http://127.0.0.1:9" in r.json()["detail"]


def test_dmu_puts_register_path_queues_the_dataset_for_rucio(
    rucio, scope, site, siteadmin, django_capture_on_commit_callbacks
):
    rel = site.put(HZZ, "put/uproot-HZZ.root")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = client_for(siteadmin).post(
            "/api/datasets/register/",
            {"dataset": f"{scope}.put", "storage_element": site.se.name, "paths": [rel]},
            format="json",
        )
    assert r.status_code == 201, r.json()
    # the Rucio task (beside it, the catalog's cache generation is replaced)
    assert len([c for c in callbacks if not isinstance(c, generations._Replace)]) == 1
    reg = RucioRegistration.objects.get(dataset__name=f"{scope}.put")
    assert reg.state == RucioState.PENDING

    catalogs.do_register_in_rucio(reg.dataset_id)

    r = client_for(siteadmin).get(f"/api/datasets/{scope}.put/rucio/")
    assert r.json()["state"] == "registered" and r.json()["files_registered"] == 1


def test_the_pages_search_show_and_import(in_rucio, client, siteadmin):
    scope, name = in_rucio
    client.force_login(siteadmin)
    r = client.get("/rucio/", {"scope": scope, "name": "*"})
    assert r.status_code == 200 and f"{scope}:{name}".encode() in r.content

    r = client.get(f"/rucio/{scope}/{name}/")
    assert r.status_code == 200
    assert b"uproot-Zmumu.root" in r.content and b"Import into the portal" in r.content

    r = client.post(f"/rucio/{scope}/{name}/import/")
    assert r.status_code == 302 and r.url == f"/datasets/{name}/"
    r = client.get(r.url)
    assert b'id="rucio-status"' in r.content and b"registered" in r.content


def test_the_pages_say_what_went_wrong(rucio, client, physicist, settings):
    client.force_login(physicist)
    r = client.get("/rucio/", {"scope": "nosuchscope"})
    assert b"Rucio has no scope &#x27;nosuchscope&#x27;" in r.content

    settings.DSS_RUCIO_URL = "http://127.0.0.1:9"
    r = client.get("/rucio/x/y.z/")
    assert r.status_code == 502
    assert b"Rucio does not answer at http://127.0.0.1:9" in r.content


def test_the_dataset_page_shows_a_pending_retry_and_its_error(
    rucio, scope, site, client, siteadmin, settings, django_capture_on_commit_callbacks
):
    rel = site.put(HZZ, "retry/uproot-HZZ.root")
    dataset, _ = actions.check_register_dataset(f"{scope}.retry", site.se, [rel])
    with django_capture_on_commit_callbacks(execute=False):
        catalogs.queue_rucio_registration(dataset)
    settings.DSS_RUCIO_URL = "http://127.0.0.1:9"
    catalogs.do_register_in_rucio(dataset.pk)

    client.force_login(siteadmin)
    r = client.get(dataset.get_absolute_url())
    assert b"pending" in r.content and b"attempt 1 failed" in r.content
    assert b"Rucio does not answer at http://127.0.0.1:9" in r.content
    assert Dataset.objects.filter(name=f"{scope}.retry").exists()


def test_an_admin_asks_again_from_the_dataset_page(
    rucio, scope, site, client, siteadmin, physicist, django_capture_on_commit_callbacks
):
    rel = site.put(HZZ, "again/uproot-HZZ.root")
    dataset, _ = actions.check_register_dataset(f"{scope}.again", site.se, [rel])
    client.force_login(physicist)
    assert client.post(f"/datasets/{dataset.name}/rucio/").status_code == 403

    client.force_login(siteadmin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = client.post(f"/datasets/{dataset.name}/rucio/")
    assert r.status_code == 302 and len(callbacks) == 1
    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts) == (RucioState.PENDING, 0)
