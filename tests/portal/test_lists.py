"""Long lists come a page at a time: the TAG page, a storage element's page, and every API
list, whose ?limit= is capped at DSS_API_MAX_LIMIT."""

import pytest
from django.test import Client

from dmu.models import Dataset, File, Replica

pytestmark = pytest.mark.django_db

N = 120  # more than two pages of 50


@pytest.fixture
def many_datasets(local_se):
    """N datasets of one file each, all on the local storage element (rows made in bulk:
    registering N real files would only slow the test)."""
    datasets = Dataset.objects.bulk_create(Dataset(name=f"data24.d{i:04d}") for i in range(N))
    files = File.objects.bulk_create(
        File(
            dataset=d,
            lfn=f"{d.name}.root",
            guid=f"00000000-0000-0000-0000-{i:012d}",
            bytes=1000,
            adler32="00000001",
            events=10,
            tree="events",
        )
        for i, d in enumerate(datasets)
    )
    Replica.objects.bulk_create(
        Replica(file=f, storage_element=local_se, path=f"data24/{f.lfn}") for f in files
    )
    return datasets


@pytest.fixture
def c(physicist):
    client = Client()
    client.force_login(physicist)
    return client


def names_on(html: str) -> set[str]:
    import re

    return set(re.findall(r">(data24\.d\d{4})<", html))


def test_the_tag_page_lists_datasets_without_tags_a_page_at_a_time(c, many_datasets):
    first = c.get("/tags/").content.decode()
    assert len(names_on(first)) == 50 and "Page 1 of 3 (120 in all)" in first
    last = c.get("/tags/?untagged=3").content.decode()
    assert len(names_on(last)) == 20 and "data24.d0119" in last
    assert names_on(c.get("/tags/?untagged=9223372036854775808").content.decode()) == names_on(last)


def test_a_storage_elements_page_lists_its_datasets_a_page_at_a_time(c, many_datasets):
    first = c.get("/storage/LOCAL/").content.decode()
    assert len(names_on(first)) == 50 and "Page 1 of 3 (120 in all)" in first
    second = c.get("/storage/LOCAL/?page=2").content.decode()
    assert len(names_on(second)) == 50 and not names_on(first) & names_on(second)
    assert "120" in first  # the totals still count everything held


@pytest.mark.parametrize("limit", ["100000", "9223372036854775808", "99999999999999999999"])
def test_api_lists_cap_the_limit(c, many_datasets, settings, limit):
    settings.DSS_API_MAX_LIMIT = 70
    r = c.get(f"/api/datasets/?limit={limit}")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == N and len(body["results"]) == 70 and "offset=70" in body["next"]


def test_api_lists_default_to_a_page(c, many_datasets):
    body = c.get("/api/datasets/").json()
    assert body["count"] == N and len(body["results"]) == 50
