"""The dataset list page and API are cached under the catalog's generation
(dss.generations): a change to a dataset or a file, made any way and by any process, is
seen by the next request; nothing changed, a request asks the database no catalog query."""

import os
import subprocess
import sys
import uuid

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from dmu.models import CATALOG, Dataset, File
from dss import generations
from dss.models import Generation
from tests.conftest import ROOT, _database_url_for_worker, api_token

# Committed changes (not the test's own open transaction) are what the cache follows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def token() -> str | None:
    return Generation.objects.filter(name=CATALOG).values_list("token", flat=True).first()


def add(name: str, files: int = 1) -> Dataset:
    d = Dataset.objects.create(name=name, description="cached")
    for k in range(files):
        File.objects.create(
            dataset=d,
            lfn=f"{name}.{k}.root",
            guid=uuid.uuid4(),
            bytes=1000,
            adler32="00000001",
            events=10,
            tree="events",
        )
    return d


@pytest.fixture
def browser(physicist):
    c = Client()
    c.force_login(physicist)
    return c


@pytest.fixture
def cli(physicist):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    return c


def catalog_queries(client, path: str) -> tuple[int, str]:
    """(the catalog queries of one request, its body)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    n = sum('"dmu_dataset"' in q["sql"] or '"dmu_file"' in q["sql"] for q in captured)
    return n, response.content.decode()


def results(html: str) -> str:
    return html[html.index('<div id="results">') : html.index("</table>")]


def test_a_second_request_asks_no_catalog_query_and_a_change_is_seen_at_once(browser, cli):
    add("mc.a.cached", files=2)
    first, html = catalog_queries(browser, "/datasets/")
    assert first > 0 and "mc.a.cached" in html and "1 dataset" in html
    again, same = catalog_queries(browser, "/datasets/")
    assert again == 0 and results(same) == results(html)
    api_first, body = catalog_queries(cli, "/api/datasets/")
    assert api_first > 0 and '"count":1' in body.replace(" ", "")
    assert catalog_queries(cli, "/api/datasets/")[0] == 0

    add("mc.b.cached", files=3)  # committed: the next request sees it
    n, html = catalog_queries(browser, "/datasets/")
    assert n > 0 and "mc.b.cached" in html and "2 datasets" in html and ">5<" in html
    assert cli.get("/api/datasets/").json()["count"] == 2


def change_by_save():
    d = Dataset.objects.get(name="mc.x.cached")
    d.description = "changed"
    d.save()


def change_by_queryset_update():
    File.objects.filter(dataset__name="mc.x.cached").update(events=99)


def change_by_bulk_create():
    d = Dataset.objects.get(name="mc.x.cached")
    File.objects.bulk_create(
        [
            File(dataset=d, lfn="bulk.root", guid=uuid.uuid4(), bytes=1, adler32="1", events=1)
            for _ in range(1)
        ]
    )


def change_by_bulk_update():
    files = list(File.objects.filter(dataset__name="mc.x.cached"))
    for f in files:
        f.bytes = 12345
    File.objects.bulk_update(files, ["bytes"])


def change_by_deleting_a_file():
    File.objects.filter(dataset__name="mc.x.cached").first().delete()


def change_by_deleting_the_dataset_and_its_files():
    Dataset.objects.filter(name="mc.x.cached").delete()


@pytest.mark.parametrize(
    "change",
    [
        change_by_save,
        change_by_queryset_update,
        change_by_bulk_create,
        change_by_bulk_update,
        change_by_deleting_a_file,
        change_by_deleting_the_dataset_and_its_files,
    ],
)
def test_every_kind_of_change_replaces_the_generation(change, browser):
    add("mc.x.cached", files=2)
    before = generations.current(CATALOG)
    browser.get("/datasets/")
    change()
    assert token() != before


def test_a_transaction_replaces_it_once_on_commit_and_not_at_all_on_rollback(db):
    before = generations.current(CATALOG)
    with transaction.atomic():
        add("mc.t.cached", files=3)
        # the open transaction's own change: nothing is cached or read from the cache
        assert generations.current(CATALOG) is None
        assert token() == before
        pending = [e for e in connection.run_on_commit if isinstance(e[1], generations._Replace)]
        assert len(pending) == 1  # four rows, one replacement
    after = token()
    assert after != before
    with pytest.raises(RuntimeError), transaction.atomic():
        add("mc.r.cached")
        raise RuntimeError("rolled back")
    assert token() == after and generations.current(CATALOG) == after


def test_a_change_made_by_another_process_is_seen(browser):
    add("mc.p.cached")
    assert "mc.q.cached" not in browser.get("/datasets/").content.decode()
    code = (
        "import django; django.setup(); from dmu.models import Dataset; "
        "Dataset.objects.create(name='mc.q.cached')"
    )
    env = {"DATABASE_URL": _database_url_for_worker(), "DJANGO_SETTINGS_MODULE": "dss.settings"}
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=120,
    )
    html = browser.get("/datasets/").content.decode()
    assert "mc.q.cached" in html and "2 datasets" in html


def test_cached_links_carry_only_the_search_order_and_page(browser):
    for i in range(30):
        Dataset.objects.create(name=f"mc.{i:02d}.cached")
    html = browser.get("/datasets/?sort=-name&page=2&evil=%22%3E&q=cached").content.decode()
    assert "evil" not in html and "Page 2 of 2" in html
    assert 'href="?q=cached&amp;sort=name"' in html  # reverses the order, back to page 1
    # another request's extra parameters do not reach the first one's cached links
    assert "evil" not in browser.get("/datasets/?sort=-name&page=2&q=cached").content.decode()
    # every page number past the end is the last page, cached once
    assert "Page 2 of 2" in browser.get("/datasets/?q=cached&sort=-name&page=999").content.decode()


def test_api_links_are_made_for_each_request_and_offsets_past_the_end_are_one_page(cli):
    for i in range(3):
        Dataset.objects.create(name=f"mc.{i:02d}.cached")
    body = cli.get("/api/datasets/?limit=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2
    assert body["next"] == "http://testserver/api/datasets/?limit=2&offset=2"
    other = cli.get("/api/datasets/?limit=2", HTTP_HOST="127.0.0.1").json()
    assert other["next"] == "http://127.0.0.1/api/datasets/?limit=2&offset=2"
    far = cli.get("/api/datasets/?limit=2&offset=1000000").json()
    assert far["count"] == 3 and far["results"] == [] and far["next"] is None
    assert far["previous"].endswith("limit=2&offset=1")
    assert [r["name"] for r in cli.get("/api/datasets/?q=01").json()["results"]] == ["mc.01.cached"]


@override_settings(DSS_PAGE_CACHE_SECONDS=0)
def test_with_the_cache_turned_off_every_request_asks_the_catalog(browser):
    add("mc.o.cached")
    assert catalog_queries(browser, "/datasets/")[0] > 0
    assert catalog_queries(browser, "/datasets/")[0] > 0


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing answers there
        }
    }
)
def test_a_cache_that_does_not_answer_costs_the_cache_not_the_page(browser, caplog):
    add("mc.down.cached")
    html = browser.get("/datasets/").content.decode()
    assert "mc.down.cached" in html
    assert "cache unavailable for catalog" in caplog.text


def test_a_migration_replaces_every_generation(db):
    from django.core.management.sql import emit_post_migrate_signal

    before = generations.current(CATALOG)
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert token() not in (None, before)


def page_queries(client, path: str = "/datasets/") -> tuple[int, str]:
    """(every query of one request but the session's and the user's, its body)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    skip = ('"django_session"', '"auth_user"."password"')
    n = sum(not any(s in q["sql"] for s in skip) for q in captured)
    return n, response.content.decode()


