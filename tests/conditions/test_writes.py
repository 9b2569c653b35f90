"""Inserting IOVs: a new IOV wins over what it overlaps in an unlocked global tag; a locked
one refuses every change to what it answers, and deletes; clones answer as their source."""

from __future__ import annotations

import pytest

from conditions.models import PayloadIOV

pytestmark = pytest.mark.django_db


@pytest.fixture
def tag(cdb):
    cdb.gt("gt")
    cdb.pt("calib")
    cdb.insert("gt", "calib", "old", (0, 0), (100, 0))
    return cdb


def iovs(gt="gt"):
    return sorted(
        (i.payload_url, i.start, i.end)
        for i in PayloadIOV.objects.filter(payload_list__global_tag__name=gt)
    )


def test_an_iov_inside_another_splits_it(tag):
    tag.insert("gt", "calib", "new", (40, 0), (60, 0))
    assert iovs() == [
        ("new", (40, 0), (60, 0)),
        ("old", (0, 0), (40, 0)),
        ("old", (60, 0), (100, 0)),
    ]
    assert [tag.urls("gt", r, 0)["calib"] for r in (39, 40, 59, 60, 99)] == [
        "old",
        "new",
        "new",
        "old",
        "old",
    ]


def test_an_iov_over_the_start_of_another_moves_its_start(tag):
    tag.insert("gt", "calib", "new", (50, 3), (150, 0))
    assert iovs() == [("new", (50, 3), (150, 0)), ("old", (0, 0), (50, 3))]
    tag.insert("gt", "calib", "first", (0, 0), (10, 0))
    assert iovs() == [
        ("first", (0, 0), (10, 0)),
        ("new", (50, 3), (150, 0)),
        ("old", (10, 0), (50, 3)),
    ]


def test_an_open_iov_replaces_all_it_covers(tag):
    tag.insert("gt", "calib", "b", (100, 0), (200, 0))
    tag.insert("gt", "calib", "c", (300, 0))
    tag.insert("gt", "calib", "open", (50, 0))
    assert iovs() == [("old", (0, 0), (50, 0)), ("open", (50, 0), None)]


def test_an_iov_with_the_same_start_and_end_replaces_it(tag):
    tag.insert("gt", "calib", "again", (0, 0), (100, 0))
    assert iovs() == [("again", (0, 0), (100, 0))]


def test_an_iov_must_end_after_it_starts(tag):
    r = tag.call(
        "post",
        "piov",
        {
            "payload_url": "u",
            "checksum": "c",
            "major_iov": 5,
            "minor_iov": 0,
            "major_iov_end": 5,
            "minor_iov_end": 0,
        },
        expect=400,
    )
    assert "ends after it starts" in r["detail"]
    r = tag.call(
        "post",
        "piov",
        {"payload_url": "u", "checksum": "c", "major_iov": 5, "minor_iov": 0, "major_iov_end": 6},
        expect=400,
    )
    assert "both" in r["detail"]


def test_a_locked_tag_refuses_an_overlapping_iov_and_keeps_its_answers(tag):
    tag.call("put", "gt_change_status/gt/locked")
    r = tag.insert("gt", "calib", "new", (50, 0), (60, 0), expect=409)
    assert "locked" in r["detail"] and "overlaps old" in r["detail"]
    r = tag.insert("gt", "calib", "open", (99, 0), expect=409)
    assert iovs() == [("old", (0, 0), (100, 0))]
    assert tag.urls("gt", 55, 0) == {"calib": "old"}


def test_a_locked_tag_takes_an_iov_past_all_it_holds(tag):
    tag.call("put", "gt_change_status/gt/locked")
    tag.insert("gt", "calib", "next", (100, 0))
    assert tag.urls("gt", 100, 0) == {"calib": "next"}
    assert tag.urls("gt", 99, 0) == {"calib": "old"}


