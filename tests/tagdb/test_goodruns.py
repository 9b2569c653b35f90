"""Good-run lists: reading ATLAS XML and CMS JSON, applying them in numpy, and applying
them in the TAG DB as data (a range table), on DuckDB, SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
import uproot

from dss.errors import InvalidInput
from tagdb.goodruns import GoodRunList, missing_runs_warning, parse_good_run_list
from tagdb.schema import compute_tags, load_schema
from tagdb.selection import evaluate, parse
from tests.tagdb import goodruns_data as data
from tests.tagdb.conftest import unique_key

GUID = "5b1f9c2e-3333-4d6e-8f00-112233445566"

SCHEMA = """
name: lumitest
version: 1
tree: events
run: Run
lumi: LumiBlock
event: Event
attributes:
  - {name: pt, type: float, expression: pt, index: true}
  - {name: eta, type: float, expression: eta}
"""
# The same events without luminosity blocks: a list keeps its runs whole there.
SCHEMA_NO_LUMI = SCHEMA.replace("name: lumitest", "name: runonly").replace("lumi: LumiBlock\n", "")


@pytest.fixture(scope="module")
def grl() -> GoodRunList:
    return parse_good_run_list(data.atlas_xml())


# --------------------------------------------------------------------------- reading


def test_atlas_xml_and_cms_json_give_the_same_list():
    atlas = parse_good_run_list(data.atlas_xml())
    cms = parse_good_run_list(data.cms_json())
    assert atlas.format == "ATLAS XML" and cms.format == "JSON"
    assert atlas.name == "data99_13TeV.test_All_Good"
    assert atlas.n_runs == cms.n_runs == 500 and atlas.n_ranges == cms.n_ranges == 10_000
    assert atlas.runs == cms.runs and atlas.fingerprint == cms.fingerprint
    assert atlas.runs[200_201] == tuple(
        (lo + 1, lo + 7) for lo in range(1, 401, 20)
    )  # shifted by run % 5
    assert atlas.describe() == "500 runs, 10,000 luminosity-block ranges"
    assert parse_good_run_list(data.cms_json().encode()).runs == cms.runs  # bytes too
    assert parse_good_run_list(json.loads(data.cms_json())).runs == cms.runs  # and objects


def test_ranges_are_merged_and_runs_named_twice_are_joined():
    grl = parse_good_run_list(
        "<LumiRangeCollection><NamedLumiRange><LumiBlockCollection><Run>5</Run>"
        '<LBRange Start="10" End="20"/><LBRange Start="1" End="3"/></LumiBlockCollection>'
        "</NamedLumiRange><NamedLumiRange><LumiBlockCollection><Run>5</Run>"
        '<LBRange Start="4" End="12"/></LumiBlockCollection></NamedLumiRange>'
        "</LumiRangeCollection>"
    )
    assert grl.runs == {5: ((1, 20),)}
    assert parse_good_run_list('{"7": [[5, 9], [1, 2], [8, 12]]}').runs == {7: ((1, 2), (5, 12))}


def test_the_mask_keeps_what_the_list_certifies(grl):
    events = data.lumi_events()
    run, lumi = events["Run"], events["LumiBlock"]
    assert grl.mask(run, lumi).tolist() == data.expected_mask(run, lumi).tolist()
    assert grl.mask(run).tolist() == data.expected_mask(run, None).tolist()  # runs whole
    assert 0 < grl.mask(run, lumi).sum() < grl.mask(run).sum() < len(run)


@pytest.mark.parametrize(
    "text, where, message",
    [
        (
            "<LumiRangeCollection>\n<NamedLumiRange>\n</LumiRangeCollection>",
            "line 3",
            "mismatched tag",
        ),
        (
            "<LumiRangeCollection>\n<LumiBlockCollection><Run>12</Run>\n"
            '<LBRange Start="9" End="3"/>\n</LumiBlockCollection></LumiRangeCollection>',
            "line 3",
            'run 12: <LBRange Start="9" End="3"> ends before it starts',
        ),
        (
            "<LumiRangeCollection>\n<LumiBlockCollection><Run>12</Run>\n"
            '<LBRange Start="9"/>\n</LumiBlockCollection></LumiRangeCollection>',
            "line 3",
            "run 12: <LBRange> has no End attribute",
        ),
        (
            "<LumiRangeCollection>\n<LumiBlockCollection>\n<Run>twelve</Run>\n"
            "</LumiBlockCollection></LumiRangeCollection>",
            "line 3",
            "run number 'twelve' is not a whole number",
        ),
        (
            "<LumiRangeCollection>\n<LumiBlockCollection>\n<Run>12</Run>\n"
            "</LumiBlockCollection></LumiRangeCollection>",
            "line 2",
            "run 12 has no <LBRange>",
        ),
        ("<Runs><Run>1</Run></Runs>", "line 1", "starts with <LumiRangeCollection>"),
        (
            '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n<LumiRangeCollection/>',
            "line 2",
            "entities",
        ),
        ('{\n"12": [[1, 2]],\n"13": [[9, 3]]\n}', "line 3", "run 13: block [9, 3] ends before"),
        ('{\n"12": [[1, 2, 3]]\n}', "line 2", "run 12: block [1, 2, 3] is not a pair"),
        ('{\n"12a": [[1, 2]]\n}', "line 2", "run number '12a' is not a whole number"),
        ('{"12": "all"}', "line 1", "run 12: expected a list"),
        ('{\n"12": [[1, 2]],\n}', "line 3", "not valid JSON"),
        ("run 12: 1-5", "line 1", "ATLAS XML (<LumiRangeCollection>…) or JSON"),
        ("{}", "good-run list", "names no runs"),
        ("  \n", "good-run list", "empty"),
        (b"\xff\xfe<x/>", "good-run list", "not UTF-8"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_line_or_run(text, where, message):
    with pytest.raises(InvalidInput) as info:
        parse_good_run_list(text)
    assert info.value.where == where
    assert message in info.value.message


def test_the_warning_names_the_missing_runs():
    assert (
        missing_runs_warning([3, 1, 2]) == "3 runs of the GRL are not in this collection: 1, 2, 3"
    )
    assert missing_runs_warning([9], "demo.x") == "1 run of the GRL is not in demo.x: 9"
    many = missing_runs_warning(range(100, 130))
    assert many.startswith("30 runs of the GRL are not in this collection: 100, 101")
    assert many.endswith("119 and 10 more")


# --------------------------------------------------------------------------- in the TAG DB


@pytest.fixture(scope="module")
def lumi_tags(tmp_path_factory):
    path = data.write_lumi_file(tmp_path_factory.mktemp("lumi") / "lumi.root")
    with uproot.open(path) as f:
        tree = f["events"]
        return (
            compute_tags(load_schema(SCHEMA), tree),
            compute_tags(load_schema(SCHEMA_NO_LUMI), tree),
        )


@pytest.fixture(scope="module")
def lumi_keys(store, lumi_tags):
    """The events as two collections in ``store``: with and without luminosity blocks."""
    keys = []
    for definition, tags in zip((SCHEMA, SCHEMA_NO_LUMI), lumi_tags, strict=True):
        key = unique_key("g")
        with store.begin_build(key, load_schema(definition)) as builder:
            builder.load(GUID, tags)
            builder.publish()
        keys.append(key)
    yield keys
    for key in keys:
        store.drop(key)


@pytest.mark.parametrize("source", ["atlas", "cms"])
@pytest.mark.parametrize("text", ["", "pt > 20", "pt > 20 && abs(eta) < 1"])
def test_counts_within_a_list_agree_with_numpy(store, lumi_keys, lumi_tags, source, text):
    grl = parse_good_run_list(data.atlas_xml() if source == "atlas" else data.cms_json())
    tags = lumi_tags[0]
    tree = parse(text) if text else None
    passing = evaluate(tree, tags) if tree is not None else np.ones(data.N_EVENTS, bool)
    expected = passing & data.expected_mask(tags["run"], tags["lumi"])
    assert store.count(lumi_keys[0], tree, good_runs=grl) == int(expected.sum())
    whole_runs = passing & data.expected_mask(tags["run"], None)
    assert store.count(lumi_keys[1], tree, good_runs=grl) == int(whole_runs.sum())


def test_every_query_applies_the_list(store, lumi_keys, lumi_tags, grl):
    key, tags = lumi_keys[0], lumi_tags[0]
    tree = parse("pt > 10")
    keep = evaluate(tree, tags) & grl.mask(tags["run"], tags["lumi"])
    hist = store.histogram(key, "pt", tree, bins=20, lo=0, hi=200, good_runs=grl)
    expected, _ = np.histogram(tags["pt"][keep], bins=20, range=(0, 200))
    assert hist.counts.tolist() == expected.tolist() and hist.total == int(keep.sum())
    automatic = store.histogram(key, "pt", tree, good_runs=grl)
    assert automatic.total == int(keep.sum())
    events = store.events(key, tree, limit=data.N_EVENTS, good_runs=grl)
    assert [e.entry for e in events] == np.flatnonzero(keep).tolist()
    by_file = store.entries_by_file(key, tree, good_runs=grl)
    assert by_file[GUID].tolist() == np.flatnonzero(keep).tolist()
    assert store.files_touched(key, tree, good_runs=grl) == (1, 1)
    top = store.top(key, tree, "pt", 5, good_runs=grl)
    assert [e.value for e in top] == sorted(tags["pt"][keep].tolist(), reverse=True)[:5]


def test_the_runs_the_collection_lacks_are_found(store, lumi_keys, lumi_tags, grl):
    expected = data.missing_runs(lumi_tags[0]["run"])
    assert len(expected) >= 300
    assert store.missing_runs(lumi_keys[0], grl) == expected
    assert store.missing_runs(lumi_keys[1], grl) == expected


def test_the_list_is_data_not_sql_text(store, lumi_keys, grl):
    """However long the list, the query is the same short statement with the same few
    parameters: the ranges are rows the query joins, not text in it."""
    small = GoodRunList({200_250: ((1, 400),)})
    statements: list[tuple[str, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().upper().startswith("SELECT"):
            n = len(parameters) if isinstance(parameters, list | tuple | dict) else 0
            statements.append((statement, n))

    sa.event.listen(store.rows_engine, "before_cursor_execute", record)
    try:
        store.count(lumi_keys[0], parse("pt > 20"), good_runs=grl)
        long_count = max(statements, key=lambda s: len(s[0]))
        statements.clear()
        store.count(lumi_keys[0], parse("pt > 20"), good_runs=small)
        short_count = max(statements, key=lambda s: len(s[0]))
    finally:
        sa.event.remove(store.rows_engine, "before_cursor_execute", record)
    assert len(long_count[0]) == len(short_count[0]) < 1000
    assert long_count[1] == short_count[1] <= 5


def test_a_list_of_a_collection_without_run_numbers_is_refused(store, lumi_keys, grl):
    schema = load_schema(
        "name: norun\nversion: 1\ntree: events\nattributes:\n"
        "  - {name: pt, type: float, expression: pt}\n"
    )
    key = unique_key("n")
    with store.begin_build(key, schema) as builder:
        builder.load(GUID, {"pt": np.array([1.0, 2.0])})
        builder.publish()
    try:
        with pytest.raises(InvalidInput, match="no run numbers") as info:
            store.count(key, None, good_runs=grl)
        assert info.value.where == "good-run list"
    finally:
        store.drop(key)


def test_a_list_is_stored_once_and_forgotten_when_unused(store, lumi_keys, lumi_tags):
    from datetime import UTC, datetime, timedelta

    from tagdb.store import GRL_KEEP

    old = GoodRunList({200_250: ((1, 100),), 200_251: ((5, 6),)})
    # A list no earlier run stored on a shared server, so that storing it forgets others.
    new = GoodRunList({200_252: ((1, 400),), 10**9 + uuid.uuid4().int % 10**9: ((1, 1),)})
    ranges, lists = store.grl_ranges, store.grl_lists
    count = store.count(lumi_keys[0], None, good_runs=old)
    store.count(lumi_keys[0], None, good_runs=old)  # the same list: no second copy
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(ranges.c.run).where(ranges.c.grl == old.fingerprint))
        assert sorted(rows.scalars()) == [200_250, 200_251]
    with store.engine.begin() as conn:
        long_ago = datetime.now(UTC).replace(tzinfo=None) - GRL_KEEP - timedelta(hours=1)
        conn.execute(
            sa.update(lists).where(lists.c.grl == old.fingerprint).values(used_at=long_ago)
        )
    store._grl_seen.clear()  # as in another process, which has not used the list lately
    store.count(lumi_keys[0], None, good_runs=new)
    with store.engine.connect() as conn:
        left = set(conn.execute(sa.select(lists.c.grl)).scalars())
        assert old.fingerprint not in left and new.fingerprint in left
        gone = conn.execute(sa.select(ranges.c.run).where(ranges.c.grl == old.fingerprint))
        assert gone.first() is None
    assert store.count(lumi_keys[0], None, good_runs=old) == count  # stored again when used


@pytest.mark.parametrize("with_list", [False, True])
def test_the_lumiblocks_of_a_selection_agree_with_numpy(
    store, lumi_keys, lumi_tags, grl, with_list
):
    """The (run, lumiblock) pairs that luminosity is summed over, on every backend."""
    key, tags = lumi_keys[0], lumi_tags[0]
    tree = parse("pt > 20")
    keep = evaluate(tree, tags)
    if with_list:
        keep &= grl.mask(tags["run"], tags["lumi"])
    pairs, counts = np.unique(
        np.stack([tags["run"][keep], tags["lumi"][keep]], axis=1), axis=0, return_counts=True
    )
    expected = {(int(r), int(lb)): int(n) for (r, lb), n in zip(pairs, counts, strict=True)}
    got = store.lumiblocks(key, tree, good_runs=grl if with_list else None)
    assert {(r, lb): n for r, lb, n in got} == expected
    assert sum(n for _, _, n in got) == int(keep.sum())
    with pytest.raises(InvalidInput, match="no luminosity-block numbers"):
        store.lumiblocks(lumi_keys[1], tree)