@pytest.fixture
def browser_with_cookie(physicist):
    """A browser as it is after its first page: it holds its CSRF cookie."""
    c = Client(enforce_csrf_checks=True)
    c.force_login(physicist)
    c.get("/datasets/")
    assert c.cookies.get("csrftoken")
    return c


def test_a_browser_with_its_csrf_cookie_gets_the_whole_page_from_the_cache(
    browser_with_cookie, physicist
):
    add("mc.w.cached")
    first, html = page_queries(browser_with_cookie)
    again, same = page_queries(browser_with_cookie)
    assert first > again == 1  # the generations' one query: no catalog, no roles, no perms
    assert same == html and "mc.w.cached" in same and physicist.username in same
    # The token in the cached page is good: logging out with it works.
    token = same.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    response = browser_with_cookie.post("/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_users_do_not_get_each_others_pages_and_a_new_role_is_shown_at_once(
    browser_with_cookie, physicist, siteadmin
):
    add("mc.u.cached")
    html = browser_with_cookie.get("/datasets/").content.decode()
    assert "Register a dataset" not in html and '<span class="role">physicist' in html
    other = Client()
    other.force_login(siteadmin)
    other.get("/datasets/")
    theirs = other.get("/datasets/").content.decode()
    assert "Register a dataset" in theirs and physicist.username not in theirs
    from django.contrib.auth.models import Group

    physicist.groups.add(Group.objects.get(name="admin"))
    html = browser_with_cookie.get("/datasets/").content.decode()
    assert "Register a dataset" in html and '<span class="role">admin' in html


