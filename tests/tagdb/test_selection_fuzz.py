"""Random input never breaks the selection language: only SelectionError comes out;
selections that do parse keep their meaning through the normal form; and every TAG DB
backend gives the answer numpy gives, missing values and three-valued logic included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagdb.selection import SelectionError, check, normalise, parse, truth
from tests.tagdb.conftest import load_arrays, numpy_truth, sql_truth

# The grammar strategies below have long reprs; hypothesis warns about them, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

ATTRS = {"n_muon": "int", "met": "float", "trigger_isomu24": "bool", "run": "int"}

TOKENS = [
    "n_muon", "met", "trigger_isomu24", "run", "mett", "abs", "sqrt", "min", "max", "hypot",
    "foo", "(", ")", "[", "]", ",", "..", "&&", "||", "!", "and", "or", "not", "in", "true",
    "false", "<", "<=", ">", ">=", "==", "!=", "=", "&", "|", "+", "-", "*", "/", "0", "1",
    "2.5", "1e3", "1e999", "99999999999999999999", ".5", "3..7", "$", "\n", " ",
]  # fmt: skip


def parse_and_check(text: str) -> None:
    try:
        check(parse(text), ATTRS)
    except SelectionError as exc:
        assert exc.column >= 1
        assert exc.where == f"column {exc.column}"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_raises_selection_error(text):
    parse_and_check(text)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup_only_raises_selection_error(text):
    parse_and_check(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["(", "!", "-", "abs(", "met+"]))
def test_deep_input_only_raises_selection_error(depth, opener):
    parse_and_check(opener * depth + "met > 1")


# Well-formed selections, built from a small grammar, over attributes where some events
# have no value: a float with NaN, an int and a bool with masked entries.
numbers = st.one_of(
    st.integers(min_value=-50, max_value=200).map(str),
    st.floats(min_value=-50, max_value=200, allow_nan=False).map(lambda x: f"{x:.3f}"),
)
numeric_atoms = st.one_of(numbers, st.sampled_from(["n_muon", "met", "run", "charge"]))
numeric = st.recursive(
    numeric_atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"abs({x})"),
        inner.map(lambda x: f"sqrt({x})"),
        st.tuples(inner, inner).map(lambda t: f"hypot({t[0]}, {t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        inner.map(lambda x: f"-{x}"),
    ),
    max_leaves=6,
)
comparisons = st.one_of(
    st.tuples(numeric, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numeric).map(" ".join),
    st.sampled_from(
        [
            "trigger_isomu24",
            "os_dimuon",
            "true",
            "false",
            "run in [1, 3..5]",
            "n_muon in [2]",
            "met in [20..60, 80]",
            "charge not in [-1]",
            "has(met)",
            "missing(charge)",
            "has(os_dimuon)",
        ]
    ),
)
conditions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||", "and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"!({x})"),
        inner.map(lambda x: f"not ({x})"),
        st.tuples(inner, st.sampled_from(["==", "!="]), inner).map(
            lambda t: f"({t[0]}) {t[1]} ({t[2]})"
        ),
    ),
    max_leaves=8,
)

RNG = np.random.default_rng(3)
N = 200
ARRAYS = {
    "n_muon": RNG.integers(0, 5, N),
    "met": np.where(RNG.random(N) < 0.15, np.nan, RNG.uniform(0, 150, N)),
    "trigger_isomu24": RNG.random(N) < 0.5,
    "run": RNG.integers(0, 8, N),
    "charge": np.ma.array(RNG.choice([-1, 1], N), mask=RNG.random(N) < 0.2),
    "os_dimuon": np.ma.array(RNG.random(N) < 0.5, mask=RNG.random(N) < 0.2),
}
TYPES = {"n_muon": "int", "met": "float", "trigger_isomu24": "bool", "run": "int"}
TYPES |= {"charge": "int", "os_dimuon": "bool"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions)
def test_normal_form_keeps_the_meaning(text):
    tree = check(parse(text), TYPES)
    canonical = normalise(tree)
    again = parse(canonical)
    assert normalise(again) == canonical
    # The same answer in every event, unknown included.
    assert truth(again, ARRAYS).tolist() == truth(tree, ARRAYS).tolist()


@pytest.fixture(scope="module")
def fuzz_collection(store):
    key = load_arrays(store, ARRAYS)
    yield store, key
    store.drop(key)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=conditions)
def test_every_backend_agrees_with_numpy(fuzz_collection, text):
    # True, false and unknown in the same events: the selection and its negation select
    # in the database exactly the events numpy's masks say.
    store, key = fuzz_collection
    tree = check(parse(text), TYPES)
    assert sql_truth(store, key, tree) == numpy_truth(tree, ARRAYS)
