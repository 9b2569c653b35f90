"""The dataset list page and API ask the database a fixed number of questions, however many
datasets there are (bench/pages.py times them with 10^4)."""

import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from dmu.models import Dataset, File, Replica, StorageElement
from tests.conftest import api_token

pytestmark = pytest.mark.django_db

PAGES = [
    "/datasets/",
    "/datasets/?sort=-files",
    "/datasets/?sort=-created&page=2",
    "/datasets/?q=bulk&sort=bytes",
]
API = ["/api/datasets/", "/api/datasets/?q=bulk&offset=2"]


def add_datasets(n: int, first: int = 0, files: int = 2) -> None:
    se, _ = StorageElement.objects.get_or_create(name="BULK", url="file:///bulk")
    datasets = Dataset.objects.bulk_create(
        Dataset(name=f"mc.{i:05d}.bulk", description="bulk") for i in range(first, first + n)
    )
    made = File.objects.bulk_create(
        File(
            dataset=d,
            lfn=f"{d.name}.{k}.root",
            guid=uuid.uuid4(),
            bytes=1000,
            adler32="00000001",
            events=10,
            tree="events",
        )
        for d in datasets
        for k in range(files)
    )
    Replica.objects.bulk_create(Replica(file=f, storage_element=se, path=f.lfn) for f in made)


def queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.fixture
def browser(physicist):
    c = Client()
    c.force_login(physicist)
    c.get("/datasets/")  # the session and its user are read the same way from here on
    return c


@pytest.fixture
def cli(physicist):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    c.get("/api/datasets/")  # the token's first use is written down once
    return c


def test_the_list_page_asks_as_many_queries_for_200_datasets_as_for_3(browser):
    add_datasets(3)
    few = {path: queries(browser, path) for path in PAGES}
    add_datasets(200, first=3)
    many = {path: queries(browser, path) for path in PAGES}
    assert many == few


@pytest.mark.parametrize("path", PAGES)
def test_the_list_page_takes_at_most_ten_queries(browser, path, django_assert_max_num_queries):
    add_datasets(60)
    with django_assert_max_num_queries(10):
        browser.get(path)


def test_the_api_list_asks_as_many_queries_for_200_datasets_as_for_3(cli):
    add_datasets(3)
    few = {path: queries(cli, path) for path in API}
    add_datasets(200, first=3)
    many = {path: queries(cli, path) for path in API}
    assert many == few


@pytest.mark.parametrize("path", API)
def test_the_api_list_takes_at_most_six_queries(cli, path, django_assert_max_num_queries):
    add_datasets(60)
    with django_assert_max_num_queries(6):
        cli.get(path)


def test_the_totals_cover_every_matching_dataset_not_the_page(browser, cli):
    add_datasets(60)
    add_datasets(1, first=60, files=0)  # no files: 0 files, no events
    html = browser.get("/datasets/").content.decode()
    assert "61 datasets" in html and "Page 1 of 3" in html
    assert ">120<" in html and ">1,200<" in html  # 120 files of 10 events
    html = browser.get("/datasets/?sort=files").content.decode()
    assert html.index("mc.00060.bulk") < html.index("mc.00000.bulk")
    body = cli.get("/api/datasets/?q=00060").json()
    assert body["count"] == 1
    assert body["results"][0] | {"created_at": None} == {
        "name": "mc.00060.bulk",
        "description": "bulk",
        "files": 0,
        "events": None,
        "bytes": None,
        "created_at": None,
    }


@pytest.mark.parametrize("value", [0, 7, 4725, -1234567, 10**15, None, "", "12", 1.5, True])
def test_thousands_writes_what_intcomma_writes(value):
    from django.template import Context, Template

    def render(name):
        return Template("{% load humanize dss %}{{ v|" + name + " }}").render(Context({"v": value}))

    assert render("thousands") == render("intcomma")


@pytest.mark.parametrize("zone", ["UTC", "Europe/Zurich", "America/Chicago"])
def test_minute_writes_what_the_date_filter_writes_in_the_current_time_zone(zone):
    from datetime import UTC, datetime

    from django.template import Context, Template
    from django.utils import timezone

    values = [datetime(2024, 3, 31, 0, 59, tzinfo=UTC), datetime(7, 1, 2, 3, 4)]
    with timezone.override(zone):
        for value in values + [None, ""]:
            context = Context({"v": value})
            fast = Template("{% load dss %}{{ v|minute }}").render(context)
            assert fast == Template('{{ v|date:"Y-m-d H:i" }}').render(context), value
