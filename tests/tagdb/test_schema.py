"""TAG schemas: loading, validation errors, and column-wise computation from the demo trees."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import yaml

from tagdb.schema import (
    MISSING,
    SchemaError,
    auto_schema,
    builtin_schemas,
    compute_tags,
    load_schema,
)
from tagdb.selection import evaluate, parse
from tests.tagdb.conftest import HZZ_PATH


def one_attribute(expression: str, type_: str = "float", **extra) -> str:
    return yaml.safe_dump(
        {
            "name": "probe",
            "version": 1,
            "tree": "events",
            **extra,
            "attributes": [{"name": "x", "type": type_, "expression": expression}],
        }
    )


def test_builtin_schemas_load():
    schemas = builtin_schemas()
    assert set(schemas) >= {"hzz", "zmumu"}
    assert len(schemas["hzz"].attributes) >= 20
    assert schemas["zmumu"].numbering() == {"run": "Run", "event": "Event"}


def test_branches_lists_only_what_the_expressions_read(hzz_schema, zmumu_schema):
    assert "Muon_Px" in hzz_schema.branches()
    assert "MET_px" in hzz_schema.branches()
    assert "MChadronicBottom_px" not in hzz_schema.branches()
    assert set(zmumu_schema.branches()) == {
        "Run", "Event", "pt1", "eta1", "phi1", "Q1", "pt2", "eta2", "phi2", "Q2",
        "px1", "px2", "py1", "py2", "M",
    }  # fmt: skip


def test_compute_tags_reads_only_the_needed_branches(hzz_schema, hzz_tree, monkeypatch):
    asked = {}
    original = type(hzz_tree).arrays

    def spy(self, *args, **kwargs):
        asked["filter"] = kwargs["filter_name"]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(hzz_tree), "arrays", spy)
    compute_tags(hzz_schema, hzz_tree, entry_stop=10)
    read = {name for name in hzz_tree.keys() if asked["filter"](name)}
    assert read == set(hzz_schema.branches())


def test_hzz_counts_match_the_branches(hzz_tags, hzz_tree):
    n_muon = hzz_tree["NMuon"].array(library="np")
    assert hzz_tags["n_muon"].dtype == np.int64
    assert (hzz_tags["n_muon"] == n_muon).all()
    assert (hzz_tags["n_jet"] == hzz_tree["NJet"].array(library="np")).all()
    assert int((hzz_tags["n_muon"] >= 2).sum()) == 1413
    assert int(evaluate(parse("n_muon >= 2"), hzz_tags).sum()) == 1413


def test_hzz_kinematics(hzz_tags, hzz_tree):
    arrays = hzz_tree.arrays(["MET_px", "MET_py", "Muon_Px", "Muon_Py", "Muon_Pz", "Jet_btag"])
    met = np.hypot(arrays.MET_px.to_numpy().astype(np.float64), arrays.MET_py.to_numpy())
    assert np.allclose(hzz_tags["met"], met)
    pt = np.hypot(arrays.Muon_Px, arrays.Muon_Py)
    lead = ak.fill_none(ak.max(pt, axis=1), MISSING).to_numpy()
    assert np.allclose(hzz_tags["lead_muon_pt"], lead, rtol=1e-6)
    has_two = hzz_tags["n_muon"] >= 2
    assert (hzz_tags["sublead_muon_pt"][~has_two] == MISSING).all()
    assert (hzz_tags["sublead_muon_pt"][has_two] <= hzz_tags["lead_muon_pt"][has_two]).all()
    # The leading muon's eta is the eta of the highest-pt muon, not the largest eta.
    best = ak.argmax(pt, axis=1, keepdims=True)
    eta = np.arcsinh(arrays.Muon_Pz / pt)[best]
    expected = ak.fill_none(ak.firsts(eta), MISSING).to_numpy()
    assert np.allclose(hzz_tags["lead_muon_eta"], expected, rtol=1e-6)
    assert (hzz_tags["n_bjet"] == ak.sum(arrays.Jet_btag > 0.5, axis=1).to_numpy()).all()
    assert hzz_tags["trigger_isomu24"].dtype == np.bool_


def test_dimuon_mass_is_near_the_z_for_opposite_charges(hzz_tags):
    mass = hzz_tags["dimuon_mass"][hzz_tags["os_dimuon"] & (hzz_tags["n_muon"] == 2)]
    assert 85 < np.median(mass) < 95
    assert (hzz_tags["dimuon_mass"][hzz_tags["n_muon"] < 2] == MISSING).all()


def test_zmumu_has_run_and_event_numbers(zmumu_tags, zmumu_tree):
    assert (zmumu_tags["run"] == zmumu_tree["Run"].array(library="np")).all()
    assert (zmumu_tags["event"] == zmumu_tree["Event"].array(library="np")).all()
    q = zmumu_tree.arrays(["Q1", "Q2"], library="np")
    assert (zmumu_tags["opposite_charge"] == (q["Q1"] * q["Q2"] < 0)).all()
    assert np.allclose(zmumu_tags["mass"], zmumu_tree["M"].array(library="np"))
    assert len(zmumu_tags["mass"]) == 2304


def test_chunks_give_the_same_tags(hzz_schema, hzz_tree, hzz_tags):
    parts = [compute_tags(hzz_schema, hzz_tree, start, start + 1000) for start in (0, 1000, 2000)]
    for name, values in hzz_tags.items():
        joined = np.concatenate([p[name] for p in parts])
        assert np.array_equal(joined, values, equal_nan=values.dtype.kind == "f"), name


def test_compute_tags_accepts_a_path(hzz_schema):
    tags = compute_tags(hzz_schema, HZZ_PATH, entry_stop=5)
    assert len(tags["n_muon"]) == 5


def test_non_finite_values_become_nan(hzz_tree):
    schema = load_schema(one_attribute("MET_px / (NJet - NJet)"))
    tags = compute_tags(schema, hzz_tree, entry_stop=50)
    assert np.isnan(tags["x"]).all()


def test_to_dict_round_trips(hzz_schema):
    again = load_schema(yaml.safe_dump(hzz_schema.to_dict()))
    assert again == hzz_schema


def test_load_schema_from_a_file(tmp_path, zmumu_schema):
    path = tmp_path / "z.yaml"
    path.write_text(yaml.safe_dump(zmumu_schema.to_dict()))
    assert load_schema(path) == zmumu_schema
    assert load_schema(str(path)) == zmumu_schema
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    "text, message, where",
    [
        (one_attribute("leed(pt(Muon_Px, Muon_Py))"), "unknown function 'leed' at column 1; did you mean 'lead'?", "attribute x, column 1"),
        (one_attribute("count(Muon_Px) >"), "expected a number after '>' at column 17", "attribute x, column 17"),
        (one_attribute("pt(Muon_Px)"), "pt() takes 2 arguments, got 1", "attribute x, column 1"),
        (one_attribute("NMuon", "string"), "type must be int, float or bool", "attribute x"),
        ("name: p\ntree: events\nattributes: []", "non-empty list of attributes", "attributes"),
        ("name: p\ntree: events\nattrbutes: []", "unknown schema key 'attrbutes'; did you mean 'attributes'?", "attrbutes"),
        ("name: p\ntree: events\nattributes:\n - {name: run, type: int, expression: Run}", "reserved", "attribute run"),
        ("name: p\ntree: events\nattributes:\n - {name: Bad-Name, type: int, expression: Run}", "must be lower-case", "attribute Bad-Name"),
        ("name: p\ntree: events\nattributes:\n - {name: a, type: int, expression: X}\n - {name: a, type: int, expression: Y}", "defined twice", "attribute a"),
        ("name: p\ntree: events\nattributes:\n - {name: a, type: int, expresion: X}", "unknown key 'expresion'; did you mean 'expression'?", "attribute a"),
        ("name: p\ntree: events\nrun: 3\nattributes:\n - {name: a, type: int, expression: X}", "'run' must be a branch name", "run"),
        ("name: [p", "not valid YAML", "line 1, column 9"),
    ],
)  # fmt: skip
def test_schema_errors_name_the_attribute_and_token(text, message, where):
    with pytest.raises(SchemaError) as info:
        load_schema(text)
    assert message in info.value.message
    assert info.value.where == where


@pytest.mark.parametrize(
    "expression, type_, message",
    [
        ("pt(Muon_Px, Muon_Py)", "float", "gives a list per event"),
        ("count(NMuon)", "int", "count() at column 1 needs a branch with a list per event"),
        ("lead(Muon_Px, Jet_Px)", "float", "same number of objects"),
        ("MET_px", "int", "declared int but its expression gives floating-point numbers"),
        ("NMuon", "bool", "declared bool but its expression gives numbers"),
        ("NMuon > 1", "int", "declare it bool"),
        ("count(Muon_Pxx)", "int", "reads branch 'Muon_Pxx', which tree 'events' does not have; did you mean 'Muon_Px'?"),
    ],
)  # fmt: skip
def test_compute_errors_name_the_attribute(hzz_tree, expression, type_, message):
    schema = load_schema(one_attribute(expression, type_))
    with pytest.raises(SchemaError) as info:
        compute_tags(schema, hzz_tree, entry_stop=100)
    assert message in info.value.message
    assert "'x'" in info.value.message


def test_auto_schema_for_a_flat_tree(zmumu_tree):
    schema = auto_schema(zmumu_tree)
    assert schema.numbering() == {"run": "Run", "event": "Event"}
    names = [a.name for a in schema.attributes]
    assert {"e1", "px1", "pt1", "q1", "m"} <= set(names)
    assert "type" not in names  # a string branch
    tags = compute_tags(schema, zmumu_tree)
    assert tags["q1"].dtype == np.int64 and tags["m"].dtype == np.float64
    assert (tags["run"] == zmumu_tree["Run"].array(library="np")).all()


def test_auto_schema_counts_list_branches(hzz_tree):
    schema = auto_schema(hzz_tree)
    types = {a.name: a.type for a in schema.attributes}
    assert types["n_muon_px"] == "int"
    assert types["triggerisomu24"] == "bool"
    assert types["met_px"] == "float"
    assert types["nmuon"] == "int"
    tags = compute_tags(schema, hzz_tree)
    assert (tags["n_muon_px"] == tags["nmuon"]).all()


def test_a_bad_event_file_names_the_file(hzz_schema, tmp_path):
    from dss.errors import BadEventFile

    bogus = tmp_path / "not-root.root"
    bogus.write_bytes(b"this is not a ROOT file")
    with pytest.raises(BadEventFile) as info:
        compute_tags(hzz_schema, bogus)
    assert info.value.where == str(bogus)
