"""The catalog's pages: list (search, sort, paging, totals), detail, registration form."""

import pytest
from django.test import Client

from dmu.models import Dataset, RegistrationJob
from tests.conftest import HZZ, put_file

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_the_dataset_list_shows_both_demo_datasets_with_totals(demo_datasets, physicist):
    r = logged_in(physicist).get("/datasets/")
    html = r.content.decode()
    assert r.status_code == 200
    assert "demo.hzz" in html and "demo.zmumu" in html
    assert "4,725" in html  # 2,421 + 2,304 events in the totals row
    assert "<title>Datasets · DSS</title>" in html


def test_the_dataset_list_searches_and_sorts(demo_datasets, physicist):
    c = logged_in(physicist)
    html = c.get("/datasets/?q=zmumu").content.decode()
    assert "demo.zmumu" in html and "demo.hzz" not in html
    html = c.get("/datasets/?sort=-events").content.decode()
    assert html.index("demo.hzz") < html.index("demo.zmumu")
    html = c.get("/datasets/?sort=events").content.decode()
    assert html.index("demo.zmumu") < html.index("demo.hzz")
    assert c.get("/datasets/?sort=drop table").status_code == 200


def test_the_search_box_updates_only_the_table_with_htmx(demo_datasets, physicist):
    r = logged_in(physicist).get("/datasets/?q=hzz", HTTP_HX_REQUEST="true")
    html = r.content.decode()
    assert "<html" not in html and "demo.hzz" in html


def test_the_list_pages(local_se, physicist):
    Dataset.objects.bulk_create(Dataset(name=f"scope.ds{i:03d}") for i in range(60))
    c = logged_in(physicist)
    html = c.get("/datasets/").content.decode()
    assert "Page 1 of 3" in html and "scope.ds000" in html and "scope.ds030" not in html
    assert "scope.ds059" in c.get("/datasets/?page=3").content.decode()


def test_the_dataset_page_shows_files_replicas_and_events(demo_datasets, physicist):
    html = logged_in(physicist).get("/datasets/demo.hzz/").content.decode()
    assert "76a647e8-03ee-11e2-9717-668ba983beef" in html
    assert "2,421" in html and "LOCAL" in html and "complete" in html
    assert logged_in(physicist).get("/datasets/demo.nope/").status_code == 404


def test_the_storage_pages(demo_datasets, physicist):
    c = logged_in(physicist)
    assert "LOCAL" in c.get("/storage/").content.decode()
    html = c.get("/storage/LOCAL/").content.decode()
    assert "demo.hzz" in html and "demo.zmumu" in html


def test_an_admin_queues_a_registration_from_the_form(
    local_se, storage_root, siteadmin, django_capture_on_commit_callbacks
):
    put_file(storage_root, HZZ, "new/hzz.root")
    c = logged_in(siteadmin)
    assert c.get("/datasets/register/").status_code == 200
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = c.post(
            "/datasets/register/",
            {"dataset": "user.x.hzz", "storage_element": "LOCAL", "paths": "new/hzz.root\n"},
        )
    job = RegistrationJob.objects.get()
    assert r.status_code == 302 and r.url == f"/registrations/{job.pk}/"
    assert job.paths == ["new/hzz.root"] and job.state == "queued" and len(callbacks) == 1
    # the task itself, called directly as a unit
    from dmu.tasks import register_dataset

    register_dataset(job.pk)
    job.refresh_from_db()
    assert job.state == "succeeded" and job.files_added == 1
    assert Dataset.objects.get(name="user.x.hzz").files.count() == 1
    register_dataset(job.pk)  # a second run finds the job claimed and does nothing
    assert [e.kind for e in job.events.all()] == ["queued", "started", "succeeded"]
    html = c.get(f"/registrations/{job.pk}/").content.decode()
    assert "succeeded" in html and "Open user.x.hzz" in html


def test_the_form_shows_a_bad_path_next_to_the_files(local_se, siteadmin):
    r = logged_in(siteadmin).post(
        "/datasets/register/",
        {"dataset": "user.x.y", "storage_element": "LOCAL", "paths": "../../etc/passwd"},
    )
    assert r.status_code == 200
    assert "../../etc/passwd" in r.content.decode()
    assert not RegistrationJob.objects.exists()
