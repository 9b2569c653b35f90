"""Fixtures of the conditions tests: a conditions manager with an API token, and API
clients that read anonymously or write with HTTP Basic (user name and token)."""

from __future__ import annotations

import base64

import pytest
from rest_framework.test import APIClient

from tests.conftest import api_token, make_user

API = "/api/cdb_rest/"


def basic(user, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user.username}:{key}".encode()).decode()


@pytest.fixture
def manager(db):
    return make_user("condman", ["conditions-manager"])


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def writer(manager):
    """An API client that writes as the conditions manager, with HTTP Basic."""
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=basic(manager, api_token(manager)))
    return c


class Cdb:
    """The nopayloaddb API as the C++ client calls it, through a Django test client."""

    def __init__(self, client: APIClient):
        self.c = client

    def call(self, method: str, route: str, data=None, expect: int = 200):
        r = getattr(self.c, method)(API + route, data, format="json")
        assert r.status_code == expect, (route, r.status_code, getattr(r, "data", r.content))
        return r.data

    def gt(self, name: str):
        return self.call("post", "gt", {"name": name, "status": "unlocked", "author": "me"})

    def pt(self, name: str):
        return self.call("post", "pt", {"name": name})

    def insert(self, gt: str, pt: str, url: str, start, end=None, expect: int = 200):
        lists = self.call("get", f"gtPayloadLists/{gt}")
        if pt not in lists:
            name = self.call("post", "pl", {"payload_type": pt})["name"]
            self.call("put", "pl_attach", {"payload_list": name, "global_tag": gt})
            lists[pt] = name
        body = {"payload_url": url, "checksum": "c-" + url, "major_iov": start[0]}
        body["minor_iov"] = start[1]
        if end is not None:
            body.update(major_iov_end=end[0], minor_iov_end=end[1])
        iov = self.call("post", "piov", body)
        return self.call(
            "put", "piov_attach", {"payload_list": lists[pt], "piov_id": iov["id"]}, expect
        )

    def urls(self, gt: str, major: int, minor: int) -> dict:
        rows = self.call("get", f"payloadiovs/?gtName={gt}&majorIOV={major}&minorIOV={minor}")
        return {r[0]: r[1] for r in rows}


@pytest.fixture
def cdb(writer):
    return Cdb(writer)
