"""The integrated luminosity of the lumiblocks a TAG selection's events fall in (what
iLumiCalc gives), from a global tag's lumi payloads: against a hand computation, with
blocks that have no value counted apart; on the TAG page, in the count API, and in the
provenance of a skim that names a global tag."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client
from rest_framework.test import APIClient

from conditions import actions as cond_actions
from conditions import lumi
from dmu import actions as dmu_actions
from dss.errors import InvalidInput
from skims import actions as skim_actions
from tagdb import actions
from tests.skims.test_skim_correctness import run_skim
from tests.tagdb.goodruns_data import write_lumi_file
from tests.tagdb.portal import drop_tags

pytestmark = pytest.mark.django_db

# (run, lumiblock, event, pt): run 100 LB 1 holds two events with pt > 20 (one block);
# run 100 LB 5 and run 102 have events but no luminosity value in the tag.
EVENTS = [
    (100, 1, 11, 30.0),
    (100, 1, 12, 70.0),
    (100, 1, 13, 10.0),
    (100, 2, 21, 50.0),
    (100, 3, 31, 25.0),
    (100, 4, 41, 5.0),
    (100, 5, 51, 60.0),
    (101, 1, 61, 40.0),
    (101, 2, 71, 5.0),
    (101, 7, 81, 45.0),
    (102, 1, 91, 35.0),
]
LUMI = {100: {1: 1.5, 2: 2.0, 3: 4.0, 4: 0.25}, 101: {1: 10.0, 2: 20.0, 7: 0.5}}


def branches(with_lumi: bool = True) -> dict[str, np.ndarray]:
    run, lb, event, pt = (np.array(c) for c in zip(*EVENTS, strict=True))
    out = {"Run": run.astype(np.int64), "Event": event.astype(np.int64), "pt": pt}
    if with_lumi:
        out["LumiBlock"] = lb.astype(np.int64)
    return out


@pytest.fixture
def collection(local_se, storage_root):
    write_lumi_file(storage_root / "data24" / "lumi.root", branches())
    dmu_actions.check_register_dataset("data24.lumi", local_se, ["data24/lumi.root"])
    (built,) = actions.check_build_builtin(["data24.lumi"], lambda _: None)
    yield built
    drop_tags(built)


@pytest.fixture
def no_lumi(local_se, storage_root):
    write_lumi_file(storage_root / "data24" / "nolumi.root", branches(with_lumi=False))
    dmu_actions.check_register_dataset("data24.nolumi", local_se, ["data24/nolumi.root"])
    (built,) = actions.check_build_builtin(["data24.nolumi"], lambda _: None)
    yield built
    drop_tags(built)


@pytest.fixture
def gt(manager, local_se):
    tag = cond_actions.do_create_global_tag(manager, "data24-lumi")
    cond_actions.do_create_payload_type(manager, "lumi")
    for run, values in LUMI.items():
        lumi.do_put_run_values(manager, tag, "lumi", local_se, run, values)
    return tag


def test_the_luminosity_of_a_selection_is_that_of_its_distinct_blocks(collection, gt):
    r = actions.selection_luminosity(collection, "pt > 20", None, gt)
    # by hand: blocks (100,1) (100,2) (100,3) (100,5) (101,1) (101,7) (102,1);
    # (100,1) once though two of its events pass; (100,5) and (102,1) have no value
    assert r["luminosity"] == pytest.approx(1.5 + 2.0 + 4.0 + 10.0 + 0.5)
    assert (r["lumiblocks"], r["with_value"], r["missing"]) == (7, 5, 2)
    assert r["missing_blocks"] == [[100, 5], [102, 1]]
    assert (r["unit"], r["global_tag"], r["events_without_numbers"]) == ("pb^-1", gt.name, 0)
    assert r["good_run_list"] is None
    every = actions.selection_luminosity(collection, "", None, gt)
    assert every["luminosity"] == pytest.approx(1.5 + 2 + 4 + 0.25 + 10 + 20 + 0.5)
    assert (every["lumiblocks"], every["missing"]) == (9, 2)


def test_a_good_run_list_limits_the_blocks_and_has_its_own_luminosity(collection, gt):
    grl = {"100": [[1, 2]], "101": [[1, 10]]}
    r = actions.selection_luminosity(collection, "pt > 20", grl, gt)
    assert r["luminosity"] == pytest.approx(1.5 + 2.0 + 10.0 + 0.5)
    assert (r["lumiblocks"], r["missing"]) == (4, 0)
    # the list's own: run 100 LBs 1-2, run 101 LBs 1-10 (of which 1, 2, 7 have values)
    assert r["good_run_list"] == {
        "luminosity": pytest.approx(1.5 + 2.0 + 10.0 + 20.0 + 0.5),
        "unit": "pb^-1",
        "lumiblocks": 5,
        "missing": 12 - 5,
    }


def test_another_global_tag_gives_its_own_values(collection, gt, manager, local_se):
    other = cond_actions.do_create_global_tag(manager, "data24-lumi-v2")
    lumi.do_put_run_values(manager, other, "lumi", local_se, 100, {5: 3.0})
    r = actions.selection_luminosity(collection, "pt > 20", None, other)
    assert r["luminosity"] == 3.0
    assert (r["lumiblocks"], r["missing"]) == (7, 6)


def test_only_the_payloads_of_the_selected_runs_are_read(gt):
    assert sorted({run for run, _, _ in lumi.values_in(gt, "lumi", {101})}) == [101]
    assert list(lumi.values_in(gt, "lumi", {102})) == []
    assert lumi.luminosity_of_blocks(gt, [])["lumiblocks"] == 0


def test_a_collection_without_lumiblock_numbers_gets_a_message_not_a_zero(no_lumi, gt):
    with pytest.raises(InvalidInput, match="this collection has no luminosity-block numbers"):
        actions.selection_luminosity(no_lumi, "pt > 20", None, gt)


def test_an_unknown_global_tag_is_bad_input(collection):
    with pytest.raises(InvalidInput, match="no global tag named 'nope'") as e:
        actions.lumi_global_tag("nope")
    assert e.value.where == "lumi_gt"
    assert actions.lumi_global_tag("  ") is None


def test_the_tag_page_shows_the_luminosity_and_the_blocks_without_a_value(
    collection, gt, physicist
):
    c = Client()
    c.force_login(physicist)
    page = c.get(collection.get_absolute_url())
    assert b'<option value="data24-lumi">' in page.content  # the choice of global tag
    page = c.post(collection.get_absolute_url(), {"selection": "pt > 20", "lumi_gt": gt.name})
    text = page.content.decode()
    assert "7 luminosity blocks: <strong>18 pb^-1</strong> (global tag data24-lumi)" in text
    assert "2 blocks have no luminosity value" in text
    # "Skim these events" carries the choice to the skim form
    form = c.post("/skims/new/", {"prefill": "1", "selection": "pt > 20", "lumi_gt": gt.name})
    assert b'name="lumi_gt" value="data24-lumi"' in form.content
    live = c.post(f"/tags/{collection.pk}/count/", {"selection": "pt > 20", "lumi_gt": "nope"})
    assert "no global tag named" in live.content.decode()
    assert b"of 11 events pass" in live.content  # the count stays


def test_the_page_of_a_collection_without_lumiblocks_says_so(no_lumi, gt, physicist):
    c = Client()
    c.force_login(physicist)
    text = c.post(no_lumi.get_absolute_url(), {"lumi_gt": gt.name}).content.decode()
    assert "This collection has no luminosity-block numbers" in text
    assert "this collection has no luminosity-block numbers" in text  # the answer
    assert "pb^-1" not in text


def test_the_count_api_answers_the_luminosity_with_lumi_gt(collection, no_lumi, gt, physicist):
    api = APIClient()
    api.force_authenticate(physicist)
    url = f"/api/tags/{collection.pk}/count/"
    plain = api.post(url, {"selection": "pt > 20"}, format="json").json()
    assert plain["count"] == 8 and "luminosity" not in plain
    body = {"selection": "pt > 20", "lumi_gt": gt.name, "good_runs": {"100": [[1, 2]]}}
    r = api.post(url, body, format="json").json()
    assert r["count"] == 3
    assert r["luminosity"]["luminosity"] == 3.5
    assert r["luminosity"]["missing"] == 0
    assert r["luminosity"]["good_run_list"]["luminosity"] == 3.5
    bad = api.post(url, {"lumi_gt": "nope"}, format="json")
    assert bad.status_code == 400 and "no global tag named 'nope'" in str(bad.json())
    none = api.post(f"/api/tags/{no_lumi.pk}/count/", {"lumi_gt": gt.name}, format="json")
    assert none.status_code == 400
    assert "no luminosity-block numbers" in str(none.json())


def test_a_skim_with_lumi_gt_records_the_luminosity_in_its_provenance(
    collection, no_lumi, gt, physicist, operator
):
    def submit(inp, name, **options):
        return skim_actions.check_submit_skim(
            user=physicist,
            inputs=[skim_actions.InputSpec(inp.dataset, inp)],
            selection="pt > 20",
            output_name=name,
            **options,
        )

    skim = run_skim(submit(collection, "user.phys.lumi", lumi_gt=gt.name))
    assert skim.state == "succeeded", skim.message
    record = skim.provenance
    assert record.options["lumi_gt"] == gt.name
    got = record.options["luminosity"]
    assert got["luminosity"] == pytest.approx(18.0)
    assert (got["lumiblocks"], got["missing"], got["global_tag"]) == (7, 2, gt.name)
    c = Client()
    c.force_login(operator)  # who reads provenance records
    text = c.get(record.get_absolute_url()).content.decode()
    assert "<strong>18 pb^-1</strong>" in text and "2 without a luminosity value" in text
    # a skim without the choice records none; bad choices are refused at submission
    plain = run_skim(submit(collection, "user.phys.nolumi"))
    assert "lumi_gt" not in plain.provenance.options
    with pytest.raises(InvalidInput, match="no global tag named"):
        submit(collection, "user.phys.bad", lumi_gt="nope")
    with pytest.raises(InvalidInput, match="no luminosity-block numbers"):
        submit(no_lumi, "user.phys.bad2", lumi_gt=gt.name)
    api = APIClient()
    api.force_authenticate(physicist)
    body = {"collections": [collection.pk], "selection": "pt > 20", "output_name": "user.phys.a"}
    r = api.post("/api/skims/", {**body, "lumi_gt": "nope"}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "lumi_gt", r.json()
    r = api.post("/api/skims/", {**body, "lumi_gt": gt.name, "force": True}, format="json")
    assert r.status_code == 201 and r.json()["lumi_gt"] == gt.name, r.json()
