"""Headers every answer carries: the Content-Security-Policy, and no-store on every answer
that shows an API token."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_account_page_which_shows_the_token_is_never_stored(physicist):
    c = Client()
    c.force_login(physicist)
    created = c.post("/account/tokens/", {"name": "laptop", "days": 30})
    assert "no-store" in created["Cache-Control"]
    r = c.get("/account/")  # shows the new key, once
    assert r.status_code == 200 and "laptop" in r.content.decode()
    assert "no-store" in r["Cache-Control"] and "private" in r["Cache-Control"]


def test_the_token_endpoint_answer_is_never_stored(physicist):
    r = Client().post("/api/token/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 201 and r.json()["token"]
    assert "no-store" in r["Cache-Control"]


def test_a_refused_token_request_has_the_usual_error_body(physicist):
    r = Client().post("/api/token/", {"username": "phys", "password": "wrong"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid" and "wrong user name or password" in r.json()["detail"]


@pytest.mark.parametrize("url", ["/login/", "/datasets/", "/api/datasets/", "/api/docs/"])
def test_pages_and_api_answers_carry_the_content_security_policy(physicist, url):
    c = Client()
    c.force_login(physicist)
    policy = c.get(url)["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
