"""``dss.Portal`` TAG queries against a live portal: the same numbers as the ``dss`` command
line, errors as exceptions with the portal's code, status and column, warnings issued."""

from __future__ import annotations

import json
import warnings

import pytest

import dss
from dss import client, errors
from tests.client.conftest import dss_cli


def test_a_count_equals_the_command_lines(live):
    portal = live.portal()
    tags = portal.tags("demo.hzz")
    assert tags.id == live.tags_id and tags.dataset == "demo.hzz" and tags.n_events == 2421

    count = tags.count("n_muon >= 2")
    done = dss_cli(live, "--json", "tag", "count", "demo.hzz", "n_muon >= 2")
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    assert count == cli["count"] == 1413
    assert (count.total, count.files_touched, count.files_total) == (2421, 1, 1)
    assert count.selection == cli["selection"] and count.warnings == [] and count.stale is None
    assert f"{count:,}" == "1,413" and str(count) == "1413"
    assert repr(count).startswith("1,413 of 2,421 events (58.4%) pass n_muon >= 2 in demo.hzz")
    assert "1,413 of 2,421" in count._repr_html_()
    # by number, and as dataset/schema, the same collection
    assert portal.tags(live.tags_id).count("n_muon >= 2") == 1413
    assert portal.tags("demo.hzz/hzz").count() == 2421


def test_a_histogram_has_the_command_lines_bins_and_counts(live):
    tags = live.portal().tags("demo.hzz")
    h = tags.histogram("met", "n_muon >= 2", bins=20)
    done = dss_cli(live, "--json", "tag", "hist", "demo.hzz", "met", "n_muon >= 2", "--bins", "20")
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    assert h.edges == cli["edges"] and h.counts == cli["counts"] and len(h.counts) == 20
    assert h.total == 1413 == sum(h.counts) + h.underflow + h.overflow + h.missing
    assert h.unit == "GeV" and h.label == "met [GeV]"

    fixed = tags.histogram("met", "n_muon >= 2", bins=10, range=(0, 100))
    assert fixed.edges[0] == 0 and fixed.edges[-1] == 100 and len(fixed.counts) == 10
    assert sum(fixed.counts) + fixed.overflow + fixed.underflow == 1413

    counts, edges = h.to_numpy()
    assert list(counts) == h.counts and list(edges) == h.edges
    hh = h.to_hist()
    assert list(hh.values()) == h.counts and list(hh.axes[0].edges) == h.edges
    assert hh.axes[0].label == "met [GeV]"

    import matplotlib

    matplotlib.use("Agg")
    ax = h.plot()
    assert ax.get_xlabel() == "met [GeV]"
    assert "<svg" in h._repr_html_() and "20 bins" in repr(h)


def test_events_come_as_a_table_with_the_attributes_asked_for(live):
    tags = live.portal().tags("demo.hzz")
    frame = tags.events("n_muon >= 2", attributes=["met", "n_muon"])
    assert len(frame) == 1413 and list(frame.columns) == [
        "file_guid",
        "entry",
        "run",
        "event",
        "met",
        "n_muon",
    ]
    assert (frame["n_muon"] >= 2).all()
    table = tags.events("n_muon >= 2", library="arrow", limit=100)
    assert table.num_rows == 100 and table.column_names[:2] == ["file_guid", "entry"]
    rows = tags.events("n_muon >= 4", library="python")
    assert len(rows) == tags.count("n_muon >= 4") and rows[0]["file_guid"]
    top = tags.top("met", "n_muon >= 2", n=3)
    assert [t["rank"] for t in top] == [1, 2, 3] and top[0]["value"] >= top[1]["value"]
    touched = tags.files_touched("n_muon >= 2")
    assert touched["files_touched"] == 1 and touched["files"][0]["lfn"] == "uproot-HZZ.root"


def test_datasets_are_found_by_pattern(live):
    portal = live.portal()
    assert [d.name for d in portal.datasets("demo.*")] == ["demo.hzz", "demo.zmumu"]
    assert [d.name for d in portal.datasets("zmumu")] == ["demo.zmumu"]
    assert portal.datasets("nothing.*") == []
    hzz = portal.dataset("demo.hzz")
    assert (hzz.n_files, hzz.events) == (1, 2421)
    (f,) = hzz.files()
    assert f.lfn == "uproot-HZZ.root" and f.checksum.startswith("adler32:") and f.events == 2421
    assert f.url.startswith("file://") and "demo.hzz" in repr(hzz)
    assert hzz.tags().id == live.tags_id
    me = portal.whoami()
    assert me["username"] == "phys" and me["scope"] == "user.phys." and me["roles"] == ["physicist"]
    assert me["user_writable_storage_elements"] == ["LOCAL"]
    assert repr(portal) == f"<dss.Portal {live.url} as phys>"


