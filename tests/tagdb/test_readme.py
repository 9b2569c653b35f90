"""The README's selection examples and the counts it gives for them are what the demo
files hold: each is computed here from the ROOT files with uproot, awkward and numpy alone
(a missing value is NaN, and only a comparison that is true keeps an event), then set
beside the TAG DB on every backend and the numpy evaluator of the selection language."""

from __future__ import annotations

import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from tagdb.selection import evaluate, parse
from tests.tagdb.conftest import HZZ_PATH, ZMUMU_PATH, unique_key

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
GUID = "9d3f1a2b-4444-4c5d-8e6f-7a8b9c0d1e2f"


def widened(arrays: ak.Array, name: str) -> ak.Array:
    return ak.values_astype(arrays[name], np.float64)


def nan_where_none(values: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.fill_none(values, np.nan)).astype(np.float64)


def hzz_columns() -> dict[str, np.ndarray]:
    """What the examples need from demo.hzz, NaN where the event has no such object."""
    e = uproot.open(HZZ_PATH)["events"].arrays(library="ak")
    muon_pt = np.hypot(widened(e, "Muon_Px"), widened(e, "Muon_Py"))
    leading_muon = ak.argmax(muon_pt, axis=1, keepdims=True)
    muon_eta = np.arcsinh(widened(e, "Muon_Pz") / muon_pt)
    jet_pt = np.hypot(widened(e, "Jet_Px"), widened(e, "Jet_Py"))
    charge = e["Muon_Charge"]
    return {
        "n_muon": ak.to_numpy(ak.num(e["Muon_Px"], axis=1)),
        "n_jet": ak.to_numpy(ak.num(e["Jet_Px"], axis=1)),
        "met": np.hypot(ak.to_numpy(widened(e, "MET_px")), ak.to_numpy(widened(e, "MET_py"))),
        "trigger": ak.to_numpy(e["triggerIsoMu24"]),
        "lead_muon_pt": nan_where_none(ak.max(muon_pt, axis=1)),
        "lead_muon_eta": nan_where_none(ak.firsts(muon_eta[leading_muon])),
        "os_dimuon": ak.to_numpy(
            (ak.sum(charge > 0, axis=1) >= 1) & (ak.sum(charge < 0, axis=1) >= 1)
        ),
        "lead_jet_pt": nan_where_none(ak.max(jet_pt, axis=1)),
    }


def zmumu_columns() -> dict[str, np.ndarray]:
    e = uproot.open(ZMUMU_PATH)["events"].arrays(["Run", "M", "Q1", "Q2"], library="np")
    return {"run": e["Run"], "mass": e["M"], "q1q2": e["Q1"] * e["Q2"]}


def has(x: np.ndarray) -> np.ndarray:
    return ~np.isnan(x)


# Each example, and which events it keeps, in plain numpy. A comparison with NaN is
# false; a negation keeps only events where the negated comparison is known to be false.
HZZ_EXAMPLES = {
    "n_muon >= 2": lambda c: c["n_muon"] >= 2,
    "n_muon >= 2 && (met > 40 || trigger_isomu24)": lambda c: (
        (c["n_muon"] >= 2) & ((c["met"] > 40) | c["trigger"])
    ),
    "abs(lead_muon_eta) < 2.4 and not os_dimuon and hypot(met, lead_jet_pt) > 100": lambda c: (
        (np.abs(c["lead_muon_eta"]) < 2.4)
        & ~c["os_dimuon"]
        & (np.hypot(c["met"], c["lead_jet_pt"]) > 100)
    ),
    "hypot(met, lead_jet_pt) > 100": lambda c: np.hypot(c["met"], c["lead_jet_pt"]) > 100,
    "lead_muon_pt < 20": lambda c: c["lead_muon_pt"] < 20,
    "!(lead_muon_pt >= 20)": lambda c: has(c["lead_muon_pt"]) & ~(c["lead_muon_pt"] >= 20),
    "missing(lead_muon_pt) || lead_muon_pt < 20": lambda c: (
        ~has(c["lead_muon_pt"]) | (c["lead_muon_pt"] < 20)
    ),
    "missing(lead_jet_pt)": lambda c: ~has(c["lead_jet_pt"]),
}
ZMUMU_EXAMPLES = {
    "run in [148029, 148031..148035] && mass > 80 && opposite_charge": lambda c: (
        ((c["run"] == 148029) | ((c["run"] >= 148031) & (c["run"] <= 148035)))
        & (c["mass"] > 80)
        & (c["q1q2"] < 0)
    ),
}


