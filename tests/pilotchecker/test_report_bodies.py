"""Report bodies: one posted with Transfer-Encoding: chunked, through a real gunicorn, is
read whole (and refused when larger than PILOT_REPORT_MAX_BYTES), like one with a length;
one with text the database cannot store is refused."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from pilotchecker.models import Pilot
from tests.pilotchecker.conftest import a_report, send, token_of

pytestmark = pytest.mark.django_db(transaction=True)


def post_chunked(base: str, pilot: Pilot, token: str, data: bytes, chunk: int = 1000):
    """POST ``data`` in chunks of ``chunk`` bytes, with no Content-Length."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    pieces = (data[i : i + chunk] for i in range(0, len(data), chunk))
    conn.request(
        "POST",
        f"/api/pilots/{pilot.pk}/report/",
        body=pieces,
        headers={"Authorization": f"Pilot {token}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    r = conn.getresponse()
    answer = (r.status, r.getheader("Transfer-Encoding"), json.loads(r.read() or b"null"))
    conn.close()
    return answer


def test_a_chunked_report_is_read_whole_under_gunicorn(fake_batch, site, gunicorn_portal):
    (p,) = send(site)
    data = json.dumps(a_report("warning")).encode()
    status, _, body = post_chunked(gunicorn_portal, p, token_of(p), data, chunk=97)
    assert status == 201, body
    assert body == {"status": "received", "pilot": p.pk, "verdict": "warning"}
    p.refresh_from_db()
    assert p.state == "reported" and p.report["facts"]["host"]["hostname"] == "wn042"


def test_a_chunked_report_past_the_limit_is_refused_and_not_stored(
    fake_batch, site, gunicorn_portal, settings
):
    (p,) = send(site)
    report = a_report("passed")
    report["facts"]["padding"] = "x" * (settings.PILOT_REPORT_MAX_BYTES + 10)
    status, _, body = post_chunked(gunicorn_portal, p, token_of(p), json.dumps(report).encode())
    assert status == 400 and body["error"] == "invalid", body
    assert f"at most {settings.PILOT_REPORT_MAX_BYTES} are accepted" in body["detail"]
    p.refresh_from_db()
    assert p.report is None and p.token_used_at is None


@pytest.mark.parametrize("bad", ["wn\x00", "wn\ud800"])
def test_a_report_with_text_the_database_cannot_store_is_refused(fake_batch, site, bad):
    """NUL and lone surrogates (which PostgreSQL refuses) are a 400 naming where."""
    from rest_framework.test import APIClient

    (p,) = send(site)
    report = a_report("passed")
    report["facts"]["host"]["hostname"] = bad
    r = APIClient().post(
        f"/api/pilots/{p.pk}/report/",
        json.dumps(report).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Pilot {token_of(p)}",
    )
    assert r.status_code == 400 and r.json()["where"] == "facts.host.hostname"
    p.refresh_from_db()
    assert p.report is None and p.token_used_at is None
