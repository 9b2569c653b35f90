"""The conditions pages: tags, one tag, a comparison, the run axis, and locking."""

from __future__ import annotations

import pytest
from django.test import Client

from conditions import actions

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tags(manager):
    a = actions.do_create_global_tag(manager, "a")
    actions.do_create_payload_type(manager, "calib")
    actions.do_insert_iov(manager, a, "calib", "u1", "c1", (1, 0), (5, 0))
    actions.do_insert_iov(manager, a, "calib", "u2", "c2", (5, 0))
    b = actions.do_clone_global_tag(manager, a, "b")
    actions.do_insert_iov(manager, b, "calib", "u3", "c3", (7, 0))
    return a, b


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_the_pages_show_tags_iovs_and_the_run_axis(two_tags, physicist):
    c = logged_in(physicist)
    assert b"<strong>a</strong>" in c.get("/conditions/").content
    page = c.get("/conditions/gt/a/").content.decode()
    assert "u1" in page and "u2" in page and "open" in page and "Lock</button>" not in page
    axis = c.get("/conditions/type/calib/?gt=b").content.decode()
    assert axis.count("<rect") == 3 and "run 1" in axis


def test_compare_names_the_iovs_that_differ(two_tags, physicist):
    page = logged_in(physicist).get("/conditions/compare/?a=a&b=b").content.decode()
    # b cut u2 at run 7 and added u3: both sides differ in calib
    assert "u3" in page and "u2" in page and "u1" not in page.split("<h2")[1]
    same = logged_in(physicist).get("/conditions/compare/?a=a&b=a").content.decode()
    assert "answer every lookup alike" in same


def test_a_manager_locks_a_tag_and_a_physicist_may_not(two_tags, manager, physicist):
    r = logged_in(physicist).post("/conditions/gt/a/status/", {"status": "locked"})
    assert r.status_code == 403
    r = logged_in(manager).post("/conditions/gt/a/status/", {"status": "locked"})
    assert r.status_code == 302
    assert actions.get_global_tag("a").is_locked
    assert "Unlock</button>" in logged_in(manager).get("/conditions/gt/a/").content.decode()
