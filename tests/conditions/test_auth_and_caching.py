"""Who may write (admins and conditions managers, with an API token; never anonymous),
and the caching headers of answers about locked global tags."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conditions.conftest import API, basic
from tests.conftest import api_token, make_user

pytestmark = pytest.mark.django_db


def test_an_anonymous_write_is_refused_with_a_basic_challenge(anon):
    r = anon.post(API + "pt", {"name": "x"}, format="json")
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Basic")
    assert anon.get(API + "pt").json() == []


def test_a_token_writes_as_basic_or_as_token(manager, anon):
    key = api_token(manager)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=basic(manager, key))
    assert c.post(API + "pt", {"name": "one"}, format="json").status_code == 200
    c.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert c.post(API + "pt", {"name": "two"}, format="json").status_code == 200
    assert [t["name"] for t in anon.get(API + "pt").json()] == ["one", "two"]


def test_a_password_or_another_users_token_is_refused(manager, physicist):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION="Basic " + basic(manager, "condman-pw").split()[1])
    assert c.post(API + "pt", {"name": "x"}, format="json").status_code == 401
    c.credentials(HTTP_AUTHORIZATION=basic(manager, api_token(physicist)))
    r = c.post(API + "pt", {"name": "x"}, format="json")
    assert r.status_code == 401 and "not that user's" in r.json()["detail"]


@pytest.mark.parametrize("role,status", [("physicist", 403), ("operator", 403), ("admin", 200)])
def test_only_admins_and_conditions_managers_write(role, status):
    user = make_user(f"u-{role}", [role])
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=basic(user, api_token(user)))
    r = c.post(API + "gt", {"name": "g", "status": "unlocked"}, format="json")
    assert r.status_code == status, r.content


@pytest.fixture
def locked(cdb):
    cdb.gt("gt")
    cdb.pt("calib")
    cdb.insert("gt", "calib", "a", (1, 0), (10, 0))
    cdb.call("put", "gt_change_status/gt/locked")
    return cdb


LOOKUP = API + "payloadiovs/?gtName=gt&majorIOV=5&minorIOV=0"


def test_a_locked_tags_answer_carries_etag_and_a_conditional_get_is_304(locked, anon):
    r = anon.get(LOOKUP)
    assert r.status_code == 200
    etag = r["ETag"]
    assert r["Cache-Control"].startswith("public, max-age=")
    again = anon.get(LOOKUP, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == etag
    assert anon.get(LOOKUP, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    lists = anon.get(API + "gtPayloadLists/gt")
    assert anon.get(API + "gtPayloadLists/gt", HTTP_IF_NONE_MATCH=lists["ETag"]).status_code == 304


def test_the_etag_follows_the_answer(locked, anon):
    before = anon.get(API + "payloadiovs/?gtName=gt&majorIOV=12&minorIOV=0")
    locked.insert("gt", "calib", "b", (10, 0))
    after = anon.get(API + "payloadiovs/?gtName=gt&majorIOV=12&minorIOV=0")
    assert before.json() == [] and after.json()[0][1] == "b"
    assert before["ETag"] != after["ETag"]


def test_an_unlocked_tags_answer_is_not_kept(locked, anon):
    locked.call("put", "gt_change_status/gt/unlocked")
    r = anon.get(LOOKUP)
    assert "ETag" not in r and r["Cache-Control"] == "no-cache"


def test_statuses_are_fixed(cdb):
    assert [s["name"] for s in cdb.call("get", "gtstatus")] == ["unlocked", "locked"]
    assert cdb.call("post", "gtstatus", {"name": "locked"})["name"] == "locked"
    r = cdb.call("post", "gtstatus", {"name": "frozen"}, expect=400)
    assert "frozen" in r["detail"]
    cdb.gt("g")
    cdb.call("put", "gt_change_status/g/frozen", expect=400)
