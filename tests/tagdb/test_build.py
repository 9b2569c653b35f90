"""Building TAG collections: through a real Celery worker, synchronously, and when it fails."""

from __future__ import annotations

import subprocess
import sys
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from dss.errors import Conflict, DSSError, InvalidInput
from dss.jobs import JobState
from tests.conftest import wait_for
from tests.tagdb.portal import drop_tags, tagged  # noqa: F401

HZZ_EVENTS = 2421
HZZ_DIMUON = 1413


def _finished(build):
    build.refresh_from_db()
    return build.is_final


def _hzz_collection(dataset):
    from tagdb import actions

    return actions.get_or_create_collection(dataset, actions.get_schema("hzz"))


def test_builtin_schemas_are_recorded_at_their_file_versions(db):
    from tagdb import actions
    from tagdb.models import TagSchema

    rows, problems = actions.sync_builtin_schemas()
    assert {(r.name, r.version) for r in rows} == {("hzz", 1), ("zmumu", 1)}
    assert problems == []
    actions.sync_builtin_schemas()
    assert TagSchema.objects.filter(automatic=False).count() == 2
    assert actions.get_schema("hzz").load().attribute("met").unit == "GeV"


def test_a_changed_schema_file_without_a_new_version_is_reported(db):
    from tagdb import actions
    from tagdb.models import TagSchema

    actions.sync_builtin_schemas()
    row = TagSchema.objects.get(name="zmumu", version=1)
    row.definition = row.definition.replace("name: mass,", "name: mass_old,")
    row.save(update_fields=["definition"])
    _, problems = actions.sync_builtin_schemas()
    assert problems and "zmumu.yaml" in problems[0] and "new version" in problems[0]


def test_the_fitting_schema_is_chosen_from_the_files_branches(demo_datasets):
    from tagdb import actions

    hzz, zmm = demo_datasets
    assert actions.schema_for_dataset(hzz).name == "hzz"
    assert actions.schema_for_dataset(zmm).name == "zmumu"


def test_a_worker_builds_hzz_while_the_web_process_counts(celery_worker, demo_datasets, physicist):
    """The build runs in another process; DuckDB lets one process hold its file at a time,
    so this process keeps counting another collection all the while."""
    from tagdb import actions
    from tagdb.models import CollectionState

    hzz, zmm = demo_datasets
    zmumu = actions.get_or_create_collection(zmm, actions.get_schema("zmumu"))
    actions.check_build_now(zmumu)
    build = actions.do_start_build(hzz, actions.get_schema("hzz"), physicist)
    collection = build.collection
    assert collection.state == CollectionState.BUILDING
    counts = []
    deadline = time.monotonic() + 120
    while not _finished(build) and time.monotonic() < deadline:
        counts.append(actions.count(zmumu, "mass > 80").count)
    assert build.state == JobState.SUCCEEDED, build.message
    assert counts and set(counts) == {1835}
    collection.refresh_from_db()
    try:
        assert collection.state == CollectionState.READY
        assert (collection.n_events, collection.n_files) == (HZZ_EVENTS, 1)
        assert build.progress_done == build.progress_total == 1
        assert build.n_events == HZZ_EVENTS
        assert [e.kind for e in build.events.order_by("at", "id")][-1] == "succeeded"
        assert actions.count(collection, "n_muon >= 2").count == HZZ_DIMUON
        assert not actions.scratch_dir(build).exists()
    finally:
        drop_tags(collection, zmumu)


def test_histogram_bins_sum_to_the_count(tagged):  # noqa: F811
    from tagdb import actions

    n = actions.count(tagged.hzz, "n_muon >= 2").count
    h = actions.histogram(tagged.hzz, "met", "n_muon >= 2", bins=40)
    assert len(h.counts) == 40
    assert int(h.counts.sum()) + h.underflow + h.overflow + h.missing == n == HZZ_DIMUON
    assert h.underflow == h.overflow == h.missing == 0  # the automatic range holds them all
    ranged = actions.histogram(tagged.hzz, "met", "n_muon >= 2", bins=10, lo=0, hi=50)
    assert int(ranged.counts.sum()) + ranged.overflow == n and ranged.overflow > 0
    ints = actions.histogram(tagged.hzz, "n_muon", "")
    assert ints.edges[0] == -0.5 and list(ints.counts) == [59, 949, 1371, 34, 8]


def test_zmumu_has_run_and_event_numbers_and_picking_reports_missing_and_duplicates(tagged):  # noqa: F811
    from tagdb import actions

    with uproot.open(tagged.zmumu.dataset.files.get().replicas.get().url[len("file://") :]) as f:
        arrays = f["events"].arrays(["Run", "Event"], library="np")
    runs, events = arrays["Run"], arrays["Event"]
    pairs, counts = np.unique(np.stack([runs, events]), axis=1, return_counts=True)
    assert counts.min() > 1  # every event of this sample is there several times
    a = (int(pairs[0, 0]), int(pairs[1, 0]))
    report = actions.pick_events(tagged.zmumu, [a, (1, 2), a])
    assert report.asked == 2
    assert report.missing == [(1, 2)]
    assert report.duplicates == [a]
    assert len(report.found) == counts[0]
    entries = sorted(p.entry for p in report.found)
    assert entries == sorted(np.flatnonzero((runs == a[0]) & (events == a[1])).tolist())
    assert {p.lfn for p in report.found} == {"uproot-Zmumu.root"}
    with pytest.raises(InvalidInput, match="no run and event numbers"):
        actions.pick_events(tagged.hzz, [a])


