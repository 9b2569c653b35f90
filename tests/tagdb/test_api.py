"""The TAG REST API: collections, builds, queries, saved queries, and that no input makes
it answer with a server error."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.tagdb.portal import tagged_module  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(physicist) -> APIClient:
    from tests.conftest import api_token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    return client


@pytest.fixture
def hzz(tagged_module):  # noqa: F811
    return tagged_module.hzz


@pytest.fixture
def zmumu(tagged_module):  # noqa: F811
    return tagged_module.zmumu


def post(api, path, body):
    return api.post(path, body, format="json")


def test_collections_are_listed_with_their_state(api, hzz, zmumu):
    r = api.get("/api/tags/")
    assert r.status_code == 200
    assert r.json()["count"] == 2
    rows = {row["dataset"]: row for row in r.json()["results"]}
    assert rows["demo.hzz"]["state"] == "ready" and rows["demo.hzz"]["n_events"] == 2421
    assert rows["demo.zmumu"]["schema"] == "zmumu" and rows["demo.zmumu"]["key"] == zmumu.key
    one = api.get("/api/tags", {"dataset": "demo.hzz"}).json()["results"]
    assert [row["dataset"] for row in one] == ["demo.hzz"]
    assert [row["dataset"] for row in api.get("/api/tags/?limit=1&offset=1").json()["results"]] == [
        "demo.zmumu"
    ]


def test_a_collection_lists_its_attributes_with_ranges(api, zmumu):
    body = api.get(f"/api/tags/{zmumu.pk}").json()
    attributes = {a["name"]: a for a in body["attributes"]}
    assert body["numbering"] == ["run", "event"]
    assert attributes["run"]["min"] == 148029 and attributes["run"]["max"] == 148031
    assert attributes["mass"]["unit"] == "GeV" and attributes["mass"]["type"] == "float"
    assert attributes["opposite_charge"]["min"] is False
    assert body["last_build"]["state"] == "succeeded"


def test_count_answers_with_the_count_and_files_touched(api, hzz):
    r = post(api, f"/api/tags/{hzz.pk}/count", {"selection": "n_muon >= 2"})
    assert r.status_code == 200
    assert r.json() == {
        "collection": hzz.pk,
        "selection": "n_muon >= 2",
        "count": 1413,
        "total": 2421,
        "files_touched": 1,
        "stale": None,
        "files_total": 1,
        "good_runs": None,
        "warnings": [],
    }
    assert post(api, f"/api/tags/{hzz.pk}/count/", {}).json()["count"] == 2421


def test_a_bad_selection_is_a_400_naming_the_column(api, hzz):
    r = post(api, f"/api/tags/{hzz.pk}/count", {"selection": "n_muon >= 2 && met_x > 3"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "bad_selection",
        "detail": "unknown attribute 'met_x' at column 16; did you mean 'met'?",
        "where": "column 16",
        "column": 16,
    }


def test_a_collection_not_built_is_a_409_and_an_unknown_one_a_404(api, hzz):
    from tagdb import actions

    empty = actions.get_or_create_collection(hzz.dataset, actions.get_schema("zmumu"))
    r = post(api, f"/api/tags/{empty.pk}/count", {"selection": "mass > 1"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert post(api, "/api/tags/99999/count", {}).status_code == 404


def test_histogram_bins_sum_to_the_count(api, hzz):
    r = post(api, f"/api/tags/{hzz.pk}/histogram", {"selection": "n_muon >= 2", "attribute": "met"})
    h = r.json()
    assert r.status_code == 200 and h["unit"] == "GeV" and len(h["counts"]) == 50
    assert len(h["edges"]) == 51
    assert sum(h["counts"]) + h["underflow"] + h["overflow"] + h["missing"] == h["total"] == 1413
    r = post(
        api,
        f"/api/tags/{hzz.pk}/histogram",
        {"selection": "", "attribute": "met", "bins": 5, "lo": 0, "hi": 100},
    )
    h = r.json()
    assert h["edges"] == [0, 20, 40, 60, 80, 100] and sum(h["counts"]) + h["overflow"] == 2421
    r = post(api, f"/api/tags/{hzz.pk}/histogram", {"attribute": "mett"})
    assert r.status_code == 400 and "did you mean 'met'" in r.json()["detail"]
    r = post(api, f"/api/tags/{hzz.pk}/histogram", {"attribute": "met", "lo": 5, "hi": 5})
    assert r.status_code == 400 and r.json()["where"] == "range"


def test_histogram_and_top_count_missing_values_apart(api, hzz):
    body = {"selection": "met > 20", "attribute": "lead_jet_pt"}
    h = post(api, f"/api/tags/{hzz.pk}/histogram", {**body, "bins": 10, "lo": 0, "hi": 1000})
    h = h.json()
    passing = post(api, f"/api/tags/{hzz.pk}/count", {"selection": "met > 20"}).json()["count"]
    without = post(
        api, f"/api/tags/{hzz.pk}/count", {"selection": "met > 20 && missing(lead_jet_pt)"}
    ).json()["count"]
    assert 0 < without < passing
    assert h["missing"] == without and h["underflow"] == 0
    assert sum(h["counts"]) + h["overflow"] == passing - without
    top = post(api, f"/api/tags/{hzz.pk}/top", {**body, "n": 1000}).json()
    assert top["missing"] == without and len(top["events"]) == passing - without
    assert all(e["value"] is not None for e in top["events"])


def test_events_come_as_json_pages_or_csv(api, hzz, zmumu):
    r = post(api, f"/api/tags/{hzz.pk}/events", {"selection": "n_muon >= 2", "limit": 1000})
    body = r.json()
    assert len(body["events"]) == 1000 and body["next_offset"] == 1000
    rest = post(
        api, f"/api/tags/{hzz.pk}/events", {"selection": "n_muon >= 2", "offset": 1000}
    ).json()
    assert len(rest["events"]) == 413 and rest["next_offset"] is None
    assert body["events"][0].keys() == {"file_guid", "entry", "run", "event"}
    r = post(api, f"/api/tags/{zmumu.pk}/events", {"selection": "mass > 120", "format": "csv"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 5 and rows[1][2:] == ["148031", "425778251"]


def test_events_carry_attribute_values_null_where_missing(api, hzz):
    body = {"selection": "n_muon <= 1", "attributes": ["lead_muon_pt", "n_muon"]}
    events = post(api, f"/api/tags/{hzz.pk}/events", body).json()["events"]
    assert set(events[0]) == {"file_guid", "entry", "run", "event", "lead_muon_pt", "n_muon"}
    without = [e["lead_muon_pt"] for e in events if e["n_muon"] == 0]
    assert len(without) == 59 and set(without) == {None}
    r = post(api, f"/api/tags/{hzz.pk}/events", {**body, "format": "csv"})
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert rows[0][4:] == ["lead_muon_pt", "n_muon"]
    assert [row[4] for row in rows[1:] if row[5] == "0"] == [""] * 59
    r = post(api, f"/api/tags/{hzz.pk}/events", {**body, "attributes": ["lead_muon_ptt"]})
    assert r.status_code == 400 and r.json()["where"] == "attributes"


def test_top_lists_the_largest_values(api, hzz):
    r = post(
        api, f"/api/tags/{hzz.pk}/top", {"selection": "n_muon >= 2", "attribute": "met", "n": 3}
    )
    events = r.json()["events"]
    assert [e["rank"] for e in events] == [1, 2, 3]
    assert events[0]["value"] >= events[1]["value"] >= events[2]["value"]
    assert post(api, f"/api/tags/{hzz.pk}/top", {"attribute": "met", "n": 0}).status_code == 400


def test_files_touched_lists_the_files(api, hzz):
    body = post(api, f"/api/tags/{hzz.pk}/files-touched", {"selection": "n_muon >= 4"}).json()
    assert body["files_touched"] == 1 and body["files_total"] == 1
    assert body["files"] == [
        {"guid": str(hzz.dataset.files.get().guid), "lfn": "uproot-HZZ.root", "events": 8}
    ]
    assert (
        post(api, f"/api/tags/{hzz.pk}/files-touched", {"selection": "n_muon > 9"}).json()[
            "files_touched"
        ]
        == 0
    )


def test_picking_finds_pairs_and_reports_missing_and_duplicates(api, zmumu):
    r = post(api, f"/api/tags/{zmumu.pk}/pick", {"events": [[148031, 10507008], [1, 2]]})
    body = r.json()
    assert r.status_code == 200 and body["asked"] == 2
    assert body["missing"] == [[1, 2]] and body["duplicates"] == [[148031, 10507008]]
    assert {(p["run"], p["event"]) for p in body["found"]} == {(148031, 10507008)}
    assert body["found"][0]["dataset"] == "demo.zmumu"
    r = post(api, f"/api/tags/{zmumu.pk}/pick", {"events": "148031 10507008\n"})
    assert len(r.json()["found"]) == 4
    r = post(api, f"/api/tags/{zmumu.pk}/pick", {"events": [[1, "x"]]})
    assert r.status_code == 400 and r.json()["where"] == "item 1"


def test_a_good_run_list_is_counted_and_accepted_by_every_query(api, zmumu):
    r = post(api, f"/api/tags/{zmumu.pk}/good-runs", {"good_runs": {"148029": [[1, 10]]}})
    body = r.json()
    assert body["selection"] == "" and body["good_runs"]["lumi_blocks"] is False
    assert body["warnings"] == [
        "demo.zmumu has no luminosity-block numbers: the GRL's runs are kept whole"
    ]
    whole_run = post(api, f"/api/tags/{zmumu.pk}/count", {"selection": "run == 148029"})
    assert body["count"] == whole_run.json()["count"]
    grl = '{"148029": [[1, 10]], "1": [[1, 2]], "2": [[5, 6]]}'
    for endpoint, extra in [
        ("count", {}),
        ("histogram", {"attribute": "mass"}),
        ("events", {"limit": 5}),
        ("top", {"attribute": "mass", "n": 3}),
        ("files-touched", {}),
    ]:
        r = post(
            api,
            f"/api/tags/{zmumu.pk}/{endpoint}",
            {"selection": "mass > 80", "good_runs": grl, **extra},
        )
        assert r.status_code == 200, (endpoint, r.content)
        body = r.json()
        assert body["selection"] == "mass > 80"
        assert body["good_runs"] == {
            "runs": 3,
            "ranges": 3,
            "format": "JSON",
            "lumi_blocks": False,
            "missing_runs": [1, 2],
        }
        assert body["warnings"][0] == "2 runs of the GRL are not in this collection: 1, 2"
    counted = post(api, f"/api/tags/{zmumu.pk}/count", {"selection": "mass > 80"}).json()
    assert counted["good_runs"] is None and counted["warnings"] == []
    r = post(api, f"/api/tags/{zmumu.pk}/count", {"good_runs": {"148029": [[10, 1]]}})
    assert r.status_code == 400 and "ends before it starts" in r.json()["detail"]


def test_a_malformed_good_run_list_is_a_400_naming_the_line(api, zmumu, hzz):
    xml = "<LumiRangeCollection>\n<NamedLumiRange>\n<LumiBlockCollection>\n</LumiRangeCollection>"
    r = post(api, f"/api/tags/{zmumu.pk}/count", {"good_runs": xml})
    assert r.status_code == 400
    assert r.json()["where"] == "line 4" and "mismatched tag" in r.json()["detail"]
    r = post(api, f"/api/tags/{zmumu.pk}/events", {"good_runs": '{"148029": [[1, 2]'})
    assert r.status_code == 400 and r.json()["where"] == "line 1"
    assert "not valid JSON" in r.json()["detail"]
    r = post(api, f"/api/tags/{zmumu.pk}/count", {"good_runs": [1, 2]})
    assert r.status_code == 400 and r.json()["where"] == "good-run list"
    r = post(api, f"/api/tags/{hzz.pk}/count", {"good_runs": {"1": [[1, 2]]}})
    assert r.status_code == 400 and "no run numbers" in r.json()["detail"]


def test_saved_queries_are_per_user(api, hzz, operator):
    r = post(api, f"/api/tags/{hzz.pk}/queries", {"name": "dimuon", "selection": "n_muon >= 2"})
    assert r.status_code == 201
    saved = r.json()
    assert api.get(f"/api/tags/{hzz.pk}/queries").json()[0]["name"] == "dimuon"
    r = post(api, f"/api/tags/{hzz.pk}/queries", {"name": "x", "selection": "n_muon >="})
    assert r.status_code == 400 and r.json()["column"] == 10
    other = APIClient()
    other.force_authenticate(operator)
    assert other.get(f"/api/tags/{hzz.pk}/queries").json() == []
    assert other.delete(f"/api/tags/queries/{saved['id']}").status_code == 404
    r = other.post(
        f"/api/tags/{hzz.pk}/queries", {"name": "o", "selection": "met > 1"}, format="json"
    )
    assert r.status_code == 403
    assert api.delete(f"/api/tags/queries/{saved['id']}").status_code == 204
    assert api.get(f"/api/tags/{hzz.pk}/queries").json() == []


def test_a_physicist_starts_a_build_and_reads_its_status(
    api, hzz, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        r = post(api, "/api/tags/build", {"dataset": "demo.hzz", "schema": "hzz"})
    assert r.status_code == 202
    build = r.json()
    assert (
        build["state"] == "queued" and build["progress_total"] == 1 and build["schema"] == "hzz v1"
    )
    assert api.get(f"/api/tags/builds/{build['id']}").json()["phase"] == "waiting for a worker"
    r = post(api, "/api/tags/build", {"dataset": "demo.hzz"})
    assert r.status_code == 409 and "already being built" in r.json()["detail"]
    r = post(api, f"/api/tags/builds/{build['id']}/cancel", {})
    assert r.json()["state"] == "cancelled"
    hzz.refresh_from_db()
    assert hzz.state == "ready"  # its TAGs are still there
    r = post(api, "/api/tags/build", {"dataset": "demo.nothing"})
    assert r.status_code == 404
    r = post(api, "/api/tags/build", {"dataset": "demo.hzz", "schema": "hz"})
    assert r.status_code == 404 and "did you mean 'hzz'" in r.json()["detail"]


def test_another_physicist_cannot_cancel_a_build(api, hzz, django_capture_on_commit_callbacks):
    from tagdb.models import TagBuild
    from tests.conftest import make_user

    with django_capture_on_commit_callbacks(execute=False):
        build = post(api, "/api/tags/build", {"dataset": "demo.hzz", "schema": "hzz"}).json()
    other = APIClient()
    other.force_authenticate(make_user("phys2", ["physicist"]))

    r = post(other, f"/api/tags/builds/{build['id']}/cancel", {})

    assert r.status_code == 403
    assert r.json()["error"] == "forbidden" and "only its owner or an admin" in r.json()["detail"]
    assert TagBuild.objects.get(pk=build["id"]).state == "queued"


def test_outsiders_cannot_build_and_anonymous_callers_are_refused(hzz, outsider):
    other = APIClient()
    other.force_authenticate(outsider)
    r = other.post("/api/tags/build", {"dataset": "demo.hzz"}, format="json")
    assert r.status_code == 403
    assert other.post(f"/api/tags/{hzz.pk}/count", {}, format="json").status_code == 200
    anonymous = APIClient()
    assert anonymous.get("/api/tags/").status_code in (401, 403)
    assert anonymous.post(f"/api/tags/{hzz.pk}/count", {}, format="json").status_code in (401, 403)


def test_malformed_bodies_are_400s(api, hzz):
    path = f"/api/tags/{hzz.pk}/count"
    assert api.post(path, "{not json", content_type="application/json").status_code == 400
    assert api.post(path, "[1, 2]", content_type="application/json").status_code == 400
    assert post(api, path, {"selection": ["met > 1"]}).status_code == 400
    assert post(api, path, {"selection": "met > 1\x00"}).status_code == 400
    assert (
        post(api, path, {"selection": "x" * 100_000})
        .json()["detail"]
        .startswith("selection is too long")
    )


SELECTION_PIECES = st.sampled_from(
    [
        "n_muon",
        "met",
        "met_x",
        "trigger_isomu24",
        "run",
        "weight",
        "abs(",
        "sqrt(",
        "hypot(",
        "min(",
        ")",
        "(",
        "[",
        "]",
        "..",
        ",",
        "&&",
        "||",
        "!",
        "and",
        "or",
        "not",
        "in",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "1",
        "0",
        "2.5",
        "1e308",
        "1e999",
        "-999",
        "9223372036854775808",
        "true",
        "false",
        "'",
        '"',
        ";",
        "--",
        "DROP TABLE",
        " ",
        "\n",
        "\t",
        "é",
        "∑",
    ]
)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    selection=st.one_of(
        st.text(max_size=200),
        st.lists(SELECTION_PIECES, max_size=30).map(" ".join),
        st.lists(SELECTION_PIECES, max_size=30).map("".join),
    )
)
def test_random_selections_never_make_a_server_error(api, hzz, selection):
    r = post(api, f"/api/tags/{hzz.pk}/count", {"selection": selection})
    assert r.status_code in (200, 400), r.content
    body = r.json()
    if r.status_code == 400:
        assert body["error"] and body["detail"]
    else:
        assert 0 <= body["count"] <= 2421


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(["count", "histogram", "top", "events", "files-touched", "pick"]),
    body=st.dictionaries(
        st.sampled_from(
            [
                "selection",
                "attribute",
                "bins",
                "lo",
                "hi",
                "n",
                "limit",
                "offset",
                "format",
                "events",
                "good_runs",
            ]
        ),
        JSON_VALUES,
        max_size=6,
    ),
)
def test_random_bodies_never_make_a_server_error(api, zmumu, endpoint, body):
    r = api.post(
        f"/api/tags/{zmumu.pk}/{endpoint}", json.dumps(body), content_type="application/json"
    )
    assert r.status_code in (200, 400, 409), r.content
