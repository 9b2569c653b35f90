"""Who may do what: anonymous visitors see only the login page; roles gate the actions."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/datasets/",
    "/datasets/demo.hzz/",
    "/storage/",
    "/storage/LOCAL/",
    "/account/",
    "/datasets/register/",
    "/api/docs/",
]


@pytest.mark.parametrize("url", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(demo_datasets, url):
    r = Client().get(url)
    assert r.status_code == 302
    assert r.url.startswith("/login/?next=")


def test_the_login_page_is_open_and_logs_in(physicist):
    c = Client()
    r = c.get("/login/")
    assert r.status_code == 200 and 'for="id_username"' in r.content.decode()
    r = c.post("/login/", {"username": "phys", "password": "phys-pw"})
    assert r.status_code == 302 and r.url == "/"
    assert c.get("/").status_code == 200
    r = c.post("/login/", {"username": "phys", "password": "wrong"})
    assert "did not match" in r.content.decode()


def test_a_physicist_cannot_open_the_registration_form(physicist):
    c = Client()
    c.force_login(physicist)
    assert c.get("/datasets/register/").status_code == 403


def test_roles_hold_their_permissions(physicist, siteadmin, operator, outsider):
    assert siteadmin.has_perm("dmu.add_dataset")
    assert not physicist.has_perm("dmu.add_dataset")
    assert not operator.has_perm("dmu.add_dataset")
    assert not outsider.has_perm("dmu.add_dataset")


def test_a_user_makes_a_named_token_and_sees_its_key_once(physicist):
    from dss.models import ApiToken

    c = Client()
    c.force_login(physicist)
    r = c.post("/account/tokens/", {"name": "laptop", "days": "30"})
    assert r.status_code == 302
    page = c.get("/account/").content.decode()
    (token,) = ApiToken.objects.filter(user=physicist)
    key = page.split('id="token" class="mono wide" readonly value="')[1].split('"')[0]
    assert key.startswith(token.prefix) and token.name == "laptop"
    assert key not in c.get("/account/").content.decode()  # shown once


def test_every_model_is_in_the_admin(siteadmin):
    from django.apps import apps
    from django.contrib import admin

    ours = [
        m
        for m in apps.get_models()
        if m._meta.app_label in ("dss", "dmu", "tagdb", "pilotchecker", "skims")
    ]
    missing = [m.__name__ for m in ours if m not in admin.site._registry]
    assert not missing
