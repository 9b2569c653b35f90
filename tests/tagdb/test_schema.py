"""TAG schemas: loading, validation errors, and column-wise computation from the demo trees."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import yaml

from dss.errors import InvalidInput
from tagdb.schema import (
    SchemaError,
    auto_schema,
    builtin_schemas,
    compute_tags,
    load_schema,
    pack_tags,
    unpack_tags,
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
    lead = ak.to_numpy(ak.max(pt, axis=1), allow_missing=True)
    assert np.ma.allclose(hzz_tags["lead_muon_pt"], lead, rtol=1e-6)
    # An event without muons has no leading muon: its value is missing, not a number.
    no_muon = hzz_tags["n_muon"] == 0
    assert no_muon.sum() == 59
    assert (np.ma.getmaskarray(hzz_tags["lead_muon_pt"]) == no_muon).all()
    has_two = hzz_tags["n_muon"] >= 2
    assert (np.ma.getmaskarray(hzz_tags["sublead_muon_pt"]) == ~has_two).all()
    assert (hzz_tags["sublead_muon_pt"][has_two] <= hzz_tags["lead_muon_pt"][has_two]).all()
    # The leading muon's eta is the eta of the highest-pt muon, not the largest eta.
    best = ak.argmax(pt, axis=1, keepdims=True)
    eta = np.arcsinh(arrays.Muon_Pz / pt)[best]
    expected = ak.to_numpy(ak.firsts(eta), allow_missing=True)
    assert np.ma.allclose(hzz_tags["lead_muon_eta"], expected, rtol=1e-6)
    assert (np.ma.getmaskarray(hzz_tags["lead_muon_eta"]) == no_muon).all()
    assert (hzz_tags["n_bjet"] == ak.sum(arrays.Jet_btag > 0.5, axis=1).to_numpy()).all()
    assert hzz_tags["trigger_isomu24"].dtype == np.bool_


def test_dimuon_mass_is_near_the_z_for_opposite_charges(hzz_tags):
    mass = hzz_tags["dimuon_mass"][hzz_tags["os_dimuon"] & (hzz_tags["n_muon"] == 2)]
    assert 85 < np.ma.median(mass) < 95
    assert (np.ma.getmaskarray(hzz_tags["dimuon_mass"]) == (hzz_tags["n_muon"] < 2)).all()


def test_missing_values_are_masked_for_every_type(hzz_tags):
    # lead() of an integer branch has no value in an event without muons either.
    charge = hzz_tags["lead_muon_charge"]
    assert charge.dtype == np.int64
    assert np.ma.count_masked(charge) == 59
    assert set(np.unique(charge.compressed()).tolist()) == {-1, 1}
    jets = hzz_tags["lead_jet_pt"]
    assert np.ma.count_masked(jets) == int((hzz_tags["n_jet"] == 0).sum()) == 716
    assert np.isnan(jets.data[jets.mask]).all()  # a float's missing entries hold NaN too
    assert np.ma.count_masked(hzz_tags["n_muon"]) == 0


def test_packed_tags_keep_their_missing_values(hzz_tags, tmp_path):
    path = tmp_path / "tags.npz"
    np.savez(path, **pack_tags(hzz_tags))
    with np.load(path) as arrays:
        again = unpack_tags(arrays, "uproot-HZZ.root")
    for name, values in hzz_tags.items():
        assert (np.ma.getmaskarray(again[name]) == np.ma.getmaskarray(values)).all(), name
        assert (again[name].compressed() == values.compressed()).all(), name


def test_tags_saved_without_masks_are_refused(hzz_tags, tmp_path):
    path = tmp_path / "tags.npz"
    np.savez(path, **{name: np.ma.getdata(values) for name, values in hzz_tags.items()})
    with np.load(path) as arrays, pytest.raises(InvalidInput, match="uproot-HZZ.root"):
        unpack_tags(arrays, "uproot-HZZ.root")


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
        joined = np.ma.concatenate([p[name] for p in parts])
        assert (np.ma.getmaskarray(joined) == np.ma.getmaskarray(values)).all(), name
        assert (joined.compressed() == values.compressed()).all(), name


def test_compute_tags_accepts_a_path(hzz_schema):
    tags = compute_tags(hzz_schema, HZZ_PATH, entry_stop=5)
    assert len(tags["n_muon"]) == 5


def test_non_finite_values_are_missing(hzz_tree):
    schema = load_schema(one_attribute("MET_px / (NJet - NJet)"))
    tags = compute_tags(schema, hzz_tree, entry_stop=50)
    assert tags["x"].mask.all()


def test_conditions_in_expressions_use_three_valued_logic(hzz_tree, hzz_tags):
    # Unknown for events without muons, unless the other side decides it.
    schema = load_schema(one_attribute("lead(Muon_Charge) > 0 || NJet > 2", "bool"))
    x = compute_tags(schema, hzz_tree)["x"]
    no_muon = hzz_tags["n_muon"] == 0
    many_jets = hzz_tags["n_jet"] > 2
    assert (x.mask == (no_muon & ~many_jets)).all()
    assert x[no_muon & many_jets].all()


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