def test_a_locked_tag_refuses_new_lists_and_deletes(tag):
    tag.pt("align")
    tag.call("put", "gt_change_status/gt/locked")
    pl = tag.call("post", "pl", {"payload_type": "align"})["name"]
    r = tag.call("put", "pl_attach", {"payload_list": pl, "global_tag": "gt"}, expect=409)
    assert "locked" in r["detail"]
    tag.call("delete", "deletePayloadIOV/gt/calib/0/0/100/0", expect=409)
    tag.call("delete", "deleteGlobalTag/gt", expect=409)
    calib = tag.call("get", "gtPayloadLists/gt")["calib"]
    tag.call("delete", f"deletePayloadList/{calib}", expect=409)
    assert iovs() == [("old", (0, 0), (100, 0))]
    tag.call("put", "gt_change_status/gt/unlocked")
    tag.call("delete", "deletePayloadIOV/gt/calib/0/0/100/0")
    tag.call("delete", "deleteGlobalTag/gt")
    tag.call("get", "globalTag/gt", expect=404)


def test_deleting_a_type_or_list_in_use_is_refused(tag):
    r = tag.call("delete", "deletePayloadType/calib", expect=409)
    assert "used by 1 payload lists" in r["detail"]
    calib = tag.call("get", "gtPayloadLists/gt")["calib"]
    r = tag.call("delete", f"deletePayloadList/{calib}", expect=409)
    assert "holds 1 IOVs" in r["detail"]


def test_an_open_iov_is_deleted_by_its_start(tag):
    tag.insert("gt", "calib", "open", (200, 0))
    tag.call("delete", "deletePayloadIOV/gt/calib/200/0")
    tag.call("delete", "deletePayloadIOV/gt/calib/200/0", expect=404)
    assert iovs() == [("old", (0, 0), (100, 0))]


def test_a_clone_answers_as_its_source_and_changes_apart(tag):
    tag.pt("align")
    tag.insert("gt", "align", "al", (5, 0))
    tag.insert("gt", "calib", "mid", (20, 7), (30, 0))
    tag.call("put", "gt_change_status/gt/locked")
    clone = tag.call("post", "cloneGlobalTag/gt/gt2")
    assert clone["status"] == "unlocked" and clone["payload_iov_count"] == 4
    for run in range(0, 120, 3):
        for lb in (0, 7, 9):
            assert tag.urls("gt2", run, lb) == tag.urls("gt", run, lb)
    tag.insert("gt2", "calib", "changed", (0, 0))
    assert tag.urls("gt2", 1, 0) == {"calib": "changed"}
    assert tag.urls("gt", 1, 0) == {"calib": "old"}
    tag.call("post", "cloneGlobalTag/gt/gt2", expect=409)


def test_bulk_insert_is_all_or_none(tag):
    calib = tag.call("get", "gtPayloadLists/gt")["calib"]
    good = {
        "payload_list": calib,
        "payload_url": "b1",
        "checksum": "x",
        "major_iov": 200,
        "minor_iov": 0,
    }
    bad = {**good, "major_iov": "two hundred"}
    tag.call("post", "bulk_piov", [good, bad], expect=400)
    assert len(iovs()) == 1
    tag.call("post", "bulk_piov", [good])
    assert tag.urls("gt", 300, 0) == {"calib": "b1"}


def test_names_that_would_not_fit_a_url_are_refused(cdb):
    r = cdb.call("post", "gt", {"name": "a/b", "status": "unlocked"}, expect=400)
    assert "name" in r["detail"]
    cdb.call("post", "pt", {"name": ""}, expect=400)
    cdb.gt("gt")
    cdb.call("post", "gt", {"name": "gt", "status": "unlocked"}, expect=409)


def test_a_tag_with_an_unknown_status_is_not_made(cdb):
    r = cdb.call("post", "gt", {"name": "g", "status": "frozen"}, expect=400)
    assert "frozen" in r["detail"]
    cdb.call("get", "globalTag/g", expect=404)