def test_a_page_with_a_message_to_show_is_drawn_and_the_message_shown_once(
    browser_with_cookie,
):
    from django.contrib.messages import constants
    from django.contrib.messages.storage.base import Message
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.http import HttpRequest

    add("mc.m.cached")
    browser_with_cookie.get("/datasets/")  # cached
    # a message left by the page before, as a redirect to the list leaves it
    message = Message(constants.SUCCESS, "registered mc.m.cached")
    browser_with_cookie.cookies["messages"] = CookieStorage(HttpRequest())._encode([message])
    html = browser_with_cookie.get("/datasets/").content.decode()
    assert "registered mc.m.cached" in html
    assert "registered mc.m.cached" not in browser_with_cookie.get("/datasets/").content.decode()


def test_a_browser_without_a_csrf_cookie_gets_a_page_drawn_for_it_and_the_cookie(physicist):
    add("mc.c.cached")
    c = Client()
    c.force_login(physicist)
    response = c.get("/datasets/")
    assert "csrftoken" in response.cookies
    c.cookies.pop("csrftoken")
    response = c.get("/datasets/")
    assert "csrftoken" in response.cookies  # drawn for it again, with a cookie to keep


def test_a_login_does_not_empty_the_cache(browser_with_cookie, physicist):
    from django.contrib.auth.models import update_last_login

    before = generations.Cached(CATALOG, generations.ACCOUNTS).token()
    update_last_login(None, physicist)
    assert generations.Cached(CATALOG, generations.ACCOUNTS).token() == before
    physicist.first_name = "Ada"
    physicist.save()
    assert generations.Cached(CATALOG, generations.ACCOUNTS).token() != before


def test_a_change_whose_process_died_before_telling_the_cache_is_seen_after_the_ttl(
    browser, settings
):
    """The commit landed but the token was never replaced (the process was killed between
    the two; here, a change in SQL that no model sees): the entry expires after
    DSS_PAGE_CACHE_SECONDS and the next request shows the change."""
    import time

    settings.DSS_PAGE_CACHE_SECONDS = 1
    add("mc.k.cached")
    assert "mc.k.cached" in browser.get("/datasets/").content.decode()
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Dataset._meta.db_table)
        cursor.execute(
            f"UPDATE {table} SET name = %s WHERE name = %s", ["mc.k2.cached", "mc.k.cached"]
        )
    assert "mc.k.cached" in browser.get("/datasets/").content.decode()  # still the cached page
    time.sleep(1.5)
    html = browser.get("/datasets/").content.decode()
    assert "mc.k2.cached" in html and "mc.k.cached" not in html
