"""The columnar TAG store: builds as Parquet files published by a manifest, read by DuckDB
while builds write; the catalog in a database. (Its answers are checked with every other
backend's in test_store.py, test_selection_fuzz.py, test_goodruns.py and
test_event_numbers.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dss.errors import InvalidInput
from tagdb.parquet import MANIFEST, RETIRED
from tagdb.selection import parse
from tagdb.store import TagStore, parquet_url
from tests.tagdb.conftest import unique_key

GUID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
ROOT = Path(__file__).resolve().parents[2]


def part(tags, start, stop):
    return {name: values[start:stop] for name, values in tags.items()}


def build(store, key, schema, tags):
    with store.begin_build(key, schema) as builder:
        builder.load(GUID, tags)
        return builder.publish()


@pytest.fixture
def store(tmp_path):
    tag_store = TagStore(f"parquet:///{tmp_path / 'tags'}")
    yield tag_store
    tag_store.dispose()


def test_urls_name_the_folder_and_the_catalog(tmp_path):
    assert parquet_url(f"parquet://{tmp_path}") == (
        f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        str(tmp_path),
    )
    catalog, folder = parquet_url("postgresql+psycopg://u:p@db:5432/tags?parquet_dir=/srv/tags")
    assert folder == "/srv/tags"
    assert catalog.render_as_string(hide_password=False) == "postgresql+psycopg://u:p@db:5432/tags"
    assert parquet_url("duckdb:///x.duckdb") == ("duckdb:///x.duckdb", None)
    with pytest.raises(InvalidInput, match="absolute folder"):
        parquet_url("parquet://relative/tags")


def test_a_build_is_one_sorted_file_with_row_group_statistics(
    store, monkeypatch, zmumu_schema, zmumu_tags
):
    monkeypatch.setattr("tagdb.store.ROW_GROUP_ROWS", 2048)  # DuckDB's smallest
    # Four copies of the sample, runs descending: 9216 events, 5 row groups once sorted.
    reversed_tags = {
        name: np.ma.concatenate([values[::-1]] * 4) for name, values in zmumu_tags.items()
    }
    key = unique_key()
    build(store, key, zmumu_schema, reversed_tags)
    manifest = json.loads((store.parquet.root / key / MANIFEST).read_text())
    (path,) = store.parquet.manifest(key).files
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 9216 and meta.num_row_groups == 5
    run_column = meta.schema.to_arrow_schema().get_field_index("run")
    lows = [meta.row_group(i).column(run_column).statistics.min for i in range(5)]
    assert lows == sorted(lows) and lows[0] < lows[-1]  # sorted by run: groups can be skipped
    assert all(meta.row_group(i).column(run_column).statistics.has_min_max for i in range(5))
    # The catalog keeps the collection (for listings); the manifest goes with the files.
    assert manifest["generation"] in path and manifest["info"]["n_events"] == 9216
    assert [c.key for c in store.collections()] == [key]
    # Load order is kept for event lists: the first event loaded comes first.
    first = store.events(key, None, limit=1)[0]
    assert first.entry == 0 and first.run == int(reversed_tags["run"][0])
    run = int(zmumu_tags["run"][0])
    assert store.count(key, parse(f"run == {run}")) == 4 * int((zmumu_tags["run"] == run).sum())


def test_a_rebuild_retires_the_old_files_and_removes_them_after_the_grace_period(
    store, hzz_schema, hzz_tags
):
    key = unique_key()
    build(store, key, hzz_schema, part(hzz_tags, 0, 1000))
    old = store.parquet.manifest(key)
    assert store.count(key) == 1000
    build(store, key, hzz_schema, hzz_tags)
    new = store.parquet.manifest(key)
    assert new.generation != old.generation and store.count(key) == 2421
    # Readers that read the old manifest may still be opening its files: they stay.
    assert all(Path(f).exists() for f in old.files)
    assert (Path(old.files[0]).parent / RETIRED).exists()
    assert not list(store.parquet.root.glob(f"{key}/{MANIFEST}.*"))  # no manifest half-written
    assert store.parquet.sweep() == 0
    assert store.parquet.sweep(grace=0) == 1
    assert not Path(old.files[0]).parent.exists()
    assert all(Path(f).exists() for f in new.files)
    assert store.count(key) == 2421
    assert store.drop(key)
    assert store.parquet.manifest(key) is None and store.collections() == []
    assert store.parquet.sweep(grace=0) == 1 and not list((store.parquet.root / key).iterdir())


def test_a_query_that_finds_its_files_gone_reads_the_manifest_again(
    store, tmp_path, hzz_schema, hzz_tags
):
    key = unique_key()
    build(store, key, hzz_schema, part(hzz_tags, 0, 1000))
    reader = TagStore(f"parquet:///{tmp_path / 'tags'}")  # another web worker
    try:
        assert reader.count(key, parse("n_muon >= 1")) > 0
        stale = reader.parquet.manifest(key)
        build(store, key, hzz_schema, hzz_tags)
        store.parquet.sweep(grace=0)
        # The reader read the old manifest just before the swap, and its files are gone
        # by the time it scans them.
        fresh = reader.parquet.manifest
        calls = []

        def first_stale(k):
            calls.append(k)
            return stale if len(calls) == 1 else fresh(k)

        reader.parquet.manifest = first_stale
        assert reader.count(key) == 2421
        assert len(calls) == 2
        # The same on a thread whose DuckDB connection has no view yet: the view of the
        # stale manifest cannot be made, and that too sends the query back to the manifest.
        import concurrent.futures

        calls.clear()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert pool.submit(reader.count, key).result() == 2421
        assert len(calls) == 2
    finally:
        reader.dispose()


@pytest.mark.parametrize("gone", ["dropped", "rebuilt elsewhere"])
def test_a_collection_whose_files_are_gone_does_not_stop_queries_of_the_others(
    store, tmp_path, hzz_schema, hzz_tags, gone
):
    """A web worker queried collection A; A was then dropped (or rebuilt by another
    process) and its old files swept. Queries of B, on the worker's thread and on a new
    thread (a new DuckDB connection, which creates its views afresh), still answer; A,
    asked again, answers from its new build or says it is gone."""
    import concurrent.futures

    from dss.errors import NotFound

    a, b = unique_key(), unique_key()
    build(store, a, hzz_schema, part(hzz_tags, 0, 1000))
    build(store, b, hzz_schema, hzz_tags)
    writer = TagStore(f"parquet:///{tmp_path / 'tags'}")  # another process's store
    try:
        assert store.count(a) == 1000 and store.count(b) == 2421
        if gone == "dropped":
            writer.drop(a)
        else:
            build(writer, a, hzz_schema, part(hzz_tags, 0, 500))
        assert writer.parquet.sweep(grace=0) == 1
    finally:
        writer.dispose()
    assert store.count(b) == 2421
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(store.count, b).result() == 2421
        if gone == "dropped":
            with pytest.raises(NotFound):
                pool.submit(store.count, a).result()
        else:
            assert pool.submit(store.count, a).result() == 500
    assert store.count(b, parse("n_muon >= 1")) > 0


def test_an_aborted_or_dead_build_leaves_nothing_published(store, hzz_schema, hzz_tags):
    key = unique_key()
    build(store, key, hzz_schema, part(hzz_tags, 0, 100))
    with store.begin_build(key, hzz_schema, token="dead1") as builder:
        builder.load(GUID, hzz_tags)
        assert store.staging_tables() == [f"tag_{key}__dead1"]
        builder.abort()
    assert store.staging_tables() == [] and store.count(key) == 100
    dead = store.begin_build(key, hzz_schema, token="dead2")
    dead.load(GUID, hzz_tags)
    dead.prepare()  # its worker died before publishing
    assert store.staging_tables() == [f"tag_{key}__dead2"]
    assert store.discard_build(key, "dead2") and store.staging_tables() == []
    published = store.parquet.manifest(key).generation
    assert not store.discard_build(key, published)  # never the published build
    assert store.count(key) == 100


READER = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from tagdb.store import TagStore
    from tagdb.selection import parse
    store = TagStore(sys.argv[2])
    seen, slowest, errors, n = set(), 0.0, [], 0
    tree = parse("n_muon >= 0 || missing(n_muon)")
    store.count(sys.argv[3], tree)  # imports and connections made before timing
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            seen.add(store.count(sys.argv[3], tree))
        except Exception as exc:
            errors.append(repr(exc))
        slowest = max(slowest, time.monotonic() - started)
        n += 1
    print(json.dumps({"seen": sorted(seen), "slowest": slowest, "errors": errors[:3], "n": n}))
    """
)


