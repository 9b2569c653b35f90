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
)

ATTRS = {
    "n_muon": "int",
    "n_jet": "int",
    "met": "float",
    "lead_muon_eta": "float",
    "lead_jet_pt": "float",
    "trigger_isomu24": "bool",
    "run": "int",
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
    return {
        name: sa.Column(name, types[t](), nullable=t == "float" or name == "run")
        for name, t in ATTRS.items()
    }


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
    # A missing value fails every comparison, so its negation passes.
    assert evaluate(parse("!(met > 40)"), arrays).tolist() == [True, False, True, False]
    assert evaluate(parse("n_muon in [0, 2..3]"), arrays).tolist() == [True, True, True, False]
    assert evaluate(parse("met / (2 - n_muon) > 0"), arrays).tolist() == [True, False, False, True]
    assert evaluate(parse("true"), arrays).tolist() == [True] * 4
    assert evaluate(parse("trigger_isomu24 == (met > 40)"), arrays).tolist() == [False] * 4
    assert evaluate(parse("trigger_isomu24 != (met > 20)"), arrays).tolist() == [True] * 4


def test_evaluate_checks_names_against_the_arrays():
    with pytest.raises(SelectionError, match="unknown attribute 'mett'.*did you mean 'met'"):
        evaluate(parse("mett > 1"), {"met": np.zeros(3)})


# The database and numpy must agree row by row, including missing values, negation,
# division by zero and negative square roots.
AGREEMENT = [
    "met > 40",
    "!(met > 40)",
    "!(met > 40 || trigger_isomu24)",
    "!(met > 40 && trigger_isomu24)",
    "(met > 40) == trigger_isomu24",
    "(met > 40) != (n_jet > 1)",
    "met / n_jet > 20",
    "!(met / n_jet > 20)",
    "!(sqrt(met - 50) > 2)",
    "sqrt(met - 50) > 2",
    "min(met, lead_jet_pt) > 30",
    "!(max(met, lead_jet_pt) > 60)",
    "hypot(met, lead_jet_pt) < 70 && n_muon / 2 >= 1",
    "run in [1, 3..5] || !(run in [2..4])",
    "abs(lead_muon_eta) < 1.2 && -met < -10",
    "n_muon * n_jet - 1 >= 2 || n_muon + n_jet == 3",
]


@pytest.fixture(scope="module")
def agreement_table():
    rng = np.random.default_rng(7)
    n = 400
    data = {
        "met": rng.uniform(0, 100, n),
        "lead_jet_pt": rng.uniform(0, 80, n),
        "lead_muon_eta": rng.uniform(-3, 3, n),
        "n_muon": rng.integers(0, 4, n),
        "n_jet": rng.integers(0, 3, n),
        "trigger_isomu24": rng.random(n) < 0.5,
        "run": rng.integers(0, 7, n),
    }
    for name in ("met", "lead_jet_pt", "lead_muon_eta"):
        data[name][rng.random(n) < 0.1] = np.nan
    engine = sa.create_engine("sqlite://")
    cols = sql_columns()
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("i", sa.Integer, primary_key=True), *cols.values()
    )
    table.create(engine)
    rows = [
        {
            "i": i,
            **{
                k: (None if isinstance(v[i], float) and np.isnan(v[i]) else v[i].item())
                for k, v in data.items()
            },
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return engine, table, data


@pytest.mark.parametrize("text", AGREEMENT)
def test_sql_and_numpy_agree(agreement_table, text):
    engine, table, data = agreement_table
    tree = check(parse(text), ATTRS)
    with engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(table.c.i)
                .where(to_sql(tree, {k: table.c[k] for k in ATTRS}))
                .order_by(table.c.i)
            )
            .scalars()
            .all()
        )
    assert ids == np.flatnonzero(evaluate(tree, data)).tolist()
