"""Run and event numbers are unsigned 64-bit: stored, compared, listed and picked exactly on
every backend, up to 2^64 - 1."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import uproot

from dss.errors import InvalidInput
from tagdb.schema import SchemaError, auto_schema, compute_tags
from tagdb.selection import check, evaluate, parse

TOP = 2**64 - 1
HALF = 2**63
# Event numbers on both sides of 2^63 and up to 2^64 - 1, with runs that are small.
EVENTS = np.array(
    [0, 1, 12345, HALF - 2, HALF - 1, HALF, HALF + 1, TOP - 2, TOP - 1, TOP, 2**40, 7],
    dtype=np.uint64,
)
RUNS = np.array([7, 7, 7, 8, 8, 8, 9, 9, 9, 9, 10, 10], dtype=np.uint64)
GUID = str(uuid.UUID(int=42))


@pytest.fixture(scope="module")
def numbered_file(tmp_path_factory):
    """A TTree whose EventNumber is uint64 (written with uproot), with a run and a value."""
    path = tmp_path_factory.mktemp("numbers") / "numbers.root"
    with uproot.recreate(path) as f:
        tree = f.mktree(
            "events", {"RunNumber": np.uint64, "EventNumber": np.uint64, "x": np.float64}
        )
        tree.extend({"RunNumber": RUNS, "EventNumber": EVENTS, "x": np.arange(len(EVENTS)) * 1.5})
    return path


@pytest.fixture(scope="module")
def numbered(numbered_file):
    with uproot.open(numbered_file) as f:
        tree = f["events"]
        schema = auto_schema(tree, name="numbered")
        return schema, compute_tags(schema, tree)


@pytest.fixture
def key(store, new_key, numbered):
    schema, tags = numbered
    with store.begin_build(new_key, schema) as builder:
        builder.load(GUID, tags)
        builder.publish()
    return new_key


def test_the_automatic_schema_takes_uint64_numbers_as_they_are(numbered):
    schema, tags = numbered
    assert schema.numbering() == {"run": "RunNumber", "event": "EventNumber"}
    assert tags["event"].dtype == np.uint64 and tags["event"].tolist() == EVENTS.tolist()


@pytest.mark.parametrize(
    "selection",
    [
        "event == 18446744073709551615",
        "18446744073709551615 == event",
        "event > 9223372036854775807",
        "9223372036854775807 < event",
        "event >= 9223372036854775808",
        "event < 9223372036854775808",
        "event <= 9223372036854775807",
        "event != 18446744073709551615",
        "event < 18446744073709551614",
        "event > 12345 && event < 18446744073709551614",
        "!(event > 9223372036854775807)",
        "event in [18446744073709551615, 0, 9223372036854775807..9223372036854775809]",
        "event in [1..12345, 18446744073709551613..18446744073709551615] && run == 9",
        "event > -1",
        "event < -1",
        "event == -5",
        "event > 1.5",
        "event + 1 > 9223372036854775807",
        "run == 8 && event == 9223372036854775808",
        "run in [9, 10] and x > 10",
    ],
)
def test_selections_on_event_numbers_count_exactly(store, key, numbered, selection):
    _, tags = numbered
    types = store.attribute_types(key)
    expected = int(evaluate(parse(selection), tags).sum())
    assert store.count(key, check(parse(selection), types)) == expected


@pytest.mark.parametrize(
    "selection, count",
    [
        ("abs(event - 18446744073709551614) < 1", 1),
        ("event - run > 18446744073709551600", 3),
        ("max(event, 18446744073709551614) == 18446744073709551614", 11),
        ("-event < -18446744073709551613", 2),
    ],
)
def test_arithmetic_on_event_numbers_is_exact_on_the_servers_and_duckdb(
    store, key, numbered, selection, count
):
    if store.dialect == "sqlite":
        pytest.skip("SQLite computes with numbers beyond 2^63 in doubles, as documented")
    _, tags = numbered
    assert int(evaluate(parse(selection), tags).sum()) == count
    assert store.count(key, check(parse(selection), store.attribute_types(key))) == count


def test_the_expected_counts_are_the_true_ones(numbered):
    _, tags = numbered
    assert evaluate(parse("event == 18446744073709551615"), tags).sum() == 1
    assert evaluate(parse("event > 9223372036854775807"), tags).sum() == 5
    assert evaluate(parse("event <= 9223372036854775807"), tags).sum() == 7
    assert evaluate(parse("event + 1 > 9223372036854775807"), tags).sum() == 6


def test_events_pick_top_and_ranges_show_the_numbers_unsigned(store, key):
    types = store.attribute_types(key)
    rows = store.events(key, check(parse("event > 9223372036854775807"), types))
    assert [(r.run, r.event) for r in rows] == [
        (8, HALF),
        (9, HALF + 1),
        (9, TOP - 2),
        (9, TOP - 1),
        (9, TOP),
    ]
    assert all(type(r.event) is int for r in rows)
    picked = store.pick_events([key], [(9, TOP), (8, HALF), (8, HALF - 1), (9, 5)])
    assert sorted((p.run, p.event, p.entry) for p in picked.found) == [
        (8, HALF - 1, 4),
        (8, HALF, 5),
        (9, TOP, 9),
    ]
    assert picked.missing == [(9, 5)]
    top = store.top(key, None, "event", 3)
    assert [r.event for r in top] == [TOP, TOP - 1, TOP - 2]
    ranges = store.attribute_ranges(key)
    assert ranges["event"] == (0, TOP) and ranges["run"] == (7, 10)


def test_pairs_out_of_the_unsigned_range_are_refused(store, key):
    with pytest.raises(InvalidInput, match="event 18446744073709551616 is not a run or event"):
        store.pick_events([key], [(1, 2**64)])
    with pytest.raises(InvalidInput, match="run -1 is not a run or event number"):
        store.pick_events([key], [(-1, 5)])


def test_a_negative_event_number_is_refused_naming_the_entry(tmp_path):
    path = tmp_path / "signed.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {"Event": np.int64, "x": np.float64})
        tree.extend({"Event": np.array([5, -3, 7]), "x": np.zeros(3)})
    with uproot.open(path) as f:
        schema = auto_schema(f["events"])
        with pytest.raises(SchemaError, match=r"branch 'Event' is -3 at entry 1; .* unsigned"):
            compute_tags(schema, f["events"])


def test_a_uint64_attribute_beyond_int64_is_refused_not_wrapped(tmp_path):
    path = tmp_path / "bits.root"
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {"TriggerBits": np.uint64})
        tree.extend({"TriggerBits": np.array([1, TOP], dtype=np.uint64)})
    with uproot.open(path) as f:
        schema = auto_schema(f["events"])
        with pytest.raises(SchemaError, match="'triggerbits' is 18446744073709551615 at entry 1"):
            compute_tags(schema, f["events"])
