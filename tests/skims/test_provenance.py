"""Provenance: what a skim did is recorded, exported as PROV-JSON, browsed and re-run."""

import pytest
from django.test import Client

from skims import actions
from tests.skims.conftest import same_events
from tests.skims.test_skim_correctness import outputs, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def done(hzz_tags, physicist):
    return run_skim(
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "(n_muon >= 2) and met > 25",
            "user.phys.prov",
            branches=["NMuon", "Muon_*", "MET_*"],
        )
    )


def test_the_record_holds_who_what_inputs_outputs_and_software(done):
    r = done.provenance
    assert r.username == "phys" and r.state == "succeeded"
    assert r.selection == "(n_muon >= 2) and met > 25"
    assert r.selection_normalised == "met > 25 && n_muon >= 2"  # operands in a canonical order
    assert r.selection_tree  # the expression tree
    (inp,) = r.inputs
    assert inp["dataset"] == "demo.hzz" and inp["schema"] == "hzz" and inp["schema_version"] >= 1
    assert (
        inp["files"][0]["guid"] == "76a647e8-03ee-11e2-9717-668ba983beef"
        and len(inp["files"][0]["adler32"]) == 8
    )
    (out,) = r.outputs
    f = done.output_dataset.files.get()
    assert out["guid"] == str(f.guid) and out["events"] == f.events == done.events_written
    assert out["adler32"] == f.adler32
    assert {"python", "uproot", "awkward", "dss"} <= set(r.software)
    assert r.workers and r.timing["run_s"] is not None
    assert r.options["branches"] == ["NMuon", "Muon_*", "MET_*"]


def test_prov_json_links_inputs_to_outputs(done):
    doc = actions.prov_json(done.provenance)
    activity = f"dss:skim-{done.pk}"
    assert activity in doc["activity"]
    out_guid = str(done.output_dataset.files.get().guid)
    assert f"dss:file-{out_guid}" in doc["entity"]
    assert any(
        u["prov:entity"] == "dss:file-76a647e8-03ee-11e2-9717-668ba983beef"
        for u in doc["used"].values()
    )
    (derived,) = doc["wasDerivedFrom"].values()
    assert derived["prov:usedEntity"] == "dss:file-76a647e8-03ee-11e2-9717-668ba983beef"
    assert any(
        a.get("prov:type") == "prov:Person" and a["dss:username"] == "phys"
        for a in doc["agent"].values()
    )


def test_a_rerun_selects_exactly_the_same_events(done, operator):
    again = run_skim(actions.do_rerun(done.provenance, operator))
    assert (
        again.state == "succeeded" and again.output_name == "user.oper.prov_rerun1"
    )  # in the operator's scope
    assert again.rerun_of == done.provenance
    assert again.events_written == done.events_written
    assert same_events(outputs(done), outputs(again))
    assert again.selection_normalised == done.selection_normalised


def test_an_identical_request_offers_the_existing_output(done, physicist, hzz_tags):
    with pytest.raises(actions.IdenticalSkim) as e:
        submit(
            physicist,
            [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
            "n_muon>=2&&met>25",
            "user.phys.same",
            branches=["NMuon", "Muon_*", "MET_*"],
        )
    assert e.value.existing == done and "user.phys.prov" in str(e.value)
    forced = submit(
        physicist,
        [actions.InputSpec(hzz_tags.dataset, hzz_tags)],
        "n_muon>=2&&met>25",
        "user.phys.same",
        branches=["NMuon", "Muon_*", "MET_*"],
        force=True,
    )
    assert forced.state == "queued"


def test_operators_browse_filter_and_rerun_from_the_pages(done, operator, physicist):
    c = Client()
    c.force_login(operator)
    html = c.get("/provenance/").content.decode()
    assert "user.phys.prov" in html and "demo.hzz" in html
    assert "user.phys.prov" not in c.get("/provenance/?user=someoneelse").content.decode()
    assert "user.phys.prov" in c.get("/provenance/?dataset=hzz&state=succeeded").content.decode()
    assert "user.phys.prov" not in c.get("/provenance/?state=failed").content.decode()
    assert c.get("/provenance/?since=not-a-date").status_code == 200
    page = c.get(f"/provenance/{done.provenance.pk}/").content.decode()
    assert (
        "76a647e8-03ee-11e2-9717-668ba983beef" in page
        and "met &gt; 25 &amp;&amp; n_muon &gt;= 2" in page
    )
    r = c.get(f"/provenance/{done.provenance.pk}/?format=prov-json")
    assert r.status_code == 200 and r.json()["activity"]
    r = c.post(f"/provenance/{done.provenance.pk}/rerun/", {"output_name": "user.oper.again"})
    assert r.status_code == 302
    assert done.provenance.reruns.get().output_name == "user.oper.again"
    c.force_login(physicist)
    assert c.get("/provenance/").status_code == 403
