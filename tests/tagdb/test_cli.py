"""``dss tag``: the command line against a live portal, with an API token."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.tagdb.portal import drop_tags, lumi, tagged  # noqa: F401


@pytest.fixture
def portal(live_server, physicist):
    """An API client of the live portal, logged in as the physicist by token."""
    from dss.apiclient import ApiClient
    from tests.conftest import api_token

    return ApiClient(live_server.url, api_token(physicist), timeout=60)


def run(portal, *argv: str) -> tuple[int, str, str]:
    from tagdb.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), client=portal, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_tag_list_shows_the_collections(portal, tagged):  # noqa: F811
    code, out, _ = run(portal, "tag", "list")
    assert code == 0
    assert "demo.hzz" in out and "hzz v1" in out and "2,421" in out and "ready" in out
    code, out, _ = run(portal, "tag", "list", "--json")
    assert {row["dataset"] for row in json.loads(out)} == {"demo.hzz", "demo.zmumu"}


def test_tag_list_gathers_every_page_of_the_list(portal, tagged, settings):  # noqa: F811
    settings.DSS_API_MAX_LIMIT = 1  # the portal answers one collection at a time
    code, out, _ = run(portal, "tag", "list", "--json")
    assert code == 0 and {row["dataset"] for row in json.loads(out)} == {"demo.hzz", "demo.zmumu"}
    code, out, _ = run(portal, "tag", "count", "demo.zmumu", "mass > 80")
    assert code == 0 and out.startswith("1,835 of 2,304 events")


def test_tag_count_by_dataset_name_or_number(portal, tagged):  # noqa: F811
    code, out, _ = run(portal, "tag", "count", "demo.hzz", "n_muon >= 2")
    assert code == 0
    assert out.startswith("1,413 of 2,421 events (58.4%) pass n_muon >= 2 in demo.hzz")
    assert "in 1 of 1 file(s)" in out
    code, out, _ = run(portal, "tag", "count", str(tagged.zmumu.pk), "mass > 80", "--json")
    assert json.loads(out)["count"] == 1835
    code, out, _ = run(portal, "tag", "count", "demo.hzz/hzz")
    assert code == 0 and out.startswith("2,421 of 2,421 events")


def test_a_bad_selection_exits_2_with_a_caret_under_the_column(portal, tagged):  # noqa: F811
    code, out, err = run(portal, "tag", "count", "demo.hzz", "n_muon >= 2 && met_x > 3")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "dss: column 16: unknown attribute 'met_x' at column 16; did you mean 'met'?"
    assert lines[1] == "  n_muon >= 2 && met_x > 3"
    assert lines[2] == "  " + " " * 15 + "^"
    code, _, err = run(portal, "tag", "count", "demo.nothing", "met > 1")
    assert code == 3 and "no TAG collection of 'demo.nothing'" in err


def test_tag_hist_draws_a_text_histogram(portal, tagged):  # noqa: F811
    code, out, _ = run(portal, "tag", "hist", "demo.hzz", "met", "n_muon >= 2", "--bins", "10")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "met [GeV] for n_muon >= 2"
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "1,413 events"
    assert sum(int(line.split()[2].replace(",", "")) for line in lines[1:-1]) == 1413
    assert "█" * 50 in out  # the fullest bin spans the whole width
    code, out, _ = run(
        portal, "tag", "hist", "demo.hzz", "met", "--range", "0", "50", "--bins", "5"
    )
    assert "[0, 10)" in out and "[40, 50]" in out and "above" in out


def test_tag_hist_counts_the_events_without_a_value_apart(portal, tagged):  # noqa: F811
    code, out, _ = run(portal, "tag", "hist", "demo.hzz", "lead_jet_pt", "--bins", "10")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + 10 + 2
    assert lines[-2] == "2,421 events"
    assert lines[-1] == "716 events have no lead_jet_pt (counted apart, not drawn)"
    assert sum(int(line.split()[2].replace(",", "")) for line in lines[1:-2]) == 2421 - 716


def test_tag_hist_of_nothing_says_so_in_one_line():
    from tagdb.cli import text_histogram

    empty = {"attribute": "met", "unit": "GeV", "selection": "met > 1e9", "total": 0}
    lines = text_histogram({**empty, "edges": [0.0, 0.5, 1.0], "counts": [0, 0]})
    assert lines == ["met [GeV] for met > 1e9", "no events pass", "0 events"]
    outside = {**empty, "selection": "n_muon >= 2", "total": 57, "overflow": 57}
    lines = text_histogram({**outside, "edges": [0.0, 5.0, 10.0], "counts": [0, 0]})
    assert lines[1:] == ["none of them in [0, 10]", "57 events (57 above)"]
    nothing = {**empty, "selection": "n_jet == 0", "total": 1, "missing": 1}
    lines = text_histogram({**nothing, "edges": [0.0, 0.5, 1.0], "counts": [0, 0]})
    assert lines[1:] == ["1 event", "1 event has no met (counted apart, not drawn)"]


def test_tag_events_writes_csv_and_json(portal, tagged, tmp_path):  # noqa: F811
    target = tmp_path / "events.csv"
    code, out, _ = run(portal, "tag", "events", "demo.zmumu", "mass > 120", "-o", str(target))
    assert code == 0 and out.strip() == f"4 events written to {target}"
    rows = list(csv.reader(target.open()))
    assert rows[0] == ["file_guid", "entry", "run", "event"] and len(rows) == 5
    code, out, _ = run(portal, "tag", "events", "demo.hzz", "n_muon >= 2", "--format", "json")
    doc = json.loads(out)
    assert doc["selection"] == "n_muon >= 2" and len(doc["events"]) == 1413


def test_tag_events_with_attributes_leave_missing_values_empty(portal, tagged, tmp_path):  # noqa: F811
    target = tmp_path / "events.csv"
    code, _, _ = run(
        portal, "tag", "events", "demo.hzz", "n_jet <= 1", "-a", "lead_jet_pt", "-a", "n_jet",
        "-o", str(target),
    )  # fmt: skip
    rows = list(csv.reader(target.open()))
    assert code == 0 and rows[0] == ["file_guid", "entry", "run", "event", "lead_jet_pt", "n_jet"]
    assert [r[4] for r in rows[1:] if r[5] == "0"] == [""] * 716
    code, out, _ = run(portal, "tag", "events", "demo.hzz", "n_jet == 0", "-a", "lead_jet_pt",
                       "--format", "json")  # fmt: skip
    events = json.loads(out)["events"]
    assert len(events) == 716 and {e["lead_jet_pt"] for e in events} == {None}
    # A wrong name is reported before anything is written.
    bad = tmp_path / "bad.csv"
    code, out, err = run(portal, "tag", "events", "demo.hzz", "-a", "lead_jet_ptt", "-o", str(bad))
    assert code == 2 and "did you mean 'lead_jet_pt'" in err
    assert out == "" and not bad.exists()


def test_tag_pick_reports_found_missing_and_duplicated(portal, tagged, tmp_path):  # noqa: F811
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# run event\n148031 10507008\n1 2\n")
    code, out, _ = run(portal, "tag", "pick", "demo.zmumu", str(pairs))
    assert code == 0
    assert "4 event(s) found for 2 pair(s)" in out
    assert "not found: 1:2" in out and "more than one event: 148031:10507008" in out
    assert out.count("uproot-Zmumu.root") == 4
    pairs.write_text("148031 ten\n")
    code, _, err = run(portal, "tag", "pick", "demo.zmumu", str(pairs))
    assert code == 2 and "line 1" in err


def test_tag_build_waits_for_a_worker(portal, celery_worker, demo_datasets):
    from tagdb.models import TagCollection

    code, out, err = run(
        portal, "tag", "build", "demo.zmumu", "--wait", "--poll", "0.3", "--timeout", "180"
    )
    try:
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].endswith("of demo.zmumu (zmumu v1) queued")
        assert "succeeded, 1 of 1 file(s), 2,304 events" in lines[-1]
        code, out, _ = run(portal, "tag", "count", "demo.zmumu", "mass > 80")
        assert out.startswith("1,835 of 2,304 events")
    finally:
        drop_tags(*TagCollection.objects.all())


def test_an_outsider_cannot_build(live_server, outsider, demo_datasets):
    from dss.apiclient import ApiClient
    from tests.conftest import api_token

    client = ApiClient(live_server.url, api_token(outsider), timeout=60)
    code, _, err = run(client, "tag", "build", "demo.hzz")
    assert code != 0 and "building TAGs needs the physicist or admin role" in err


def test_the_dss_command_line_has_the_tag_commands():
    from dss.cli import build_parser
    from tagdb import cli

    args = build_parser().parse_args(["--json", "tag", "count", "demo.hzz", "met > 40"])
    assert args.func is cli.cmd_count and args.json is True
    assert (args.collection, args.selection) == ("demo.hzz", "met > 40")
    args = build_parser().parse_args(["tag", "hist", "3", "met", "--bins", "20", "--json"])
    assert args.func is cli.cmd_hist and args.bins == 20 and args.json is True


def test_tag_count_with_a_good_run_list_file_warns_of_missing_runs(portal, lumi, tmp_path):  # noqa: F811
    from tests.tagdb import goodruns_data as data

    events = data.lumi_events()
    keep = data.expected_mask(events["Run"], events["LumiBlock"]) & (events["pt"] > 20)
    missing = data.missing_runs(events["Run"])
    for name, text in (("grl.xml", data.atlas_xml()), ("grl.json", data.cms_json())):
        path = tmp_path / name
        path.write_text(text)
        code, out, err = run(portal, "tag", "count", "data99.lumi", "pt > 20", "--grl", str(path))
        assert code == 0, err
        assert out.startswith(
            f"{int(keep.sum()):,} of 20,000 events ({100 * keep.mean():.1f}%) pass pt > 20 "
            "within the good-run list (500 runs) in data99.lumi"
        )
        assert err == (
            f"dss: warning: {len(missing)} runs of the GRL are not in this collection: "
            + ", ".join(map(str, missing[:20]))
            + f" and {len(missing) - 20} more\n"
        )
    code, out, err = run(portal, "tag", "hist", "data99.lumi", "pt", "--grl", str(path), "--json")
    assert code == 0 and json.loads(out)["total"] == int(
        data.expected_mask(events["Run"], events["LumiBlock"]).sum()
    )
    code, out, err = run(portal, "tag", "events", "data99.lumi", "pt > 20", "--grl", str(path))
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1 + int(keep.sum())
    assert err.count("dss: warning:") == 1
    bad = tmp_path / "bad.xml"
    bad.write_text("<LumiRangeCollection>\n<LumiBlockCollection>\n</LumiRange>\n")
    code, out, err = run(portal, "tag", "count", "data99.lumi", "--grl", str(bad))
    assert code == 2 and out == "" and err.startswith("dss: line 3: the good-run list is not")
    code, _, err = run(portal, "tag", "count", "data99.lumi", "--grl", str(tmp_path / "no.xml"))
    assert code == 2 and "cannot read the good-run list" in err
