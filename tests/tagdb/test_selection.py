"""The selection language: parsing, checking, normal form, SQL and numpy evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, oracle, postgresql, sqlite

from dss.errors import InvalidInput
from tagdb.selection import (
    MAX_DEPTH,
    MAX_LENGTH,
    Binary,
    InList,
    Logical,
    Name,
    Number,
    SelectionError,
    Unary,
    check,
    evaluate,
    normalise,
    parse,
    to_sql,
    tree_to_json,
    truth,
)
from tests.tagdb.conftest import load_arrays, numpy_truth, sql_truth

ATTRS = {
    "n_muon": "int",
    "n_jet": "int",
    "met": "float",
    "lead_muon_eta": "float",
    "lead_jet_pt": "float",
    "trigger_isomu24": "bool",
    "run": "int",
    "lead_muon_charge": "int",
    "os_dimuon": "bool",
}


def error_of(text: str, attributes=ATTRS) -> SelectionError:
    with pytest.raises(SelectionError) as info:
        check(parse(text), attributes)
    return info.value


def test_it_parses_the_documented_examples():
    for text in [
        "n_muon >= 2 && (met > 40 || trigger_isomu24) && run in [1, 3..7]",
        "!trigger_isomu24",
        "abs(lead_muon_eta) < 2.4",
        "met > 2*lead_jet_pt",
        "n_muon >= 2 and not trigger_isomu24 or met > 1e2",
        "-met < -3.5 && hypot(met, lead_jet_pt) > sqrt(4) && max(met, 1, n_jet) != min(n_jet, 2)",
        "n_muon in [2] && n_jet not in [0..1, 5]",
        "true || false",
    ]:
        tree = check(parse(text), ATTRS)
        assert tree.type == "bool"


def test_it_builds_the_expected_tree():
    tree = parse("n_muon >= 2 && (met > 40 || trigger_isomu24) && run in [1, 3..7]")
    assert tree == Logical(
        "&&",
        (
            Binary(">=", Name("n_muon"), Number(2)),
            Logical("||", (Binary(">", Name("met"), Number(40)), Name("trigger_isomu24"))),
            InList(Name("run"), ((1, 1), (3, 7))),
        ),
    )


def test_not_binds_looser_than_comparisons():
    assert parse("!met > 3") == Unary("!", Binary(">", Name("met"), Number(3)))
    assert parse("not met > 3 and x") == parse("(!(met > 3)) && x")


def test_arithmetic_precedence_and_unary_minus():
    assert parse("a + b * c > 1") == parse("a + (b * c) > 1")
    assert parse("a - b - c > 1") == parse("(a - b) - c > 1")
    assert parse("x > -3") == Binary(">", Name("x"), Number(-3))


def test_keywords_are_case_insensitive():
    assert parse("met > 1 AND NOT trigger_isomu24 Or TRUE") == parse(
        "met > 1 && !trigger_isomu24 || true"
    )


def test_long_or_chains_stay_flat():
    text = " || ".join(f"run == {i}" for i in range(250))
    tree = check(parse(text), ATTRS)
    assert isinstance(tree, Logical) and len(tree.operands) == 250


@pytest.mark.parametrize(
    "text, column, message",
    [
        ("", 1, "empty selection"),
        ("   ", 1, "empty selection"),
        (
            "n_jet >1 && met_x > 40",
            13,
            "unknown attribute 'met_x' at column 13; did you mean 'met'?",
        ),
        ("(met > 40", 1, "unbalanced parenthesis"),
        ("met > 40)", 9, "unbalanced parenthesis"),
        ("abs(met > 40", 4, "unbalanced parenthesis"),
        ("met > && n_muon > 1", 7, "expected a number after '>'"),
        ("met >", 6, "expected a number after '>'"),
        ("met > 1 &&", 11, "expected a condition after '&&'"),
        ("met 40", 5, "unexpected '40'"),
        ("met = 40", 5, "did you mean '=='?"),
        ("met > 40 & n_muon > 1", 10, "did you mean '&&'?"),
        ("met > 40 $", 10, "unexpected character '$'"),
        ("1 < met < 3", 9, "comparisons cannot be chained"),
        ("run in 3", 8, "expected '['"),
        ("run in []", 8, "empty list"),
        ("run in [7..3]", 9, "empty range 7..3"),
        ("run in [a]", 9, "expected a number"),
        ("met && trigger_isomu24", 1, "'met' at column 1 is a number"),
        ("n_muon > true", 10, "'true' at column 10 is a condition"),
        ("trigger_isomu24 == 1", 20, "'1' at column 20 is a number"),
        ("!met", 2, "'met' at column 2 is a number"),
        ("met", 1, "must be a condition"),
        ("met + 1", 5, "must be a condition"),
        ("abs(met, 1) > 0", 1, "abs() takes 1 argument, got 2"),
        ("sqroot(met) > 0", 1, "unknown function 'sqroot' at column 1; did you mean 'sqrt'?"),
        ("MET > 40", 1, "did you mean 'met'?"),
        ("met not 3", 5, "did you mean 'not in'?"),
    ],
)
def test_errors_name_the_column(text, column, message):
    err = error_of(text)
    assert err.column == column, str(err)
    assert err.where == f"column {column}"
    assert message in err.message
    assert isinstance(err, InvalidInput)
    assert err.as_dict()["where"] == f"column {column}"


def test_it_limits_the_length():
    err = error_of("met > 1 || " * 400 + "met > 1")
    assert "too long" in err.message and f"{MAX_LENGTH:,}" in err.message


@pytest.mark.parametrize(
    "text",
    [
        "(" * 1900 + "met > 1" + ")" * 1900,
        "!" * 3000 + "trigger_isomu24",
        "-" * 3000 + "met > 1",
        "met" + " + met" * 600 + " > 1",
        "abs(" * 700 + "met" + ")" * 700 + " > 1",
    ],
)
def test_deep_nesting_is_a_selection_error_not_a_recursion_error(text):
    err = error_of(text)
    assert "nested too deeply" in err.message
    assert str(MAX_DEPTH) in err.message


def test_nesting_within_the_limit_is_fine():
    depth = MAX_DEPTH - 5
    check(parse("(" * depth + "met > 1" + ")" * depth), ATTRS)


def test_normal_form_ignores_spelling():
    a = parse("n_muon>=2 and (met>40 or trigger_isomu24) and run in [3..7,1]")
    b = parse("  (trigger_isomu24 || met > 40.0) && run in [1, 3..5, 4..7] &&  n_muon >= 2 ")
    assert normalise(a) == normalise(b)
    assert normalise(a) == "(met > 40 || trigger_isomu24) && n_muon >= 2 && run in [1, 3..7]"


def test_normal_form_keeps_meaningful_parentheses():
    for text in [
        "a - (b - c) > 1",
        "-(a + b) > c",
        "(a + b) * c > 1",
        "!(a > 1 && b)",
        "a / (b * c) > 1",
        "!(x in [1, 2])",
    ]:
        text_out = normalise(parse(text))
        assert parse(text_out) == parse(text), text_out


def test_normal_form_distinguishes_different_selections():
    assert normalise(parse("met > 40")) != normalise(parse("met >= 40"))
    assert normalise(parse("a - b > 1")) != normalise(parse("b - a > 1"))


def test_tree_to_json_is_serialisable():
    tree = parse("n_muon >= 2 && !(abs(met) > 1.5) && run in [1, 3..7]")
    data = tree_to_json(tree)
    assert json.loads(json.dumps(data)) == data
    assert data["op"] == "&&"
    assert {"op": "in", "args": [{"attribute": "run"}], "ranges": [[1, 1], [3, 7]]} in data["args"]


def sql_columns():
    types = {"int": sa.BigInteger, "float": sa.Double, "bool": sa.Boolean}
    return {name: sa.Column(name, types[t]()) for name, t in ATTRS.items()}


@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), postgresql.dialect(), mysql.dialect(), oracle.dialect()]
)
def test_to_sql_binds_every_literal(dialect):
    tree = check(
        parse("n_muon >= 929 && (met > 41.5 || trigger_isomu24) && run in [1717, 313..717]"),
        ATTRS,
    )
    compiled = to_sql(tree, sql_columns()).compile(dialect=dialect)
    text = str(compiled)
    for literal in ("41.5", "1717", "313", "717", "929"):
        assert literal not in text
    assert sorted(compiled.params.values()) == [41.5, 313, 717, 929, 1717]


def test_to_sql_needs_a_checked_tree():
    with pytest.raises(TypeError):
        to_sql(parse("met > 1"), sql_columns())


def test_evaluate_on_flat_arrays():
    arrays = {
        "met": np.array([10.0, 50.0, np.nan, 100.0]),
        "n_muon": np.array([0, 2, 3, 1]),
        "trigger_isomu24": np.array([True, False, True, False]),
    }
    assert evaluate(parse("met > 40"), arrays).tolist() == [False, True, False, True]
    # A comparison with a missing value is unknown, and so is its negation.
    assert evaluate(parse("!(met > 40)"), arrays).tolist() == [True, False, False, False]
    assert evaluate(parse("n_muon in [0, 2..3]"), arrays).tolist() == [True, True, True, False]
    assert evaluate(parse("met / (2 - n_muon) > 0"), arrays).tolist() == [True, False, False, True]
    assert evaluate(parse("!(met / (2 - n_muon) > 0)"), arrays).tolist() == [False] * 4
    assert evaluate(parse("true"), arrays).tolist() == [True] * 4
    assert evaluate(parse("trigger_isomu24 == (met > 40)"), arrays).tolist() == [False] * 4
    assert evaluate(parse("trigger_isomu24 != (met > 20)"), arrays).tolist() == [
        True,
        True,
        False,
        True,
    ]


def truth_of(text: str, arrays: dict) -> list:
    """Three-valued answers as a list: True, False, or None for unknown."""
    return truth(parse(text), arrays).tolist()


def test_three_valued_logic():
    # x is missing in the middle event: every answer there follows Kleene's tables.
    arrays = {"x": np.array([1.0, np.nan, 5.0]), "n": np.array([0, 0, 0])}
    assert truth_of("x > 2", arrays) == [False, None, True]
    assert truth_of("!(x > 2)", arrays) == [True, None, False]
    assert truth_of("x > 2 && n == 1", arrays) == [False, False, False]
    assert truth_of("x > 2 && n == 0", arrays) == [False, None, True]
    assert truth_of("x > 2 || n == 0", arrays) == [True, True, True]
    assert truth_of("x > 2 || n == 1", arrays) == [False, None, True]
    assert truth_of("x in [1, 4..6]", arrays) == [True, None, True]
    assert truth_of("x not in [1, 4..6]", arrays) == [False, None, False]
    assert truth_of("(x > 2) == (n == 0)", arrays) == [False, None, True]
    assert truth_of("(x > 2) == true", arrays) == [False, None, True]
    assert truth_of("x == x", arrays) == [True, None, True]
    # Arithmetic and functions of a missing value are missing.
    assert truth_of("x + 1 > 0", arrays) == [True, None, True]
    assert truth_of("min(x, 3) < 10", arrays) == [True, None, True]
    assert truth_of("max(n, x) > -1", arrays) == [True, None, True]
    assert truth_of("hypot(x, 3) > 0", arrays) == [True, None, True]
    assert truth_of("x / n > 0", arrays) == [None, None, None]  # x/0
    assert truth_of("sqrt(x - 2) >= 0", arrays) == [None, None, True]  # sqrt(-1)
    # has() and missing() are never unknown.
    assert truth_of("has(x)", arrays) == [True, False, True]
    assert truth_of("missing(x)", arrays) == [False, True, False]
    assert truth_of("missing(x) || x < 2", arrays) == [True, True, False]
    assert truth_of("!has(x)", arrays) == [False, True, False]


def test_masked_arrays_mark_missing_values_of_any_type():
    arrays = {
        "charge": np.ma.array([1, -1, 0], mask=[False, False, True]),
        "flag": np.ma.array([True, False, True], mask=[False, True, False]),
    }
    assert truth_of("charge > 0", arrays) == [True, False, None]
    assert truth_of("flag", arrays) == [True, None, True]
    assert truth_of("!flag", arrays) == [False, None, False]
    assert truth_of("missing(charge) || flag", arrays) == [True, None, True]
    assert evaluate(parse("charge != 1"), arrays).tolist() == [False, True, False]


@pytest.mark.parametrize(
    "text, column, message",
    [
        ("has(met + 1)", 5, "has() takes an attribute name, e.g. has(lead_muon_pt)"),
        ("missing(3)", 9, "'3' at column 9 is not one"),
        ("has(mett)", 5, "unknown attribute 'mett' at column 5; did you mean 'met'?"),
        ("has(met, n_jet)", 1, "has() takes 1 argument, got 2"),
        ("has(met) > 1", 1, "'has(…)' at column 1 is a condition"),
    ],
)
def test_has_and_missing_take_one_attribute_name(text, column, message):
    err = error_of(text)
    assert err.column == column, str(err)
    assert message in err.message


def test_normal_form_of_has_and_missing():
    assert normalise(parse("!has(met)")) == normalise(parse("missing(met)")) == "missing(met)"
    assert normalise(parse("not missing(met)")) == "has(met)"
    assert normalise(parse("!(has(met))  &&  met > 3")) == "met > 3 && missing(met)"


def test_evaluate_checks_names_against_the_arrays():
    with pytest.raises(SelectionError, match="unknown attribute 'mett'.*did you mean 'met'"):
        evaluate(parse("mett > 1"), {"met": np.zeros(3)})


def test_plain_comparisons_compile_to_plain_sql():
    # Indexes and DuckDB's block skipping need the bare column on one side.
    tree = check(parse("met > 40 && !(n_muon in [2, 4..5])"), ATTRS)
    sql = str(to_sql(tree, sql_columns()).compile(dialect=postgresql.dialect()))
    assert "CASE" not in sql and "IS NOT NULL" not in sql
    assert "met >" in sql and "NOT" in sql


def test_min_max_compile_so_that_a_missing_argument_is_unknown():
    # PostgreSQL and DuckDB skip NULL arguments of LEAST/GREATEST; a guard makes the
    # comparison unknown there, as on MySQL and SQLite.
    tree = check(parse("min(met, lead_jet_pt) > 30"), ATTRS)
    sql = str(to_sql(tree, sql_columns()).compile(dialect=postgresql.dialect()))
    assert "CASE WHEN" in sql and "IS NOT NULL" in sql


# The database and numpy must agree row by row on true, false and unknown, including
# missing values, negation, division by zero and negative square roots.
AGREEMENT = [
    "met > 40",
    "!(met > 40)",
    "!(met > 40 || trigger_isomu24)",
    "!(met > 40 && trigger_isomu24)",
    "(met > 40) == trigger_isomu24",
    "(met > 40) != (n_jet > 1)",
    "trigger_isomu24 == true",
    "false != (lead_jet_pt < 20)",
    "met / n_jet > 20",
    "!(met / n_jet > 20)",
    "!(sqrt(met - 50) > 2)",
    "sqrt(met - 50) > 2",
    "min(met, lead_jet_pt) > 30",
    "!(max(met, lead_jet_pt) > 60)",
    "max(min(met, 50), lead_jet_pt, n_jet) < 45",
    "hypot(met, lead_jet_pt) < 70 && n_muon / 2 >= 1",
    "run in [1, 3..5] || !(run in [2..4])",
    "lead_muon_eta in [-1..1]",
    "abs(lead_muon_eta) < 1.2 && -met < -10",
    "n_muon * n_jet - 1 >= 2 || n_muon + n_jet == 3",
    "has(met) && !missing(lead_jet_pt)",
    "missing(met) || met > 80",
    "lead_muon_charge > 0",
    "!(lead_muon_charge == -1) && n_muon >= 1",
    "os_dimuon || met > 90",
    "!os_dimuon",
    "os_dimuon != trigger_isomu24",
]


def agreement_arrays() -> dict:
    rng = np.random.default_rng(7)
    n = 400

    def missing(values, fraction=0.1):
        return np.ma.array(values, mask=rng.random(n) < fraction)

    data = {
        "met": rng.uniform(0, 100, n),
        "lead_jet_pt": rng.uniform(0, 80, n),
        "lead_muon_eta": rng.uniform(-3, 3, n),
        "n_muon": rng.integers(0, 4, n),
        "n_jet": rng.integers(0, 3, n),
        "trigger_isomu24": rng.random(n) < 0.5,
        "run": rng.integers(0, 7, n),
        "lead_muon_charge": missing(rng.choice([-1, 1], n)),
        "os_dimuon": missing(rng.random(n) < 0.5, 0.2),
    }
    for name in ("met", "lead_jet_pt", "lead_muon_eta"):
        data[name][rng.random(n) < 0.1] = np.nan
    return data


@pytest.fixture(scope="module")
def agreement(store):
    arrays = agreement_arrays()
    key = load_arrays(store, arrays)
    yield store, key, arrays
    store.drop(key)


@pytest.mark.parametrize("text", AGREEMENT)
def test_sql_and_numpy_agree(agreement, text):
    store, key, arrays = agreement
    tree = check(parse(text), store.attribute_types(key))
    assert sql_truth(store, key, tree) == numpy_truth(tree, arrays)