def claimed_counts() -> dict[str, int]:
    """The counts the README states: "`selection` keeps N", "…, and so does `other`",
    and the comment after a ``dss tag count demo.hzz 'selection'`` line."""
    text = re.sub(r"\s+", " ", README)
    claims = {
        sel: int(n.replace(",", "")) for sel, n in re.findall(r"`([^`]+)` keeps ([\d,]+)", text)
    }
    for n, sel in re.findall(r"keeps ([\d,]+), and so does `([^`]+)`", text):
        claims[sel] = int(n.replace(",", ""))
    for sel, n in re.findall(r"dss tag count demo\.hzz '([^']+)' # ([\d,]+) of 2,421", text):
        claims[sel] = int(n.replace(",", ""))
    return claims


@pytest.fixture(scope="module")
def demo(store, hzz_schema, zmumu_schema, hzz_tags, zmumu_tags):
    keys = {"hzz": unique_key("r"), "zmumu": unique_key("r")}
    for name, schema, tags in (("hzz", hzz_schema, hzz_tags), ("zmumu", zmumu_schema, zmumu_tags)):
        with store.begin_build(keys[name], schema) as builder:
            builder.load(GUID, tags)
            builder.publish()
    yield store, keys
    for key in keys.values():
        store.drop(key)


def test_the_readme_shows_these_examples_and_states_only_counts_checked_here():
    for selection in [*HZZ_EXAMPLES, *ZMUMU_EXAMPLES]:
        assert selection in README, selection
    claims = claimed_counts()
    assert len(claims) >= 6
    assert set(claims) <= set(HZZ_EXAMPLES), set(claims) - set(HZZ_EXAMPLES)


def test_the_stated_counts_are_what_the_root_file_holds():
    columns = hzz_columns()
    for selection, count in claimed_counts().items():
        assert int(HZZ_EXAMPLES[selection](columns).sum()) == count, selection
    # "716 of the 2,421 events have no jet and 59 no muon"
    text = re.sub(r"\s+", " ", README)
    assert "716 of the 2,421 events have no jet and 59 no muon" in text
    assert len(columns["n_jet"]) == 2421
    assert int((columns["n_jet"] == 0).sum()) == 716 and int((columns["n_muon"] == 0).sum()) == 59


@pytest.mark.parametrize(
    "dataset, selection",
    [("hzz", s) for s in HZZ_EXAMPLES] + [("zmumu", s) for s in ZMUMU_EXAMPLES],
)
def test_the_tag_db_and_a_scan_keep_what_numpy_keeps(
    demo, hzz_tags, zmumu_tags, dataset, selection
):
    store, keys = demo
    columns, examples, tags = {
        "hzz": (hzz_columns, HZZ_EXAMPLES, hzz_tags),
        "zmumu": (zmumu_columns, ZMUMU_EXAMPLES, zmumu_tags),
    }[dataset]
    expected = np.flatnonzero(examples[selection](columns()))
    tree = parse(selection)
    assert store.entries_by_file(keys[dataset], tree).get(GUID, []).tolist() == expected.tolist()
    assert np.flatnonzero(evaluate(tree, tags)).tolist() == expected.tolist()


def test_the_histogram_says_716_events_have_no_lead_jet_pt(demo):
    store, keys = demo
    assert '"716 events have no lead_jet_pt"' in README
    hist = store.histogram(keys["hzz"], "lead_jet_pt")
    assert hist.missing == 716 and hist.underflow == 0 and hist.total == 2421
