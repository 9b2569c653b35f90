"""The TAG pages: the collection page with its live count, plots, exports, saved queries,
event picking and good-run lists; the build pages; the dataset page's TAG section."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client

from tests.tagdb.portal import client_for, tagged  # noqa: F401


class PageAudit(HTMLParser):
    """Collects what the accessibility checks need: title, h1s, controls and labels."""

    def __init__(self):
        super().__init__()
        self.title = ""
        self.h1 = 0
        self.in_title = False
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "title":
            self.in_title = True
        elif tag == "h1":
            self.h1 += 1
        elif tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea"):
            if a.get("type") not in ("hidden", "submit", "button"):
                self.controls.append(a)

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False

    def handle_data(self, data):
        if self.in_title:
            self.title += data


def audit(html: str) -> PageAudit:
    page = PageAudit()
    page.feed(html)
    assert page.title.strip(), "the page has no title"
    assert page.h1 == 1, f"the page has {page.h1} h1 elements"
    unlabelled = [
        c for c in page.controls if c.get("id") not in page.label_for and not c.get("aria-label")
    ]
    assert not unlabelled, f"controls without a label: {unlabelled}"
    duplicated = {i for i in page.ids if page.ids.count(i) > 1}
    assert not duplicated, f"duplicate ids: {duplicated}"
    return page


def text_of(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def test_the_collection_page_shows_the_count_a_histogram_and_the_attributes(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    r = c.get(tagged.hzz.get_absolute_url(), {"selection": "n_muon >= 2", "attribute": "met"})
    assert r.status_code == 200
    html = r.content.decode()
    page = audit(html)
    assert "TAGs of demo.hzz" in page.title
    assert "<strong>1,413</strong> of 2,421 events pass" in html
    assert "in 1 of 1 file" in html
    assert '<svg class="histogram"' in html and "met [GeV]" in html
    assert html.count('class="bar"') >= 10
    assert "Missing transverse energy" in html and "0.3489 … 341.9" in html
    assert "Top events" in html and "341.9" in html
    # "Skim these events" posts the query form (collection, selection) to the skim form.
    form = re.search(r'<form id="query" method="post"[^>]*>', html).group(0)
    assert 'enctype="multipart/form-data"' in form
    assert f'<input type="hidden" name="collection" value="{tagged.hzz.pk}">' in html
    assert re.search(r'<button[^>]*formaction="/skims/new/"[^>]*>Skim these events', html)
    share = re.search(r'<a href="([^"]+)">Link to this view</a>', html).group(1)
    query = parse_qs(urlparse(share.replace("&amp;", "&")).query)
    assert query["selection"] == ["n_muon >= 2"] and query["attribute"] == ["met"]
    posted = c.post(
        tagged.hzz.get_absolute_url(), {"selection": "n_muon >= 2", "attribute": "met"}
    ).content.decode()
    assert "<strong>1,413</strong> of 2,421 events pass" in posted and "met [GeV]" in posted


def test_the_selection_box_asks_for_a_live_count_as_you_type(tagged, physicist):  # noqa: F811
    html = client_for(physicist).get(tagged.hzz.get_absolute_url()).content.decode()
    box = re.search(r"<textarea[^>]*id=\"id_selection\"[^>]*>", html, re.S).group(0)
    assert f'hx-post="/tags/{tagged.hzz.pk}/count/"' in box
    assert 'hx-trigger="input changed delay:300ms"' in box
    assert 'hx-target="#live-count"' in box


def test_the_live_count_fragment_shows_the_count(tagged, physicist):  # noqa: F811
    r = client_for(physicist).post(
        f"/tags/{tagged.hzz.pk}/count/", {"selection": "n_muon>=2"}, HTTP_HX_REQUEST="true"
    )
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html
    assert "<strong>1,413</strong> of 2,421 events pass (58.4%)" in html
    assert "Skim these events" in html
    assert f'formaction="/tags/{tagged.hzz.pk}/events.csv"' in html


def test_the_live_count_fragment_points_at_the_bad_token(tagged, physicist):  # noqa: F811
    r = client_for(physicist).get(
        f"/tags/{tagged.hzz.pk}/count/", {"selection": "n_muon >= 2 && met_x > 3"}
    )
    html = r.content.decode()
    assert r.status_code == 200
    assert "unknown attribute &#x27;met_x&#x27; at column 16; did you mean &#x27;met&#x27;?" in html
    caret = re.search(r'<pre class="caret"[^>]*>(.*?)</pre>', html, re.S).group(1)
    line, marker = caret.split("\n")
    assert line == "n_muon &gt;= 2 &amp;&amp; met_x &gt; 3"
    assert marker == " " * 15 + "^"
    assert "Skim these events" not in html


@pytest.mark.parametrize(
    "selection, message",
    [
        ("(n_muon >= 2", "column"),
        ("n_muon >=", "column"),
        ("met > 40; DROP TABLE tag_c1", "unexpected character &#x27;;&#x27; at column 9"),
        ("x" * 5000, "too long"),
        ("(" * 200 + "met > 1" + ")" * 200, "nested too deeply"),
        ("met", "must be a condition"),
    ],
)
def test_bad_selections_are_explained_on_the_page(tagged, physicist, selection, message):  # noqa: F811
    c = client_for(physicist)
    r = c.get(f"/tags/{tagged.hzz.pk}/count/", {"selection": selection})
    assert r.status_code == 200 and message in r.content.decode()
    r = c.get(tagged.hzz.get_absolute_url(), {"selection": selection})
    assert r.status_code == 200 and message in r.content.decode()
    audit(r.content.decode())


def test_the_event_list_downloads_as_csv_and_json(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    r = c.get(f"/tags/{tagged.zmumu.pk}/events.csv", {"selection": "mass > 120"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(text_of(r))))
    assert rows[0] == ["file_guid", "entry", "run", "event"]
    assert len(rows) == 1 + 4 and rows[1][2] == "148031" and rows[1][3] == "425778251"
    r = c.get(f"/tags/{tagged.hzz.pk}/events.json", {"selection": "n_muon >= 2"})
    doc = json.loads(text_of(r))
    assert doc["selection"] == "n_muon >= 2" and len(doc["events"]) == 1413
    assert set(doc["events"][0]) == {"file_guid", "entry", "run", "event"}
    r = c.get(f"/tags/{tagged.hzz.pk}/events.csv", {"selection": "met_x > 3"})
    assert r.status_code == 400 and "met_x" in r.content.decode()


def test_event_list_downloads_show_a_missing_value_as_empty_or_null(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    query = {"selection": "n_muon <= 1", "attribute": ["lead_muon_pt", "n_muon"]}
    rows = list(csv.reader(io.StringIO(text_of(c.get(f"/tags/{tagged.hzz.pk}/events.csv", query)))))
    assert rows[0] == ["file_guid", "entry", "run", "event", "lead_muon_pt", "n_muon"]
    without = [r for r in rows[1:] if r[5] == "0"]
    assert len(without) == 59 and {r[4] for r in without} == {""}
    assert all(float(r[4]) > 0 for r in rows[1:] if r[5] == "1")
    doc = json.loads(text_of(c.get(f"/tags/{tagged.hzz.pk}/events.json", query)))
    values = [e["lead_muon_pt"] for e in doc["events"] if e["n_muon"] == 0]
    assert len(values) == 59 and set(values) == {None}
    assert "-999" not in text_of(c.get(f"/tags/{tagged.hzz.pk}/events.csv", query))
    r = c.get(f"/tags/{tagged.hzz.pk}/events.csv", {"attribute": "lead_muon_ptt"})
    assert r.status_code == 400 and "did you mean 'lead_muon_pt'" in r.content.decode()


def test_the_histogram_downloads_as_svg(tagged, physicist):  # noqa: F811
    r = client_for(physicist).get(
        f"/tags/{tagged.zmumu.pk}/histogram.svg",
        {"attribute": "mass", "selection": "opposite_charge", "bins": "30"},
    )
    assert r.status_code == 200 and r["Content-Type"] == "image/svg+xml"
    svg = r.content.decode()
    assert svg.startswith("<svg") and "mass [GeV]" in svg and "events / " in svg
    assert svg.count('class="bar"') <= 30


def test_a_physicist_saves_loads_and_deletes_a_query(tagged, physicist):  # noqa: F811
    from tagdb.models import SavedQuery

    c = client_for(physicist)
    url = f"/tags/{tagged.hzz.pk}/queries/"
    r = c.post(url, {"name": "dimuon", "selection": "n_muon >= 2"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and "Saved “dimuon”" in r.content.decode()
    saved = SavedQuery.objects.get(owner=physicist)
    assert saved.selection == "n_muon >= 2"
    page = c.get(tagged.hzz.get_absolute_url()).content.decode()
    assert '<input type="hidden" name="selection" value="n_muon &gt;= 2">' in page
    r = c.post(url, {"name": "dimuon", "selection": "n_muon >= 3"}, HTTP_HX_REQUEST="true")
    assert SavedQuery.objects.get(owner=physicist).selection == "n_muon >= 3"  # replaced
    r = c.post(url, {"name": "bad", "selection": "met_x > 1"}, HTTP_HX_REQUEST="true")
    assert "met_x" in r.content.decode() and not SavedQuery.objects.filter(name="bad").exists()
    r = c.post(f"/tags/queries/{saved.pk}/delete/")
    assert r.status_code == 302 and not SavedQuery.objects.exists()


def test_only_the_owner_deletes_a_saved_query_and_an_operator_cannot_save(
    tagged,  # noqa: F811
    physicist,
    operator,
):
    from tagdb import actions

    saved = actions.check_save_query(physicist, tagged.hzz, "mine", "met > 40")
    c = client_for(operator)
    assert c.post(f"/tags/queries/{saved.pk}/delete/").status_code == 404
    r = c.post(f"/tags/{tagged.hzz.pk}/queries/", {"name": "x", "selection": "met > 1"})
    assert r.status_code == 403
    assert "Save the selection as" not in c.get(tagged.hzz.get_absolute_url()).content.decode()


def test_picking_events_on_the_page_lists_found_missing_and_duplicated(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    r = c.post(
        f"/tags/{tagged.zmumu.pk}/pick/",
        {"events": "148031 10507008\n1 2\n"},
        HTTP_HX_REQUEST="true",
    )
    html = r.content.decode()
    assert r.status_code == 200 and "<html" not in html
    assert "Found 4 events for 2 pairs; 1 not found; 1 matched more than one event" in html
    assert "1:2" in html and "148031:10507008" in html and "uproot-Zmumu.root" in html
    r = c.post(f"/tags/{tagged.zmumu.pk}/pick/", {"events": "148031 x"})
    assert r.status_code == 200 and "line 1" in r.content.decode()
    audit(r.content.decode())


def test_a_good_run_list_is_applied_beside_the_selection(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    url = tagged.zmumu.get_absolute_url()
    r = c.post(
        url, {"good_runs": '{"148029": [[1, 500]], "7": [[1, 2]]}', "selection": "mass > 80"}
    )
    html = r.content.decode()
    audit(html)
    from tagdb import actions

    expected = actions.count(tagged.zmumu, "mass > 80 && run == 148029").count
    assert f"<strong>{expected:,}</strong> of 2,304 events pass" in html
    assert "within the good-run list" in html
    assert "1 run of the GRL is not in this collection: 7" in html
    assert "no luminosity-block numbers: the GRL&#x27;s runs are kept whole" in html
    assert "Link to this view" not in html  # a list does not fit in a link
    r = c.post(url, {"good_runs": '{"run": 1}', "selection": "mass > 80"})
    assert r.status_code == 200 and "run number &#x27;run&#x27;" in r.content.decode()


def test_the_dataset_page_shows_its_tag_collections(tagged, physicist, operator):  # noqa: F811
    html = client_for(physicist).get("/datasets/demo.hzz/").content.decode()
    assert "TAG collections" in html and "hzz v1" in html and "2,421" in html
    assert f'href="/tags/{tagged.hzz.pk}/"' in html and "Open TAGs" in html
    assert "Rebuild TAGs" in html
    html = client_for(operator).get("/datasets/demo.hzz/").content.decode()
    assert "Open TAGs" in html and "Rebuild TAGs" not in html


def test_a_dataset_without_tags_offers_to_build_them(demo_datasets, physicist):
    html = client_for(physicist).get("/datasets/demo.hzz/").content.decode()
    assert "No TAGs yet" in html and "/tags/build/?dataset=demo.hzz" in html


def test_the_index_lists_collections_and_untagged_datasets(tagged, physicist):  # noqa: F811
    r = client_for(physicist).get("/tags/")
    html = r.content.decode()
    audit(html)
    assert "demo.hzz" in html and "zmumu v1" in html and "2,304" in html


def test_a_physicist_starts_a_build_from_the_form(
    demo_datasets, physicist, django_capture_on_commit_callbacks
):
    from tagdb.models import TagBuild

    c = client_for(physicist)
    r = c.get("/tags/build/", {"dataset": "demo.zmumu"})
    audit(r.content.decode())
    assert 'value="demo.zmumu" selected' in r.content.decode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = c.post("/tags/build/", {"dataset": "demo.zmumu", "schema": ""})
    build = TagBuild.objects.get()
    assert r.status_code == 302 and r.url == f"/tags/builds/{build.pk}/"
    assert build.collection.schema.name == "zmumu" and build.progress_total == 1
    assert len(callbacks) == 1
    html = c.get(r.url).content.decode()
    audit(html)
    assert "Waiting for a worker" in html and 'hx-trigger="every 1s"' in html
    assert "Cancel the build" in html
    r = c.post(f"/tags/builds/{build.pk}/cancel/")
    build.refresh_from_db()
    assert build.state == "cancelled"
    html = c.get(f"/tags/builds/{build.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "every 1s" not in html and "cancelled by phys" in html


def test_another_physicist_cannot_cancel_a_build_and_an_admin_can(
    demo_datasets, physicist, siteadmin, django_capture_on_commit_callbacks
):
    from tagdb import actions
    from tagdb.models import TagBuild
    from tests.conftest import make_user

    with django_capture_on_commit_callbacks(execute=False):
        actions.do_start_build(demo_datasets[1], None, physicist)
    build = TagBuild.objects.get()
    other = client_for(make_user("phys2", ["physicist"]))

    assert "Cancel the build" not in other.get(f"/tags/builds/{build.pk}/").content.decode()
    r = other.post(f"/tags/builds/{build.pk}/cancel/")
    assert r.status_code == 403
    build.refresh_from_db()
    assert build.state == "queued"
    r = client_for(siteadmin).post(f"/tags/builds/{build.pk}/cancel/")
    build.refresh_from_db()
    assert r.status_code == 302 and build.state == "cancelled"
    assert build.message == "cancelled by admin1"


def test_a_second_build_on_the_form_is_refused_with_a_reason(demo_datasets, physicist):
    from tagdb import actions

    actions.do_start_build(demo_datasets[0], actions.get_schema("hzz"), physicist)
    r = client_for(physicist).post("/tags/build/", {"dataset": "demo.hzz", "schema": ""})
    assert r.status_code == 200 and "already being built" in r.content.decode()


def test_an_outsider_cannot_build_and_an_anonymous_visitor_is_sent_to_log_in(tagged, outsider):  # noqa: F811
    c = client_for(outsider)
    assert c.get("/tags/build/").status_code == 403
    assert c.post("/tags/build/", {"dataset": "demo.hzz"}).status_code == 403
    assert c.get(tagged.hzz.get_absolute_url()).status_code == 200  # browsing needs no role
    anonymous = Client()
    for url in ["/tags/", tagged.hzz.get_absolute_url(), f"/tags/{tagged.hzz.pk}/count/"]:
        r = anonymous.get(url)
        assert r.status_code == 302 and r.url.startswith("/login/?next=")


def test_an_unknown_collection_is_a_404(db, physicist):
    assert client_for(physicist).get("/tags/999/").status_code == 404


def test_another_attribute_starts_from_automatic_binning(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    query = {"attribute": "n_jet", "bins": "40", "lo": "0", "hi": "200", "range_for": "met"}
    html = c.get(tagged.hzz.get_absolute_url(), query).content.decode()
    assert "Distribution of n_jet" in html
    assert re.search(r'<input type="number" name="bins"[^>]*>', html).group(0).count("value=") == 0
    assert "6 bins from -0.5 to 5.5" in html  # one bin per jet count
    query["range_for"] = "n_jet"
    html = c.get(tagged.hzz.get_absolute_url(), query).content.decode()
    assert "40 bins from 0 to 200" in html


def test_the_histogram_says_which_events_have_no_such_object(tagged, physicist):  # noqa: F811
    c = client_for(physicist)
    html = c.get(tagged.hzz.get_absolute_url()).content.decode()
    assert "Distribution of lead_muon_pt" in html
    assert "2,421 events: 2,362 in the plot." in html  # nothing below the range
    assert "59 events have no lead_muon_pt</strong>" in html
    query = {"attribute": "lead_jet_pt", "top_attribute": "lead_jet_pt", "top_n": "5"}
    html = c.get(tagged.hzz.get_absolute_url(), query).content.decode()
    assert "716 events have no lead_jet_pt</strong>" in html
    assert "716 passing events have no lead_jet_pt and are not listed" in html
    # The attribute list's ranges are those of the values there are.
    assert "-999" not in html and "<code>has(x)</code> and <code>missing(x)</code>" in html
    lo, hi = re.search(
        r"<tr><td><code>lead_jet_pt</code>.*?<td class=\"num range\">([\d.,]+) … ([\d.,]+)</td>",
        html,
        re.S,
    ).groups()
    assert 0 < float(lo) < float(hi.replace(",", ""))
    svg = text_of(c.get(f"/tags/{tagged.hzz.pk}/histogram.svg", {"attribute": "lead_jet_pt"}))
    assert ">716 events have no lead_jet_pt</text>" in svg
    # Every event of a selection of events without jets: all of them counted apart.
    query = {"selection": "n_jet == 0", "attribute": "lead_jet_pt", "top_attribute": "lead_jet_pt"}
    html = c.get(tagged.hzz.get_absolute_url(), query).content.decode()
    assert "716 events: 0 in the plot." in html and "716 events have no lead_jet_pt" in html
    assert "No passing event has a value of lead_jet_pt." in html
