"""API tokens: several per user, named, stored as hashes, expiring, rotated and revoked one
by one; the command lines' ``Authorization: Token <key>`` keeps working. Logins and the
token endpoint are throttled and lock out after repeated wrong passwords."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from dss import tokens
from dss.models import ApiToken
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def with_key(key: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return c


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_user_holds_several_named_tokens_each_working(physicist):
    laptop = tokens.do_issue_token(physicist, "laptop")
    batch = tokens.do_issue_token(physicist, "batch jobs", days=7)

    for issued in (laptop, batch):
        assert with_key(issued.key).get("/api/datasets/").status_code == 200
    assert batch.token.expires_at - batch.token.created_at == timedelta(days=7)
    assert laptop.token.expires_at - laptop.token.created_at == timedelta(days=90)
    laptop.token.refresh_from_db()
    assert laptop.token.last_used_at is not None


def test_only_a_hash_of_the_key_is_stored(physicist):
    issued = tokens.do_issue_token(physicist, "laptop")

    row = ApiToken.objects.values().get(pk=issued.token.pk)
    assert issued.key not in str(row)
    assert row["key_hash"] == tokens.hash_key(issued.key) and len(issued.key) > 40


def test_an_expired_token_answers_401_saying_when(physicist):
    issued = tokens.do_issue_token(physicist, "old laptop")
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now())

    r = with_key(issued.key).get("/api/datasets/")

    assert r.status_code == 401 and r["WWW-Authenticate"] == "Token"
    assert r.json()["error"] == "authentication_failed"
    assert "this token (old laptop) expired on" in r.json()["detail"]


def test_a_wrong_key_answers_401(physicist):
    r = with_key("dss_not-a-key").get("/api/datasets/")
    assert r.status_code == 401 and r.json()["detail"] == "invalid token"


def test_rotating_gives_a_new_key_and_stops_the_old_one(physicist):
    old = tokens.do_issue_token(physicist, "laptop")

    r = with_key(old.key).post(f"/api/tokens/{old.token.pk}/rotate/")

    assert r.status_code == 201, r.json()
    new_key = r.json()["token"]
    assert r.json()["name"] == "laptop" and new_key != old.key
    assert with_key(new_key).get("/api/datasets/").status_code == 200
    refused = with_key(old.key).get("/api/datasets/")
    assert refused.status_code == 401 and "rotated" in refused.json()["detail"]
    old.token.refresh_from_db()
    assert old.token.replaced_by.prefix == new_key[: len(old.token.prefix)]


def test_revoking_one_token_leaves_the_others(physicist):
    laptop = tokens.do_issue_token(physicist, "laptop")
    batch = tokens.do_issue_token(physicist, "batch")

    r = logged_in(physicist).post(f"/account/tokens/{laptop.token.pk}/revoke/")

    assert r.status_code == 302
    refused = with_key(laptop.key).get("/api/datasets/")
    assert refused.status_code == 401 and "revoked on" in refused.json()["detail"]
    assert with_key(batch.key).get("/api/datasets/").status_code == 200
    assert "revoked" in logged_in(physicist).get("/account/").content.decode()


def test_the_account_page_rotates_and_shows_the_new_key_once(physicist):
    old = tokens.do_issue_token(physicist, "laptop")
    c = logged_in(physicist)

    assert c.post(f"/account/tokens/{old.token.pk}/rotate/").status_code == 302
    page = c.get("/account/").content.decode()

    new = ApiToken.objects.get(user=physicist, revoked_at=None)
    assert new.prefix in page and "Your new token “laptop”" in page
    assert with_key(old.key).get("/api/datasets/").status_code == 401
    assert "Your new token" not in c.get("/account/").content.decode()


def test_another_users_token_cannot_be_seen_rotated_or_revoked(physicist):
    theirs = tokens.do_issue_token(make_user("phys2", ["physicist"]), "theirs")
    mine = tokens.do_issue_token(physicist, "mine")
    c = with_key(mine.key)

    assert [t["name"] for t in c.get("/api/tokens/").json()] == ["mine"]
    assert c.post(f"/api/tokens/{theirs.token.pk}/rotate/").status_code == 404
    assert c.post(f"/api/tokens/{theirs.token.pk}/revoke/").status_code == 404
    assert (
        logged_in(physicist).post(f"/account/tokens/{theirs.token.pk}/revoke/").status_code == 404
    )
    assert with_key(theirs.key).get("/api/datasets/").status_code == 200


@pytest.mark.parametrize("days", [0, -1, 366, "many"])
def test_a_lifetime_out_of_bounds_is_refused(physicist, days):
    mine = tokens.do_issue_token(physicist, "mine")

    r = with_key(mine.key).post("/api/tokens/", {"name": "x", "days": days}, format="json")

    assert r.status_code == 400 and r.json()["where"] == "days"
    assert ApiToken.objects.filter(user=physicist).count() == 1


def test_a_revoked_token_cannot_be_rotated_back_to_life(physicist):
    issued = tokens.do_issue_token(physicist, "laptop")
    tokens.do_revoke_token(issued.token)
    c = logged_in(physicist)

    c.post(f"/account/tokens/{issued.token.pk}/rotate/")

    assert ApiToken.objects.filter(user=physicist, revoked_at=None).count() == 0


def test_the_tokens_of_before_keep_working_hashed(physicist):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("dss.migrations.0004_api_tokens")
    key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, "
            "user_id integer)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
            [key, timezone.now(), physicist.pk],
        )
        migration.hash_the_old_tokens(apps, connection.schema_editor())
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        left = cursor.fetchone()[0]

    assert left == 0  # no plain-text key stays behind
    assert with_key(key).get("/api/datasets/").status_code == 200
    assert ApiToken.objects.get(user=physicist).name == "token from before"


# --------------------------------------------------------------------------- throttling


def wrong_login(c: Client, username: str = "phys"):
    return c.post("/login/", {"username": username, "password": "wrong"})


def test_the_login_page_locks_a_user_name_out_after_repeated_failures(physicist, settings):
    c = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert wrong_login(c).status_code == 200

    locked = wrong_login(c)
    right = c.post("/login/", {"username": "phys", "password": "phys-pw"})

    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert right.status_code == 429 and "_auth_user_id" not in c.session
    # the token endpoint honours the same lockout
    r = APIClient().post("/api/token/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 429 and r.json()["error"] == "locked_out"
    assert int(r["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    # someone else logging in from the same address is not locked out
    make_user("phys2", ["physicist"])
    ok = c.post("/login/", {"username": "phys2", "password": "phys2-pw"})
    assert ok.status_code == 302


def test_a_right_password_resets_the_count_of_failures(physicist, settings):
    c = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        wrong_login(c)
    assert c.post("/login/", {"username": "phys", "password": "phys-pw"}).status_code == 302

    answers = [wrong_login(Client()).status_code for _ in range(settings.AXES_FAILURE_LIMIT - 1)]

    assert answers == [200] * (settings.AXES_FAILURE_LIMIT - 1)


def test_the_token_endpoint_locks_out_after_repeated_wrong_passwords(physicist, settings):
    c = APIClient()
    answers = [
        c.post("/api/token/", {"username": "phys", "password": "wrong"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]

    assert answers == [400] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    r = c.post("/api/token/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 429 and not ApiToken.objects.exists()


def test_the_token_endpoint_is_rate_limited(physicist):
    c = APIClient()
    answers = [c.post("/api/token/", {"username": "phys"}).status_code for _ in range(11)]

    assert answers == [400] * 10 + [429]
    r = c.post("/api/token/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 429 and r.json()["error"] == "throttled"
    assert int(r["Retry-After"]) > 0


def test_the_api_is_rate_limited_per_user(physicist, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "rate", "3/min", raising=False)
    c = with_key(tokens.do_issue_token(physicist, "laptop").key)
    other = with_key(tokens.do_issue_token(make_user("phys2", ["physicist"]), "x").key)

    answers = [c.get("/api/datasets/").status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]
    assert other.get("/api/datasets/").status_code == 200