def test_readers_in_other_processes_see_one_build_whole_and_never_wait(
    store, tmp_path, hzz_schema, hzz_tags
):
    key = unique_key()
    build(store, key, hzz_schema, part(hzz_tags, 0, 1000))
    url = f"parquet:///{tmp_path / 'tags'}"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(ROOT), url, key, "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for reader in readers:
        assert reader.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 3
    sizes = [2421, 1000]
    rebuilds = 0
    while time.monotonic() < deadline:
        build(store, key, hzz_schema, part(hzz_tags, 0, sizes[rebuilds % 2]))
        store.parquet.sweep(grace=0)  # the worst case: old files removed at once
        rebuilds += 1
    results = [json.loads(reader.communicate(timeout=30)[0]) for reader in readers]
    assert rebuilds >= 2
    for result in results:
        assert result["errors"] == [] and result["n"] > 10
        assert set(result["seen"]) <= {1000, 2421}  # one build or the other, never a mix
        # No reader waits for a build (one takes longer than this on a busy machine).
        assert result["slowest"] < 1.0


def test_the_portal_opens_the_parquet_store_from_its_settings(settings, tmp_path):
    from tagdb import actions

    settings.TAGDB_URL = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    settings.DSS_TAG_PARQUET_DIR = str(tmp_path / "rows")
    store = actions.get_store()
    try:
        assert store.parquet is not None and store.parquet.root == (tmp_path / "rows").resolve()
        assert store.engine.dialect.name == "sqlite" and store.dialect == "duckdb"
    finally:
        actions._stores.pop(settings.TAGDB_URL + settings.DSS_TAG_PARQUET_DIR, None)
        store.dispose()
    assert sa.inspect(store.engine).get_table_names() == []  # the catalog is made on use


def test_many_threads_read_at_once_while_a_build_publishes(store, hzz_schema, hzz_tags):
    from concurrent.futures import ThreadPoolExecutor

    key = unique_key()
    build(store, key, hzz_schema, part(hzz_tags, 0, 1000))
    tree = parse("n_muon >= 2 && met > 20")
    expected = {
        int(np.ma.filled((hzz_tags["n_muon"][:n] >= 2) & (hzz_tags["met"][:n] > 20), False).sum())
        for n in (1000, 2421)
    }

    def read(_):
        return {store.count(key, tree) for _ in range(20)}

    with ThreadPoolExecutor(12) as pool:  # more threads than a small pool would keep
        answers = pool.map(read, range(12))
        build(store, key, hzz_schema, hzz_tags)
        seen = set().union(*answers)
    assert seen <= expected and seen
    assert store.count(key, tree) == max(expected)
