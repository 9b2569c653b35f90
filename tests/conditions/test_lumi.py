"""Luminosity and data-quality payloads on a storage element, a good-run list made from
chosen flags, and its integrated luminosity, against a hand computation."""

from __future__ import annotations

import pytest

from conditions import actions, lumi
from conditions.models import PayloadIOV
from dss.errors import ChecksumMismatch
from tagdb.goodruns import parse_good_run_list

pytestmark = pytest.mark.django_db

G, B = "good", "bad"


@pytest.fixture
def tag(manager, local_se):
    gt = actions.do_create_global_tag(manager, "data24")
    actions.do_create_payload_type(manager, "lumi")
    actions.do_create_payload_type(manager, "dq")
    put = lumi.do_put_run_values
    # run 100: LBs 1-5; LB 3 has a bad muon flag, LB 5 a bad pixel flag
    put(
        manager,
        gt,
        "dq",
        local_se,
        100,
        {
            1: {"pixel": G, "muon": G},
            2: {"pixel": G, "muon": G},
            3: {"pixel": G, "muon": B},
            4: {"pixel": G, "muon": G},
            5: {"pixel": B, "muon": G},
        },
    )
    # run 101: all good but LB 2 lacks the muon flag
    put(manager, gt, "dq", local_se, 101, {1: {"pixel": G, "muon": G}, 2: {"pixel": G}})
    put(manager, gt, "lumi", local_se, 100, {1: 1.5, 2: 2.0, 3: 4.0, 4: 0.25, 5: 8.0})
    put(manager, gt, "lumi", local_se, 101, {1: 10.0, 2: 20.0})
    return gt


def test_the_good_run_list_holds_the_blocks_where_every_flag_is_good(tag):
    assert lumi.good_run_list(tag, ["pixel", "muon"]) == {
        "100": [[1, 2], [4, 4]],
        "101": [[1, 1]],
    }
    assert lumi.good_run_list(tag, ["pixel"]) == {"100": [[1, 4]], "101": [[1, 2]]}


def test_the_good_run_list_is_one_that_tag_queries_accept(tag):
    grl = parse_good_run_list(lumi.good_run_list(tag, ["pixel", "muon"]))
    assert grl.runs == {100: ((1, 2), (4, 4)), 101: ((1, 1),)}


def test_the_luminosity_of_a_good_run_list_is_the_sum_of_its_blocks(tag):
    grl = lumi.good_run_list(tag, ["pixel", "muon"])
    # by hand: run 100 LBs 1, 2, 4 = 1.5 + 2.0 + 0.25; run 101 LB 1 = 10.0
    assert lumi.integrated_luminosity(tag, grl) == {
        "luminosity": 13.75,
        "unit": "pb^-1",
        "lumiblocks": 4,
        "missing": 0,
    }
    # a block with no luminosity value is counted as missing, not as zero silently
    assert lumi.integrated_luminosity(tag, {"100": [[5, 6]]})["missing"] == 1


def test_a_newer_iov_shadows_part_of_a_run(tag, manager, local_se):
    # a recalibrated luminosity for run 100 from LB 4 on
    url, adler, size = lumi.do_store_payload(
        local_se, "lumi", b'{"runs": {"100": {"4": 1.0, "5": 1.0}}, "unit": "pb^-1"}'
    )
    actions.do_insert_iov(manager, tag, "lumi", url, adler, (100, 4), (101, 0), size)
    assert lumi.integrated_luminosity(tag, {"100": [[1, 5]]})["luminosity"] == 1.5 + 2 + 4 + 1 + 1


def test_payload_files_are_stored_once_and_checked_when_read(tag, storage_root):
    iov = PayloadIOV.objects.filter(payload_list__payload_type__name="lumi").first()
    assert iov.payload_url.startswith("file://") and iov.size > 0
    path = storage_root / iov.payload_url.split(storage_root.as_uri() + "/", 1)[1]
    assert path.read_bytes().startswith(b"{")
    path.write_bytes(path.read_bytes().replace(b"1.5", b"9.5"))
    with pytest.raises(ChecksumMismatch):
        lumi.integrated_luminosity(tag, {"100": [[1, 1]]})


def test_the_api_gives_the_list_and_its_luminosity(tag, anon):
    r = anon.get("/api/conditions/grl/", {"gt": "data24", "flags": "pixel,muon"})
    assert r.status_code == 200 and r.json() == {"100": [[1, 2], [4, 4]], "101": [[1, 1]]}
    r = anon.post("/api/conditions/luminosity/", {"gt": "data24", "grl": r.json()}, format="json")
    assert r.status_code == 200 and r.json()["luminosity"] == 13.75
    r = anon.get("/api/conditions/grl/", {"gt": "data24", "flags": ""})
    assert r.status_code == 400 and "flag" in r.json()["detail"]
    r = anon.post("/api/conditions/luminosity/", {"gt": "data24", "grl": [1]}, format="json")
    assert r.status_code == 400
