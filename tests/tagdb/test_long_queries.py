"""Long selections and real-size good-run lists on the TAG page: the page sends them in
POST bodies, so neither the URL limits of a server (gunicorn refuses request lines over
4,094 bytes) nor selection text limits them. Checked through the Django test client and
through gunicorn serving the portal on a loopback port."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
import uproot
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape

from tagdb.schema import builtin_schemas, compute_tags
from tagdb.selection import evaluate, parse
from tests.conftest import ROOT, ZMUMU, _database_url_for_worker
from tests.tagdb import goodruns_data as data
from tests.tagdb.portal import client_for, lumi, tagged  # noqa: F401


def long_selection(length: int = 3900) -> str:
    """A valid selection on demo.zmumu of ``length`` characters."""
    terms, i = [], 0
    while True:
        text = " || ".join(terms)
        if len(text) >= length - 40:
            break
        terms.append(f"(mass > {60 + i % 50} && mu1_pt > {i % 30})")
        i += 1
    text = f"({text}) && opposite_charge"
    return text + " " * (length - len(text))


def zmumu_count(selection: str) -> int:
    with uproot.open(ZMUMU) as f:
        tags = compute_tags(builtin_schemas()["zmumu"], f["events"])
    return int(evaluate(parse(selection), tags).sum())


def csv_rows(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


# --------------------------------------------------------------------------- Django test client


def test_a_long_selection_is_posted_by_the_page_and_answered(tagged, physicist):  # noqa: F811
    selection = long_selection()
    assert len(selection) == 3900
    expected = zmumu_count(selection)
    assert 0 < expected < 2304
    c = client_for(physicist)
    pk = tagged.zmumu.pk
    html = c.post(f"/tags/{pk}/", {"selection": selection, "attribute": "mass"}).content.decode()
    assert f"<strong>{expected:,}</strong> of 2,304 events pass" in html
    assert '<svg class="histogram"' in html
    assert "Link to this view" not in html  # too long for a URL
    live = c.post(f"/tags/{pk}/count/", {"selection": selection}, HTTP_HX_REQUEST="true")
    assert f"<strong>{expected:,}</strong> of 2,304 events pass" in live.content.decode()
    rows = csv_rows(c.post(f"/tags/{pk}/events.csv", {"selection": selection}))
    assert len(rows) == 1 + expected
    doc = json.loads(
        b"".join(c.post(f"/tags/{pk}/events.json", {"selection": selection}).streaming_content)
    )
    assert len(doc["events"]) == expected and doc["warnings"] == []
    svg = c.post(f"/tags/{pk}/histogram.svg", {"selection": selection, "attribute": "mass"})
    assert svg.status_code == 200 and svg.content.startswith(b"<svg")
    form = c.post(
        "/skims/new/", {"prefill": "1", "collection": str(pk), "selection": selection}
    ).content.decode()
    assert "New skim" in form and escape(selection[:200]) in form
    assert "This field is required" not in form  # the skim form is filled in, not submitted


def test_the_page_applies_a_real_size_good_run_list_from_a_file(lumi, physicist):  # noqa: F811
    events = data.lumi_events()
    keep = data.expected_mask(events["Run"], events["LumiBlock"]) & (events["pt"] > 20)
    missing = data.missing_runs(events["Run"])
    c = client_for(physicist)
    url = lumi.get_absolute_url()
    upload = SimpleUploadedFile("grl.xml", data.atlas_xml().encode(), "application/xml")
    html = c.post(
        url, {"selection": "pt > 20", "attribute": "pt", "good_runs_file": upload}
    ).content.decode()
    assert f"<strong>{int(keep.sum()):,}</strong> of 20,000 events pass" in html
    assert "500 runs, 10,000 luminosity-block ranges" in html and "Read from grl.xml" in html
    assert f"{len(missing)} runs of the GRL are not in this collection: {missing[0]}, " in html
    # The list comes back as compact JSON in the box, and every later request carries it.
    box = re.search(r'<textarea name="good_runs"[^>]*>(.*?)</textarea>', html, re.S).group(1)
    carried = json.loads(box.replace("&quot;", '"'))
    assert len(carried) == 500 and sum(len(r) for r in carried.values()) == 10_000
    body = {"selection": "pt > 20", "good_runs": json.dumps(carried)}
    live = c.post(f"/tags/{lumi.pk}/count/", body, HTTP_HX_REQUEST="true").content.decode()
    assert f"<strong>{int(keep.sum()):,}</strong> of 20,000 events pass" in live
    assert "within the good-run list" in live
    response = c.post(f"/tags/{lumi.pk}/events.csv", body)
    rows = csv_rows(response)
    assert [int(r[1]) for r in rows[1:]] == np.flatnonzero(keep).tolist()
    assert response["DSS-Warnings"].startswith(f"{len(missing)} runs of the GRL are not in")
    form = c.post("/skims/new/", {"prefill": "1", "collection": str(lumi.pk), **body})
    assert "200200" in form.content.decode()  # the skim form holds the list


def test_a_malformed_list_file_is_explained_on_the_page(lumi, physicist):  # noqa: F811
    bad = data.atlas_xml().replace('End="7"/>', 'End="x7"/>', 1)
    line = bad[: bad.index('End="x7"')].count("\n") + 1
    upload = SimpleUploadedFile("grl.xml", bad.encode(), "application/xml")
    html = client_for(physicist).post(lumi.get_absolute_url(), {"good_runs_file": upload})
    text = html.content.decode()
    assert html.status_code == 200
    assert f"line {line}: run 200200: LBRange End &#x27;x7&#x27; is not a whole number" in text


# --------------------------------------------------------------------------- gunicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    """The portal served by gunicorn (one worker) on a free loopback port, reading the
    test database, TAG DB and storage."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=_database_url_for_worker(),
        TAGDB_URL=settings.TAGDB_URL,
        DSS_STORAGE_ROOT=str(settings.DSS_STORAGE_ROOT),
    )
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "dss.wsgi"),
            *("--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "120"),
            "--no-control-socket",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a bound for a loaded machine, not a speed test
        while True:
            try:
                requests.get(f"{url}/login/", timeout=30)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _logged_in(url: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{url}/login/", timeout=30)
    r = session.post(
        f"{url}/login/",
        data={
            "username": "phys",
            "password": "phys-pw",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        timeout=30,
    )
    assert r.status_code == 200 and "Log out" in r.text, r.text[:500]
    return session


def test_gunicorn_answers_a_long_selection_posted_by_the_page(gunicorn, tagged, physicist):  # noqa: F811
    selection = long_selection()
    expected = zmumu_count(selection)
    session = _logged_in(gunicorn)
    page = f"{gunicorn}/tags/{tagged.zmumu.pk}/"
    token = session.cookies["csrftoken"]
    r = session.post(page, data={"selection": selection, "csrfmiddlewaretoken": token}, timeout=120)
    assert r.status_code == 200
    assert f"<strong>{expected:,}</strong> of 2,304 events pass" in r.text
    r = session.post(
        f"{page}count/",
        data={"selection": selection},
        headers={"X-CSRFToken": token, "HX-Request": "true"},
        timeout=120,
    )
    assert r.status_code == 200 and f"<strong>{expected:,}</strong>" in r.text
    # The same query in a URL is more than gunicorn takes: why the page posts it.
    r = session.get(f"{page}?{urlencode({'selection': selection})}", timeout=120)
    assert r.status_code in (400, 414) and "too large" in r.text.lower()
