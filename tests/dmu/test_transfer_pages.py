"""Transfer pages, the storage element pages, the transfer REST API, the admin and the
``transfer_dataset`` command; who may do what."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from dmu import actions, tasks
from dmu.models import Replica, Transfer, TransferFile
from tests.conftest import HZZ, api_token, put_file
from tests.xrootd import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def disk(db, storage_root):
    return actions.do_add_storage_element("DISK", storage_root.as_uri(), "local disk")


@pytest.fixture
def disk2(db, tmp_path):
    root = tmp_path / "disk2"
    root.mkdir()
    return actions.do_add_storage_element("DISK2", root.as_uri(), "second disk")


@pytest.fixture
def hzz(disk, storage_root):
    rel = put_file(storage_root, HZZ, "demo/uproot-HZZ.root")
    dataset, _ = actions.check_register_dataset("demo.hzz", disk, [rel])
    return dataset


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def api(user) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def run(transfer: Transfer) -> None:
    for pk in transfer.files.values_list("pk", flat=True):
        tasks.transfer_file(pk)


# -- pages ---------------------------------------------------------------------------------


def test_an_admin_requests_a_transfer_from_the_form(
    hzz, disk2, siteadmin, django_capture_on_commit_callbacks
):
    c = logged_in(siteadmin)
    html = c.get("/transfers/new/?dataset=demo.hzz&destination=DISK2").content.decode()
    assert 'value="uproot-HZZ.root"' in html and "2,421 events" in html
    assert '<option value="DISK2" selected>' in html
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = c.post("/transfers/new/", {"dataset": "demo.hzz", "destination": "DISK2"})
    transfer = Transfer.objects.get()
    assert r.status_code == 302 and r.url == f"/transfers/{transfer.pk}/"
    assert len(callbacks) == 1 and transfer.owner == siteadmin
    assert transfer.files.get().file.lfn == "uproot-HZZ.root"


def test_picking_a_dataset_reloads_its_file_list_with_htmx(hzz, disk2, siteadmin):
    html = logged_in(siteadmin).get("/transfers/new/").content.decode()
    assert 'hx-get="/transfers/new/"' in html and 'hx-select="#transfer-files"' in html
    assert "uproot-HZZ.root" not in html
    r = logged_in(siteadmin).get("/transfers/new/?dataset=demo.hzz", HTTP_HX_REQUEST="true")
    assert 'id="transfer-files"' in r.content.decode()
    assert "uproot-HZZ.root" in r.content.decode()


def test_the_form_shows_what_is_wrong_beside_the_field(hzz, disk, siteadmin):
    web = actions.do_add_storage_element("WEB", "https://data.example.org/store")
    c = logged_in(siteadmin)
    html = c.post("/transfers/new/", {"dataset": "demo.hzz", "destination": web.name}).content
    assert "WEB (https://) is read-only" in html.decode()
    html = c.post(
        "/transfers/new/", {"dataset": "demo.hzz", "destination": "DISK", "source": "DISK"}
    ).content.decode()
    assert "the source and the destination are both DISK" in html
    html = c.post("/transfers/new/", {"dataset": "demo.nope", "destination": "DISK"}).content
    assert "Select a valid choice" in html.decode()
    assert not Transfer.objects.exists()


def test_the_transfer_list_shows_bytes_rate_attempts_and_errors(hzz, disk2, physicist, tmp_path):
    run(actions.check_request_transfer(hzz, disk2))
    broken = actions.do_add_storage_element("BROKEN", (tmp_path / "b").as_uri())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "demo").write_text("a file where a directory must go")
    run(actions.check_request_transfer(hzz, broken))
    html = logged_in(physicist).get("/transfers/").content.decode()
    assert "demo.hzz" in html and "DISK → " in html and "DISK2" in html and "BROKEN" in html
    assert "212.8 KiB of 212.8 KiB" in html
    assert "1 of 1 file(s) on DISK2: 1 copied" in html
    assert "0 of 1 file(s) on BROKEN" in html and 'class="badge state-failed"' in html
    assert "every 1s" not in html  # nothing runs: no polling
    assert "New transfer" not in html  # a physicist may look, not move


def test_the_list_polls_while_a_transfer_is_waiting_or_running(hzz, disk2, siteadmin):
    transfer = actions.check_request_transfer(hzz, disk2)
    c = logged_in(siteadmin)
    html = c.get("/transfers/").content.decode()
    assert 'hx-trigger="every 1s"' in html and "waiting for a worker" in html
    fragment = c.get("/transfers/?state=queued", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and f"#{transfer.pk}" in fragment
    assert 'hx-get="/transfers/?state=queued"' in fragment


def test_pages_that_answer_htmx_with_a_fragment_vary_on_it(hzz, disk2, siteadmin):
    # Otherwise the back button may bring up a cached fragment instead of the page.
    transfer = actions.check_request_transfer(hzz, disk2)
    c = logged_in(siteadmin)
    for url in ("/transfers/", f"/transfers/{transfer.pk}/", "/datasets/"):
        assert "HX-Request" in c.get(url)["Vary"], url


def test_the_transfer_page_shows_each_file_and_polls_until_it_ends(hzz, disk2, siteadmin):
    transfer = actions.check_request_transfer(hzz, disk2)
    c = logged_in(siteadmin)
    html = c.get(f"/transfers/{transfer.pk}/").content.decode()
    assert 'hx-trigger="every 1s"' in html and ">Cancel</button>" in html
    assert transfer.files.get().path in html
    run(transfer)
    r = c.get(f"/transfers/{transfer.pk}/", HTTP_HX_REQUEST="true")
    html = r.content.decode()
    assert "<html" not in html and "every 1s" not in html
    assert 'data-state="succeeded"' in html and "verified and registered" in html
    assert c.get("/transfers/99999/").status_code == 404


def test_an_admin_cancels_from_the_page_and_may_transfer_the_rest_again(hzz, disk2, siteadmin):
    transfer = actions.check_request_transfer(hzz, disk2)
    c = logged_in(siteadmin)
    r = c.post(f"/transfers/{transfer.pk}/cancel/")
    assert r.status_code == 302 and Transfer.objects.get(pk=transfer.pk).state == "cancelled"
    html = c.get(r.url).content.decode()
    assert "cancelled" in html and "copied files stay registered" in html
    assert "Transfer the rest again" in html and "files=uproot-HZZ.root" in html
    html = c.post(f"/transfers/{transfer.pk}/cancel/", follow=True).content.decode()
    assert f"transfer #{transfer.pk} has already cancelled" in html


def test_a_physicist_may_look_but_not_move_data(hzz, disk2, physicist):
    transfer = actions.check_request_transfer(hzz, disk2)
    c = logged_in(physicist)
    assert c.get("/transfers/").status_code == 200
    assert c.get(f"/transfers/{transfer.pk}/").status_code == 200
    assert ">Cancel</button>" not in c.get(f"/transfers/{transfer.pk}/").content.decode()
    assert c.get("/transfers/new/").status_code == 403
    r = c.post("/transfers/new/", {"dataset": "demo.hzz", "destination": "DISK2"})
    assert r.status_code == 403
    assert c.post(f"/transfers/{transfer.pk}/cancel/").status_code == 403
    assert Transfer.objects.get().state == "queued" and Transfer.objects.count() == 1


@pytest.mark.parametrize("url", ["/transfers/", "/transfers/new/", "/transfers/1/"])
def test_an_anonymous_visitor_is_sent_to_the_login_page(hzz, disk2, url):
    actions.check_request_transfer(hzz, disk2)
    r = Client().get(url)
    assert r.status_code == 302 and r.url.startswith("/login/?next=")


def test_the_storage_element_page_shows_what_it_holds_and_its_transfers(
    hzz, disk, disk2, physicist
):
    run(actions.check_request_transfer(hzz, disk2))
    c = logged_in(physicist)
    html = c.get("/storage/DISK2/").content.decode()
    assert "demo.hzz" in html and "complete" in html and "212.8 KiB" in html
    assert 'hx-get="/storage/DISK2/space/"' in html
    assert "DISK → DISK2" in html and 'class="badge state-succeeded"' in html
    assert "Copy a dataset here" not in html
    html = c.get("/storage/DISK/").content.decode()
    assert "DISK → DISK2" in html  # DISK was the source
    assert "Copy a dataset here" in logged_in_admin_page(disk2)


def logged_in_admin_page(se) -> str:
    from tests.conftest import make_user

    return logged_in(make_user("admin2", ["admin"])).get(f"/storage/{se.name}/").content.decode()


def test_free_space_is_asked_of_the_storage_element_and_unknown_where_it_does_not_tell(
    disk, physicist, xrootd_server
):
    c = logged_in(physicist)
    assert "iB" in c.get("/storage/DISK/space/").content.decode()
    xrd = actions.do_add_storage_element("XRD", xrootd_server.se_url())
    free = actions.get_free_space(xrd)
    assert free.bytes is not None and free.bytes > 0
    assert "iB" in c.get("/storage/XRD/space/").content.decode()
    actions.do_add_storage_element("WEB", "https://data.example.org/store")
    html = c.get("/storage/WEB/space/").content.decode()
    assert "unknown" in html and "https:// does not report free space" in html
    actions.do_add_storage_element("GONE", f"root://127.0.0.1:{free_port()}//data")
    html = c.get("/storage/GONE/space/").content.decode()
    assert "unknown" in html and "unreachable" in html
    html = c.get("/storage/").content.decode()
    assert 'hx-get="/storage/GONE/space/"' in html and ">Free<" in html


# -- REST API ------------------------------------------------------------------------------


def test_the_api_requests_lists_shows_and_cancels_transfers(hzz, disk2, siteadmin):
    c = api(siteadmin)
    r = c.post("/api/transfers/", {"dataset": "demo.hzz", "destination": "DISK2"}, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["state"] == "queued" and body["n_files"] == 1 and body["owner"] == "admin1"
    assert body["files"][0]["lfn"] == "uproot-HZZ.root" and body["files"][0]["state"] == "queued"
    run(Transfer.objects.get(pk=body["id"]))
    detail = c.get(f"/api/transfers/{body['id']}/").json()
    assert detail["state"] == "succeeded" and detail["bytes_done"] == detail["bytes"]
    f = detail["files"][0]
    assert f["attempts"] == 1 and f["rate_mb_s"] > 0 and f["source"] == "DISK" and not f["error"]
    listing = c.get("/api/transfers/?state=succeeded").json()
    assert listing["count"] == 1 and listing["results"][0]["files_done"] == 1
    assert c.get("/api/transfers/?dataset=demo.other").json()["count"] == 0

    r = c.post(
        "/api/transfers/",
        {"dataset": "demo.hzz", "destination": "DISK", "files": ["uproot-HZZ.root"]},
        format="json",
    )
    assert r.status_code == 201
    r = c.post(f"/api/transfers/{r.json()['id']}/cancel/")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = c.post(f"/api/transfers/{r.json()['id']}/cancel/")
    assert r.status_code == 409 and r.json()["error"] == "conflict"


def test_api_errors_name_what_was_wrong(hzz, disk2, siteadmin):
    c = api(siteadmin)
    r = c.post("/api/transfers/", {"dataset": "demo.nope", "destination": "DISK2"}, format="json")
    assert r.status_code == 404 and r.json() == {
        "error": "not_found",
        "detail": "no dataset named 'demo.nope'",
        "where": "dataset",
    }
    r = c.post("/api/transfers/", {"dataset": "demo.hzz", "destination": "NOPE"}, format="json")
    assert r.status_code == 404 and "no storage element named 'NOPE'" in r.json()["detail"]
    r = c.post(
        "/api/transfers/",
        {"dataset": "demo.hzz", "destination": "DISK2", "files": ["x.root"]},
        format="json",
    )
    assert r.status_code == 404 and r.json()["where"] == "files"
    r = c.post("/api/transfers/", {"dataset": "demo.hzz"}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "destination"
    c.post("/api/transfers/", {"dataset": "demo.hzz", "destination": "DISK2"}, format="json")
    r = c.post("/api/transfers/", {"dataset": "demo.hzz", "destination": "DISK2"}, format="json")
    assert r.status_code == 409 and "already being copied to DISK2" in r.json()["detail"]
    assert c.get("/api/transfers/99999/").status_code == 404


def test_the_api_lets_a_physicist_read_but_not_request_or_cancel(hzz, disk2, physicist):
    transfer = actions.check_request_transfer(hzz, disk2)
    c = api(physicist)
    assert c.get("/api/transfers/").status_code == 200
    assert c.get(f"/api/transfers/{transfer.pk}/").status_code == 200
    r = c.post("/api/transfers/", {"dataset": "demo.hzz", "destination": "DISK2"}, format="json")
    assert r.status_code == 403 and "admin role" in r.json()["detail"]
    assert c.post(f"/api/transfers/{transfer.pk}/cancel/").status_code == 403
    assert APIClient().get("/api/transfers/").status_code in (401, 403)


# -- admin and command -----------------------------------------------------------------------


def test_every_dmu_model_is_in_the_admin_and_its_pages_open(hzz, disk2, db):
    from django.apps import apps
    from django.contrib import admin
    from django.contrib.auth.models import User

    missing = [
        m.__name__
        for m in apps.get_app_config("dmu").get_models()
        if not admin.site.is_registered(m)
    ]
    assert not missing
    run(actions.check_request_transfer(hzz, disk2))
    c = logged_in(User.objects.create_superuser("root", "root@example.org", "pw"))
    transfer, item = Transfer.objects.get(), TransferFile.objects.get()
    for url in (
        "/admin/dmu/transfer/",
        f"/admin/dmu/transfer/{transfer.pk}/change/",
        "/admin/dmu/transferfile/",
        f"/admin/dmu/transferfile/{item.pk}/change/",
    ):
        assert c.get(url).status_code == 200, url


def test_the_command_queues_a_transfer_and_names_what_is_wrong(hzz, disk2, capsys):
    call_command("transfer_dataset", "demo.hzz", "DISK2", "--files", "uproot-HZZ.root")
    transfer = Transfer.objects.get()
    assert f"transfer #{transfer.pk}: demo.hzz → DISK2 queued" in capsys.readouterr().out
    with pytest.raises(CommandError) as err:
        call_command("transfer_dataset", "demo.hzz", "NOWHERE")
    assert err.value.returncode == 3 and "no storage element named 'NOWHERE'" in str(err.value)
    with pytest.raises(CommandError) as err:
        call_command("transfer_dataset", "demo.hzz", "DISK2")
    assert err.value.returncode == 4 and "already being copied" in str(err.value)


def test_the_command_waits_for_a_real_worker_and_exits_with_the_outcome(
    celery_worker, hzz, disk2, xrootd_readonly, capsys
):
    call_command("transfer_dataset", "demo.hzz", "DISK2", "--wait")
    out = capsys.readouterr().out
    assert "succeeded: 1 of 1 file(s) on DISK2: 1 copied, 0 already there" in out
    assert Replica.objects.filter(storage_element=disk2).count() == 1

    actions.do_add_storage_element("RO", xrootd_readonly.se_url())
    with pytest.raises(CommandError) as err:
        call_command("transfer_dataset", "demo.hzz", "RO", "--wait")
    assert err.value.returncode == 10
    assert "failed: 0 of 1 file(s) on RO" in str(err.value) and "read-only" in str(err.value)
