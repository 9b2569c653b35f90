"""The TAG store on DuckDB, SQLite, PostgreSQL and MariaDB; Oracle statements compile."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from dss.errors import InvalidInput, NotFound
from tagdb.selection import SelectionError, check, evaluate, parse
from tagdb.store import (
    TagStore,
    _sorted_copies,
    select_count,
    select_histogram,
    select_range,
    sorted_copy_name,
    table_name,
    tag_table,
)
from tests.tagdb.conftest import open_backend, unique_key

# The HZZ events are loaded as two files: entries 0..1199 and 1200..2420.
SPLIT = 1200
GUID_A = "0a3c4f1e-1111-4b6e-9c1a-6a4d1f2e3b4c"
GUID_B = "7f1e2d3c-2222-4a5b-8c9d-0e1f2a3b4c5d"

SELECTIONS = [
    "n_muon >= 2",
    "n_muon >= 2 && (met > 40 || trigger_isomu24)",
    "!(lead_muon_pt > 30)",
    "abs(lead_muon_eta) < 1.2 && lead_muon_pt > 20",
    "met > 2*lead_jet_pt || n_jet in [0, 3..5]",
    "met / n_jet > 20",
    "!(met / n_jet > 20)",
    "sqrt(met - 30) > 2 && min(lead_muon_pt, met) > 10",
    "(met > 50) == os_dimuon",
    "n_bjet >= 1 or not trigger_isomu24",
    "dimuon_mass in [80..100] && n_muon == 2",
]


def part(tags, start, stop):
    return {name: values[start:stop] for name, values in tags.items()}


@pytest.fixture(scope="module")
def hzz(store, hzz_schema, hzz_tags):
    """The HZZ collection in ``store``, built once per backend."""
    key = unique_key("h")
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, part(hzz_tags, 0, SPLIT))
        builder.load(GUID_B, part(hzz_tags, SPLIT, None), entry_start=SPLIT)
        builder.publish()
    yield key
    store.drop(key)


@pytest.fixture(scope="module")
def zmumu(store, zmumu_schema, zmumu_tags):
    key = unique_key("z")
    with store.begin_build(key, zmumu_schema) as builder:
        builder.load(GUID_A, zmumu_tags)
        builder.publish()
    yield key
    store.drop(key)


def test_the_collection_is_catalogued(store, hzz, hzz_schema):
    info = store.collection(hzz)
    assert info.n_events == 2421 and info.n_files == 2
    assert info.schema_name == "hzz" and info.schema_version == 1
    assert info.attributes == {a.name: a.type for a in hzz_schema.attributes}
    assert "run" not in info.attribute_types()
    assert hzz in [c.key for c in store.collections()]


def test_it_counts_dimuon_events(store, hzz):
    assert store.count(hzz, parse("n_muon >= 2")) == 1413
    assert store.count(hzz) == 2421


@pytest.mark.parametrize("text", SELECTIONS)
def test_counts_agree_with_numpy(store, hzz, hzz_tags, text):
    tree = parse(text)
    assert store.count(hzz, tree) == int(evaluate(tree, hzz_tags).sum())


def test_selection_errors_name_the_column(store, hzz):
    with pytest.raises(SelectionError, match="unknown attribute 'met_x' at column 13"):
        store.count(hzz, parse("n_jet >1 && met_x > 40"))
    with pytest.raises(SelectionError, match="unknown attribute 'run'"):
        store.count(hzz, parse("run == 1"))


def test_histogram_bins_sum_to_the_count(store, hzz):
    tree = parse("n_muon >= 2")
    hist = store.histogram(hzz, "lead_muon_pt", tree, bins=50)
    assert len(hist.counts) == 50 and len(hist.edges) == 51
    assert hist.counts.sum() == store.count(hzz, tree) == hist.total
    assert hist.underflow == hist.overflow == hist.missing == 0


def test_histogram_matches_numpy(store, hzz, hzz_tags):
    tree = parse("trigger_isomu24 && n_jet >= 1")
    hist = store.histogram(hzz, "lead_jet_pt", tree, bins=40, lo=0, hi=200)
    values = hzz_tags["lead_jet_pt"][evaluate(tree, hzz_tags)]
    expected, _ = np.histogram(values, bins=40, range=(0, 200))
    assert hist.counts.tolist() == expected.tolist()
    assert hist.overflow == int((values > 200).sum())
    assert hist.underflow == int((values < 0).sum())


def test_missing_values_are_counted_apart_from_the_bins(store, hzz, hzz_tags):
    hist = store.histogram(hzz, "sublead_muon_pt")
    present = hzz_tags["sublead_muon_pt"].compressed()
    assert len(hist.counts) == 50
    # The range starts at the lowest value and ends less than a bin past the highest.
    assert hist.edges[0] == pytest.approx(present.min())
    assert 0 <= hist.edges[-1] - present.max() < hist.edges[1] - hist.edges[0]
    assert hist.counts.tolist() == np.histogram(present, bins=hist.edges)[0].tolist()
    assert hist.missing == int((hzz_tags["n_muon"] < 2).sum()) == 1008
    assert hist.underflow == hist.overflow == 0
    assert hist.total == 2421
    # With a range given, too: a missing value is neither below nor above it.
    ranged = store.histogram(hzz, "lead_jet_pt", bins=10, lo=0, hi=100)
    assert ranged.missing == 716 and ranged.underflow == 0


@pytest.mark.parametrize(
    ("attr", "text"),
    [
        ("lead_muon_pt", "n_muon >= 2"),
        ("met", "met > 60"),  # the cut trims the range to the passing events
        ("lead_jet_pt", "n_jet >= 1 && met > 30"),
        ("event", ""),  # wide integer ranges share grid cells
    ],
)
def test_automatic_histograms_put_every_event_in_its_bin(
    store, hzz, zmumu, hzz_tags, zmumu_tags, attr, text
):
    key, tags = (zmumu, zmumu_tags) if attr == "event" else (hzz, hzz_tags)
    tree = parse(text) if text else None
    hist = store.histogram(key, attr, tree, bins=40)
    values = tags[attr] if tree is None else tags[attr][evaluate(tree, tags)]
    values = np.ma.compressed(values)
    assert len(hist.counts) == 40
    assert hist.edges[0] <= values.min() and values.max() <= hist.edges[-1]
    width = hist.edges[1] - hist.edges[0]
    assert values.min() - hist.edges[0] < width and hist.edges[-1] - values.max() < width
    assert hist.counts.tolist() == np.histogram(values, bins=hist.edges)[0].tolist()
    assert hist.total == len(values)


def test_a_narrow_selection_is_binned_exactly(store, hzz, hzz_tags):
    # The passing events span a few grid cells only: a second scan bins them.
    tree = parse("met > 40 && met < 41")
    hist = store.histogram(hzz, "met", tree, bins=20)
    values = hzz_tags["met"][evaluate(tree, hzz_tags)]
    assert len(hist.counts) == 20 and hist.total == len(values) > 0
    assert hist.edges[0] <= values.min() and values.max() <= hist.edges[-1]
    assert hist.edges[-1] - hist.edges[0] < 1.0
    assert hist.counts.tolist() == np.histogram(values, bins=hist.edges)[0].tolist()


def test_an_empty_selection_gives_an_empty_histogram(store, hzz):
    hist = store.histogram(hzz, "met", parse("met > 1e9"))
    assert hist.total == 0 and len(hist.counts) == 50


@pytest.mark.parametrize(
    ("attr", "bins", "lo", "hi"),
    [
        ("n_muon", 4, 0, 4),  # the value 4 is the upper edge: the last bin, as in numpy
        ("met", 25, 20, 80),  # values below and above the range
        ("met", 50, 40.0, 40.001),  # a range far narrower than the values: clamped codes
    ],
)
def test_given_ranges_bin_like_numpy(store, hzz, hzz_tags, attr, bins, lo, hi):
    hist = store.histogram(hzz, attr, None, bins=bins, lo=lo, hi=hi)
    values = hzz_tags[attr]
    assert hist.counts.tolist() == np.histogram(values, bins=bins, range=(lo, hi))[0].tolist()
    assert hist.underflow == int((values < lo).sum())
    assert hist.overflow == int((values > hi).sum())


def test_ranges_are_recorded_when_the_collection_is_published(store, hzz, hzz_tags):
    ranges = store.collection(hzz).ranges
    present = hzz_tags["lead_muon_pt"].compressed()
    assert ranges["lead_muon_pt"] == pytest.approx((present.min(), present.max()))
    assert ranges["n_muon"] == (0, int(hzz_tags["n_muon"].max()))
    assert store.attribute_ranges(hzz) == ranges


def test_a_catalog_from_before_ranges_is_brought_up_to_date(store, hzz_schema, hzz_tags):
    if store.parquet is not None:
        pytest.skip("a Parquet store's manifests always held the ranges")
    key = unique_key()
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, part(hzz_tags, 0, 100))
        builder.publish()
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE tagdb_catalog DROP COLUMN ranges"))
        reopened = TagStore(store.engine.url)
        try:
            assert reopened.collection(key).ranges == {}
            ranges = reopened.attribute_ranges(key)  # measured now, and recorded
            assert ranges["n_muon"] == (0, int(hzz_tags["n_muon"][:100].max()))
            assert reopened.collection(key).ranges == ranges
            assert reopened.histogram(key, "met").total == 100
        finally:
            reopened.dispose()
    finally:
        TagStore(store.engine.url)._ensure_catalog()  # the column is back even on failure
        store.drop(key)


def test_integer_histograms_get_one_bin_per_value(store, hzz, hzz_tags):
    hist = store.histogram(hzz, "n_muon")
    assert hist.edges.tolist() == [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5]
    assert hist.counts.tolist() == np.bincount(hzz_tags["n_muon"]).tolist()
    flags = store.histogram(hzz, "os_dimuon")
    assert flags.counts.tolist() == np.bincount(hzz_tags["os_dimuon"], minlength=2).tolist()


def test_histogram_refuses_unknown_attributes(store, hzz):
    with pytest.raises(InvalidInput, match="did you mean 'met'"):
        store.histogram(hzz, "mett")


def test_events_pages_through_the_selection(store, hzz, hzz_tags):
    tree = parse("n_muon >= 4")
    entries = np.flatnonzero(evaluate(tree, hzz_tags))
    first = store.events(hzz, tree, limit=3)
    rest = store.events(hzz, tree, limit=100, offset=3)
    assert [e.entry for e in first + rest] == entries.tolist()
    assert {e.file_guid for e in first + rest} <= {GUID_A, GUID_B}
    assert first[0].run is None and first[0].event is None


def test_event_lists_carry_attribute_values_and_none_where_missing(store, hzz, request, hzz_tags):
    tree = parse("n_muon <= 1")
    names = ["lead_muon_pt", "lead_muon_charge", "os_dimuon", "n_muon"]
    expected = np.flatnonzero(evaluate(tree, hzz_tags))
    keys = [hzz]
    if store.parquet is None:
        keys.append(request.getfixturevalue("legacy_hzz"))
    for key in keys:  # -999 in an older collection is None too
        rows = store.events(key, tree, limit=5000, attributes=names)
        assert [e.entry for e in rows] == expected.tolist()
        for e in rows:
            assert list(e.values) == names
            for name in names:
                value = hzz_tags[name][e.entry]
                if value is np.ma.masked:
                    assert e.values[name] is None, (key, name, e.entry)
                else:
                    assert e.values[name] == pytest.approx(value.item()), (key, name, e.entry)
        assert sum(e.values["lead_muon_pt"] is None for e in rows) == 59
    with pytest.raises(InvalidInput, match="did you mean 'lead_muon_pt'"):
        store.events(hzz, tree, attributes=["lead_muon_ptt"])


def test_top_orders_by_the_attribute(store, hzz, hzz_tags):
    top = store.top(hzz, parse("n_muon >= 2"), "met", 5)
    mask = hzz_tags["n_muon"] >= 2
    expected = np.sort(hzz_tags["met"][mask])[::-1][:5]
    assert [e.value for e in top] == pytest.approx(expected.tolist())


def test_files_touched_and_entries_by_file(store, hzz, hzz_tags):
    tree = parse("n_muon >= 4")
    entries = np.flatnonzero(evaluate(tree, hzz_tags))
    by_file = store.entries_by_file(hzz, tree)
    assert by_file[GUID_A].tolist() == entries[entries < SPLIT].tolist()
    assert by_file[GUID_B].tolist() == entries[entries >= SPLIT].tolist()
    assert by_file[GUID_A].dtype == np.int64
    assert store.files_touched(hzz, tree) == (2, 2)
    assert store.files_touched(hzz, parse(f"n_muon >= 4 && lead_muon_pt > {1e6}")) == (0, 2)
    assert store.entries_by_file(hzz, parse("n_muon > 100")) == {}


def test_attribute_ranges(store, hzz, hzz_tags):
    ranges = store.attribute_ranges(hzz)
    assert ranges["n_muon"] == (0, 4)
    present = hzz_tags["lead_jet_pt"].compressed()
    assert ranges["lead_jet_pt"] == pytest.approx((present.min(), present.max()))
    assert ranges["trigger_isomu24"] == (True, True)


def test_run_and_event_numbers_are_selectable(store, zmumu, zmumu_tags):
    tree = parse("run in [148029..148031] && opposite_charge && mass > 80")
    assert store.count(zmumu, tree) == int(evaluate(tree, zmumu_tags).sum())
    refs = store.events(zmumu, tree, limit=2)
    assert refs[0].run == zmumu_tags["run"][refs[0].entry]
    assert refs[0].event == zmumu_tags["event"][refs[0].entry]


def test_pick_events(store, zmumu, zmumu_tags, new_key, zmumu_schema):
    pairs = np.stack([zmumu_tags["run"], zmumu_tags["event"]], axis=1)
    # The Zmumu sample repeats every (run, event); a collection of first occurrences
    # has each pair once.
    _, first = np.unique(pairs, axis=0, return_index=True)
    first = np.sort(first)
    with store.begin_build(new_key, zmumu_schema) as builder:
        subset = {name: values[first] for name, values in zmumu_tags.items()}
        builder.load(GUID_B, dict(subset, entry=first))
        builder.publish()
    unique = tuple(pairs[first[5]].tolist())
    result = store.pick_events([new_key], [unique, (1, 2), unique])
    assert [(p.key, p.run, p.event, p.file_guid, p.entry) for p in result.found] == [
        (new_key, *unique, GUID_B, int(first[5]))
    ]
    assert result.missing == [(1, 2)]
    assert result.duplicates == []
    both = store.pick_events([new_key, zmumu], [unique])
    times = int((pairs == unique).all(axis=1).sum())
    assert len(both.found) == 1 + times
    assert both.duplicates == [unique]
    assert {p.entry for p in both.found if p.key == zmumu} == set(
        np.flatnonzero((pairs == unique).all(axis=1)).tolist()
    )


def test_pick_events_needs_run_and_event_numbers(store, hzz):
    with pytest.raises(InvalidInput, match="no run and event numbers"):
        store.pick_events([hzz], [(1, 2)])


def test_a_rebuild_replaces_the_collection(store, new_key, hzz_schema, hzz_tags):
    with store.begin_build(new_key, hzz_schema) as builder:
        builder.load(GUID_A, hzz_tags)
        builder.publish()
    with store.begin_build(new_key, hzz_schema) as builder:
        builder.load(GUID_B, part(hzz_tags, 0, 100))
        builder.publish()
    assert store.count(new_key) == 100
    assert store.collection(new_key).n_events == 100
    assert store.files_touched(new_key) == (1, 1)


def test_a_failed_build_leaves_the_old_collection(store, new_key, hzz_schema, hzz_tags):
    with store.begin_build(new_key, hzz_schema) as builder:
        builder.load(GUID_A, part(hzz_tags, 0, 500))
        builder.publish()
    with pytest.raises(RuntimeError):
        with store.begin_build(new_key, hzz_schema) as builder:
            builder.load(GUID_B, hzz_tags)
            staging = builder.staging_name
            raise RuntimeError("the worker died")
    assert store.count(new_key) == 500
    assert not sa.inspect(store.engine).has_table(staging)


def test_bad_tags_are_refused(store, new_key, hzz_schema, hzz_tags):
    with store.begin_build(new_key, hzz_schema) as builder:
        with pytest.raises(InvalidInput, match="not a UUID"):
            builder.load("not-a-guid", hzz_tags)
        incomplete = dict(hzz_tags)
        del incomplete["met"]
        with pytest.raises(InvalidInput, match="lack attribute 'met'"):
            builder.load(GUID_A, incomplete)
        uneven = dict(hzz_tags, met=hzz_tags["met"][:10])
        with pytest.raises(InvalidInput, match="'met' has 10 values"):
            builder.load(GUID_A, uneven)
        builder.abort()
    with pytest.raises(NotFound):
        store.collection(new_key)


def test_missing_values_are_null(store, new_key, hzz_schema, hzz_tags):
    tags = part(hzz_tags, 0, 10)
    tags["met"] = tags["met"].copy()
    tags["met"][:3] = [np.nan, np.inf, -np.inf]  # not finite: missing
    tags["n_jet"] = np.ma.array(tags["n_jet"], mask=[True, True] + [False] * 8)
    tags["os_dimuon"] = np.ma.array(tags["os_dimuon"], mask=[True] + [False] * 9)
    with store.begin_build(new_key, hzz_schema) as builder:
        builder.load(GUID_A, tags)
        builder.publish()
    assert store.count(new_key, parse("met > -1")) == 7
    assert store.count(new_key, parse("!(met > -1)")) == 0  # unknown, not true
    assert store.count(new_key, parse("missing(met)")) == 3
    assert store.histogram(new_key, "met").missing == 3
    assert store.count(new_key, parse("missing(n_jet) && missing(os_dimuon)")) == 1
    assert store.count(new_key, parse("n_jet >= 0 || os_dimuon || !os_dimuon")) == 9
    with store._scanning() as conn:  # the table, or the view over a Parquet build's files
        table = sa.table(
            store.collection(new_key).table, sa.column("n_jet"), sa.column("os_dimuon")
        )
        nulls = conn.execute(
            sa.select(sa.func.count()).where(table.c.n_jet.is_(None) | table.c.os_dimuon.is_(None))
        ).scalar()
    assert nulls == 2


def test_drop_removes_the_collection(store, hzz_schema, hzz_tags):
    key = unique_key()
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, part(hzz_tags, 0, 10))
        builder.publish()
    assert store.drop(key) is True
    assert store.drop(key) is False
    with pytest.raises(NotFound):
        store.count(key)
    assert not sa.inspect(store.engine).has_table(table_name(key))


@pytest.mark.parametrize("key", ["", "C42", "42c", "c-42", "c42; drop table x", "c" * 25, None])
def test_keys_are_validated(key):
    with pytest.raises(InvalidInput, match="invalid TAG collection key"):
        table_name(key)


# -- Oracle: compile only, no server


@pytest.fixture
def oracle_table(hzz_schema):
    types = {a.name: a.type for a in hzz_schema.attributes}
    return tag_table(table_name("c42"), types, dialect="oracle"), types


def compile_oracle(stmt):
    return stmt.compile(dialect=oracle.dialect())


def test_oracle_count_uses_bind_parameters(oracle_table):
    table, types = oracle_table
    tree = parse("n_muon >= 2 && (met > 40.25 || !trigger_isomu24) && n_jet in [7, 9..11]")
    compiled = compile_oracle(select_count(table, types, tree))
    sql = str(compiled)
    assert sql.startswith("SELECT count(*) AS count_1 \nFROM tag_c42 \nWHERE")
    assert "n_muon >= :param_1" in sql
    assert "trigger_isomu24 = 0" in sql or "NOT" in sql
    for literal in ("40.25", "11"):
        assert literal not in sql
    assert sorted(compiled.params.values()) == [2, 7, 9, 11, 40.25]


def test_oracle_histogram_is_binned_in_the_database(oracle_table):
    table, types = oracle_table
    tree = parse("n_muon >= 2")
    compiled = compile_oracle(select_histogram(table, types, "met", tree, 50, 0.0, 250.0))
    sql = str(compiled)
    assert "floor(" in sql.lower()
    assert "GROUP BY binned.bin" in sql
    assert "WHEN (tag_c42.met < :param_1)" in sql
    assert "250" not in sql and "0.2" not in sql
    assert 0.2 in compiled.params.values() and 250.0 in compiled.params.values()
    ranged = str(compile_oracle(select_range(table, types, "met", tree)))
    assert "min(tag_c42.met)" in ranged and "max(tag_c42.met)" in ranged


def test_oracle_store_compiles_without_a_server():
    store = TagStore("oracle+oracledb://scott:tiger@127.0.0.1:1/none")
    assert store.dialect == "oracle"
    table = tag_table(table_name("c1"), {"met": "float"}, dialect=store.dialect)
    tree = check(parse("met > 1"), {"met": "float"})
    sql = str(select_count(table, {"met": "float"}, tree).compile(dialect=store.engine.dialect))
    assert "tag_c1.met > :param_1" in sql


def test_unknown_collection_is_not_found(store):
    with pytest.raises(NotFound):
        store.count(f"x{uuid.uuid4().hex[:10]}")


@pytest.fixture
def duck(tmp_path):
    """A DuckDB store of its own (sorted copies are how DuckDB indexes attributes)."""
    store = TagStore(f"duckdb:///{tmp_path / 'tags.duckdb'}")
    yield store
    store.dispose()


@pytest.fixture
def duck_hzz(duck, hzz_schema, hzz_tags):
    key = unique_key("h")
    with duck.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, hzz_tags)
        builder.publish()
    return key


def test_duckdb_answers_one_indexed_attribute_from_its_sorted_copy(duck, duck_hzz, hzz_tags):
    store, hzz = duck, duck_hzz
    info = store.collection(hzz)
    assert info.indexed  # the HZZ schema indexes a few attributes
    with store.engine.connect() as conn:
        copies = sorted(_sorted_copies(conn, info.table))
    assert copies == sorted(sorted_copy_name(info.table, i) for i in range(len(info.indexed)))
    for name in info.indexed:
        tree = parse(f"{name} > 1")
        source = store._source(hzz, tree)[1]
        assert source.name == sorted_copy_name(info.table, info.indexed.index(name))
        assert store.count(hzz, tree) == int(evaluate(tree, hzz_tags).sum())
    # Two attributes, or a histogram of another one, read the collection's own table.
    assert store._source(hzz, parse("met > 1 && n_jet > 1"))[1].name == info.table
    assert store._source(hzz, parse("met > 1"), "n_jet")[1].name == info.table


def test_sorted_copies_follow_rebuilds_aborts_and_drops(duck, hzz_schema, hzz_tags):
    store = duck
    key = unique_key()
    final = table_name(key)

    def copies():
        with store.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
        return sorted(n for n in names if n.startswith("tagx_") and key in n)

    for rows in (100, 50):
        with store.begin_build(key, hzz_schema) as builder:
            builder.load(GUID_A, part(hzz_tags, 0, rows))
            builder.publish()
        assert store.count(key, parse("met > -1")) == rows
    indexed = [a for a in hzz_schema.attributes if a.index]
    expected = sorted(sorted_copy_name(final, i) for i in range(len(indexed)))
    assert copies() == expected
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, part(hzz_tags, 0, 10))
        builder.abort()
    assert copies() == expected and store.count(key, parse("met > -1")) == 50
    store.drop(key)
    assert copies() == []


def test_a_session_opens_an_embedded_tag_db_once(tmp_path, hzz_schema, hzz_tags):
    # The portal opens DuckDB without a pool, so that workers can take their turn with
    # the file; a page's reads then share one opening instead of one each.
    from sqlalchemy.pool import NullPool

    store = TagStore(sa.create_engine(f"duckdb:///{tmp_path / 'tags.duckdb'}", poolclass=NullPool))
    key = unique_key()
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, hzz_tags)
        builder.publish()
    opened = []
    sa.event.listen(store.engine, "connect", lambda *_: opened.append(1))
    tree = parse("n_muon >= 2 && met > 20")
    assert store.count(key, tree) == int(evaluate(tree, hzz_tags).sum())
    assert len(opened) == 1  # the catalog and the count on one connection
    with store.session():
        store.count(key, tree)
        store.files_touched(key, tree)
        store.histogram(key, "met", tree)
    assert len(opened) == 2


# Collections published before missing values were NULL hold -999 for them.
README_SELECTIONS = [
    "hypot(met, lead_jet_pt) > 100",
    "lead_muon_pt < 20",
    "!(lead_muon_pt >= 20)",
    "abs(lead_muon_eta) < 2.4 and not os_dimuon and hypot(met, lead_jet_pt) > 100",
    "missing(lead_jet_pt)",
    "has(sublead_muon_pt) && lead_muon_charge == -1",
]


def as_published_before(tags):
    """TAGs as DSS computed them before: -999 where a number is missing."""
    return {
        name: np.ma.filled(values, -999) if values.dtype.kind in "if" else np.ma.getdata(values)
        for name, values in tags.items()
    }


@pytest.fixture(scope="module")
def legacy_hzz(store, hzz_schema, hzz_tags):
    if store.parquet is not None:
        pytest.skip("no Parquet store was written before missing values were NULL")
    key = unique_key("l")
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, as_published_before(part(hzz_tags, 0, SPLIT)))
        builder.load(GUID_B, as_published_before(part(hzz_tags, SPLIT, None)), entry_start=SPLIT)
        builder.publish()
    # Its catalog row says nothing about missing values, and its ranges are measured anew.
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(store.catalog)
            .where(store.catalog.c.key == key)
            .values(missing=None, ranges=None)
        )
    yield key
    store.drop(key)


def test_new_collections_record_that_missing_values_are_null(store, hzz, legacy_hzz):
    assert store.collection(hzz).missing_is_null
    assert not store.collection(legacy_hzz).missing_is_null


@pytest.mark.parametrize("text", SELECTIONS + README_SELECTIONS)
def test_an_older_collection_answers_as_if_missing_values_were_null(
    store, legacy_hzz, hzz_tags, text
):
    tree = parse(text)
    assert store.count(legacy_hzz, tree) == int(evaluate(tree, hzz_tags).sum())


def test_an_older_collection_counts_missing_values_apart(store, legacy_hzz, hzz, hzz_tags):
    old = store.histogram(legacy_hzz, "lead_jet_pt", bins=30)
    new = store.histogram(hzz, "lead_jet_pt", bins=30)
    assert old.missing == new.missing == 716 and old.underflow == 0
    assert old.edges.tolist() == new.edges.tolist()
    assert old.counts.tolist() == new.counts.tolist()
    present = hzz_tags["lead_jet_pt"].compressed()
    assert store.attribute_ranges(legacy_hzz)["lead_jet_pt"] == pytest.approx(
        (present.min(), present.max())
    )
    assert store.attribute_ranges(legacy_hzz)["lead_muon_charge"] == (-1, 1)
    assert store.count_missing(legacy_hzz, "lead_muon_pt", parse("n_jet >= 0")) == 59
    bottom = store.top(legacy_hzz, None, "lead_muon_charge", 2421)
    assert len(bottom) == 2421 - 59 and min(e.value for e in bottom) == -1
    # Where DuckDB answers from an attribute's sorted copy, the copy is read the same way.
    assert store.count(legacy_hzz, parse("lead_muon_pt < 20")) == 4


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])  # a catalog of their own
def test_a_catalog_from_before_missing_values_were_null_is_read_as_such(
    backend, tmp_path, hzz_schema, hzz_tags
):
    store = open_backend(backend, tmp_path)
    key = unique_key()
    with store.begin_build(key, hzz_schema) as builder:
        builder.load(GUID_A, as_published_before(part(hzz_tags, 0, 300)))
        builder.publish()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE tagdb_catalog DROP COLUMN missing"))
    store.dispose()
    reopened = TagStore(store.engine.url)
    try:
        assert not reopened.collection(key).missing_is_null  # the column is back, empty
        tree = parse("!(lead_muon_pt >= 20)")
        assert reopened.count(key, tree) == int(evaluate(tree, part(hzz_tags, 0, 300)).sum())
    finally:
        reopened.dispose()