def test_errors_carry_the_portals_code_status_and_column(live):
    portal = live.portal()
    tags = portal.tags("demo.hzz")
    with pytest.raises(dss.BadSelection) as bad:
        tags.count("n_muon >= ")
    e = bad.value
    assert (e.code, e.status, e.column, e.where) == ("bad_selection", 400, 11, "column 11")
    assert isinstance(e, errors.InvalidInput) and isinstance(e, dss.APIError) and e.detail
    with pytest.raises(dss.BadSelection) as bad:
        tags.histogram("met", "n_muon >= 2 && nmuons > 1")
    assert bad.value.code == "bad_selection" and bad.value.column == 16
    with pytest.raises(dss.BadRequest) as bad:
        tags.histogram("no_such_attribute")
    assert bad.value.where == "attribute" and "no_such_attribute" in bad.value.detail
    with pytest.raises(dss.BadRequest) as bad:
        tags.histogram("met", bins=0)
    assert bad.value.status == 400 and bad.value.where == "bins"

    with pytest.raises(dss.NotFound) as missing:
        portal.job(99999)
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    assert "no skim #99999" in str(missing.value)
    with pytest.raises(dss.NotFound):
        portal.tags(99999)
    with pytest.raises(dss.NotFound) as missing:
        portal.tags("no.such")
    assert isinstance(missing.value, errors.NotFound)

    # outside the physicist's scope: the portal refuses, naming the dataset name
    with pytest.raises(dss.Forbidden) as refused:
        portal.skim(collections=[tags], selection="n_muon >= 2", output="user.someone.x")
    e = refused.value
    assert (e.code, e.status, e.where) == ("forbidden", 403, "dataset name")
    assert "outside your scope" in e.detail

    with pytest.raises(dss.Unauthorized) as refused:
        dss.Portal(live.url, "not-a-token").tags("demo.hzz")
    assert refused.value.status == 401 and "token" in str(refused.value)
    with pytest.raises(errors.DSSError) as unreachable:
        dss.Portal("http://127.0.0.1:1", "x", timeout=10).tags("demo.hzz")
    assert unreachable.value.code == "unreachable"

    with pytest.raises(errors.InvalidInput) as bad:
        portal.skim(collections=[tags], selection="n_muon >= 2", format="csv")
    assert bad.value.where == "format"


def test_stale_tags_are_said_by_a_warning_and_refuse_a_skim(live, local_se, storage_root):
    from dmu import actions
    from tests.skims.conftest import write_split

    rels = write_split(storage_root, 2)
    actions.check_register_dataset("demo.hzz", local_se, rels[:1])
    tags = live.portal().tags("demo.hzz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = tags.count("n_muon >= 2")
    assert count.stale and count.stale["added"] == ["hzz_0.root"]
    assert [w.category for w in caught] == [dss.StaleTagsWarning]
    assert "cover 1 of its 2 file(s)" in str(caught[0].message)
    assert "warning: the TAGs of demo.hzz" in repr(count)

    with pytest.raises(dss.StaleTags) as stale:
        tags.skim("n_muon >= 2", output="user.phys.stale")
    e = stale.value
    assert (e.code, e.status) == ("stale_tags", 409) and e.coverage["added"] == ["hzz_0.root"]
    assert isinstance(e, dss.Conflict)


def test_a_good_run_list_applies_and_its_warnings_are_issued(live, demo_datasets):
    from tests.skims.conftest import build_tags

    build_tags(demo_datasets[1], "zmumu")
    tags = live.portal().tags("demo.zmumu")
    grl = {"148031": [[1, 1000000]], "1": [[1, 5]]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = tags.count(good_runs=grl)
    assert count == 1580 and count.good_runs["missing_runs"] == [1]
    said = [str(w.message) for w in caught if w.category is dss.DSSWarning]
    assert said == count.warnings and any("not in this collection: 1" in w for w in said)
    assert "within the good-run list" in repr(count)


def test_the_package_loads_the_client_lazily_and_never_django():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys, dss; assert 'dss.client' not in sys.modules; dss.Portal; "
        "import dss.client; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('django', 'celery', 'rest_framework') or m == 'dss.settings']; print(bad)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert set(client.__all__) == dss._CLIENT_NAMES
    assert dss.Portal is client.Portal
    with pytest.raises(AttributeError):
        dss.NoSuchThing  # noqa: B018