def test_event_pairs_are_read_from_text_and_json_and_errors_name_the_line(db):
    from tagdb import actions

    assert actions.parse_event_pairs("# run event\n1 2\n3,4\n5:6\n\n") == [(1, 2), (3, 4), (5, 6)]
    assert actions.parse_event_pairs("[[1, 2], [3, 4]]") == [(1, 2), (3, 4)]
    with pytest.raises(InvalidInput, match="line 2"):
        actions.parse_event_pairs("1 2\n1 two\n")
    with pytest.raises(InvalidInput, match="item 1"):
        actions.parse_event_pairs('[["1", 2]]')


def test_a_good_run_list_is_applied_beside_the_selection(tagged):  # noqa: F811
    from tagdb import actions

    all_148029 = actions.count(tagged.zmumu, "run == 148029").count
    # No luminosity blocks in demo.zmumu: the listed runs are kept whole.
    assert actions.count(tagged.zmumu, "", good_runs={"148029": [[1, 2]]}).count == all_148029
    both = actions.count(tagged.zmumu, "mass > 80", good_runs='{"148029": [[1, 2]]}')
    assert both.selection == "mass > 80"
    assert both.count == actions.count(tagged.zmumu, "mass > 80 && run == 148029").count
    grl = actions.good_runs_for(tagged.zmumu, '{"148029": [[1, 100]], "5": [[1, 2]]}')
    note = actions.good_runs_note(tagged.zmumu, grl)
    assert note.missing_runs == (5,) and not note.lumi_blocks
    assert note.warnings == [
        "1 run of the GRL is not in this collection: 5",
        "demo.zmumu has no luminosity-block numbers: the GRL's runs are kept whole",
    ]
    assert actions.good_runs_for(tagged.zmumu, "  ") is None
    with pytest.raises(InvalidInput, match="no run numbers"):
        actions.good_runs_for(tagged.hzz, {"1": [[1, 2]]})
    with pytest.raises(InvalidInput, match="run number 'x'"):
        actions.good_runs_for(tagged.zmumu, {"x": [[1, 2]]})


def test_check_selection_names_the_column_and_suggests_a_name(tagged):  # noqa: F811
    from tagdb import actions
    from tagdb.selection import SelectionError

    tree, text = actions.check_selection(tagged.hzz, "met>40 and n_muon>=2")
    assert text == "met > 40 && n_muon >= 2"
    with pytest.raises(SelectionError) as caught:
        actions.check_selection(tagged.hzz, "n_muon >= 2 && met_x > 3")
    assert caught.value.column == 16
    assert "unknown attribute 'met_x' at column 16; did you mean 'met'?" in str(caught.value)


def test_a_failing_rebuild_keeps_the_old_collection(
    celery_worker, demo_datasets, physicist, storage_root
):
    from tagdb import actions
    from tagdb.models import CollectionState

    hzz, _ = demo_datasets
    collection = _hzz_collection(hzz)
    first = actions.check_build_now(collection)
    built_at = collection.built_at
    assert first.state == JobState.SUCCEEDED
    # The replica goes bad on disk after registration.
    (storage_root / "demo" / "uproot-HZZ.root").write_bytes(b"this is not a ROOT file")
    build = actions.do_start_build(hzz, collection.schema, physicist)
    try:
        wait_for(lambda: _finished(build), timeout=120, what="the rebuild to end")
        assert build.state == JobState.FAILED
        assert "uproot-HZZ.root" in build.message
        collection.refresh_from_db()
        assert collection.state == CollectionState.READY
        assert collection.built_at == built_at and collection.n_events == HZZ_EVENTS
        assert actions.count(collection, "n_muon >= 2").count == HZZ_DIMUON
        assert not actions.scratch_dir(build).exists()
    finally:
        drop_tags(collection)


def test_a_rebuild_replaces_the_collection(tagged):  # noqa: F811
    from tagdb import actions

    before = tagged.hzz.built_at
    build = actions.check_build_now(tagged.hzz)
    tagged.hzz.refresh_from_db()
    assert build.state == JobState.SUCCEEDED and tagged.hzz.built_at > before
    assert actions.count(tagged.hzz, "n_muon >= 2").count == HZZ_DIMUON
    assert tagged.hzz.builds.count() == 2


def test_a_schema_that_does_not_fit_fails_naming_the_file_and_branch(demo_datasets):
    from tagdb import actions
    from tagdb.models import CollectionState

    hzz, _ = demo_datasets
    collection = actions.get_or_create_collection(hzz, actions.get_schema("zmumu"))
    with pytest.raises(DSSError, match="reads branch '.*', which tree 'events' does not have"):
        actions.check_build_now(collection)
    build = collection.builds.get()
    assert build.state == JobState.FAILED
    assert build.message.startswith("file uproot-HZZ.root:")
    assert "which tree 'events' does not have" in build.message
    collection.refresh_from_db()
    assert collection.state == CollectionState.FAILED


def test_a_second_build_while_one_is_queued_is_a_conflict(demo_datasets, physicist):
    from tagdb import actions
    from tagdb.models import CollectionState

    hzz, _ = demo_datasets
    first = actions.do_start_build(hzz, actions.get_schema("hzz"), physicist)
    with pytest.raises(Conflict, match=f"build #{first.pk}"):
        actions.do_start_build(hzz, actions.get_schema("hzz"), physicist)
    assert actions.do_cancel_build(first, physicist)
    first.collection.refresh_from_db()
    assert first.collection.state == CollectionState.EMPTY
    assert first.message == "cancelled by phys"


def test_a_tree_nobody_described_gets_an_automatic_schema(db, local_se, storage_root):
    from dmu import actions as dmu_actions
    from tagdb import actions

    path = storage_root / "own" / "flat.root"
    path.parent.mkdir()
    with uproot.recreate(path) as f:
        tree = f.mktree(
            "events",
            {
                "RunNumber": np.int32,
                "EventNumber": np.int64,
                "Energy": np.float64,
                "Hits": "var * float64",
            },
        )
        tree.extend(
            {
                "RunNumber": np.array([7, 7, 8], dtype=np.int32),
                "EventNumber": np.array([1, 2, 3], dtype=np.int64),
                "Energy": np.array([1.5, 20.0, 3.0]),
                "Hits": ak.Array([[1.0], [], [2.0, 3.0]]),
            }
        )
    dataset, _ = dmu_actions.check_register_dataset("own.flat", local_se, ["own/flat.root"])
    schema = actions.schema_for_dataset(dataset)
    assert schema.automatic and schema.name == "auto_own_flat"
    collection = actions.get_or_create_collection(dataset, schema)
    try:
        actions.check_build_now(collection)
        assert actions.count(collection, "energy > 2").count == 2
        assert actions.count(collection, "n_hits == 2").count == 1
        assert actions.count(collection, "run == 7").count == 2
        assert actions.pick_events(collection, [(8, 3)]).found[0].entry == 2
        assert actions.do_auto_schema(dataset).pk == schema.pk  # same branches, same row
    finally:
        drop_tags(collection)


def test_a_dataset_without_files_cannot_be_tagged(db):
    from dmu.models import Dataset
    from tagdb import actions

    empty = Dataset.objects.create(name="own.empty")
    with pytest.raises(InvalidInput, match="no files"):
        actions.do_start_build(empty, actions.get_schema("hzz"), None)


def test_queries_on_a_collection_not_built_are_a_conflict(demo_datasets):
    from tagdb import actions

    collection = _hzz_collection(demo_datasets[0])
    with pytest.raises(Conflict, match="not built yet"):
        actions.count(collection, "n_muon >= 2")


@pytest.fixture
def duckdb_file(settings, tmp_path) -> str:
    """The TAG DB of this test: a DuckDB file (whatever the suite's TAG DB is)."""
    path = str(tmp_path / "tags.duckdb")
    settings.TAGDB_URL = f"duckdb:///{path}"
    return path


def test_a_tag_db_held_by_another_process_is_busy_then_free(duckdb_file, tagged, monkeypatch):  # noqa: F811
    from tagdb import actions

    path = duckdb_file
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
            "time.sleep(3)",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        monkeypatch.setattr(actions, "BUSY_TIMEOUT_S", 0.3)
        with pytest.raises(actions.TagDBBusy, match="the TAG DB is busy"):
            actions.count(tagged.hzz, "n_muon >= 2")
        monkeypatch.setattr(actions, "BUSY_TIMEOUT_S", 20)
        assert actions.count(tagged.hzz, "n_muon >= 2").count == HZZ_DIMUON  # waits for it
    finally:
        holder.kill()
        holder.wait()


def test_load_demo_builds_the_demo_tags(db, storage_root, settings):
    from io import StringIO

    from django.core.management import call_command

    from tagdb.models import TagCollection

    out = StringIO()
    call_command("load_demo", "--no-users", stdout=out)
    text = out.getvalue()
    assert "TAGs of demo.hzz (hzz v1): 2,421 events built" in text
    assert "TAGs of demo.zmumu (zmumu v1): 2,304 events built" in text
    call_command("load_demo", "--no-users", stdout=out)
    assert "2,421 events, already built" in out.getvalue()
    drop_tags(*TagCollection.objects.all())


def test_the_management_commands_record_schemas_and_build(demo_datasets):
    from io import StringIO

    from django.core.management import call_command

    from tagdb.models import TagCollection

    out = StringIO()
    call_command("load_tag_schemas", stdout=out)
    assert "hzz v1:" in out.getvalue()
    call_command("build_tags", "demo.zmumu", stdout=out)
    assert "2,304 events from 1 file(s)" in out.getvalue()
    drop_tags(*TagCollection.objects.all())
