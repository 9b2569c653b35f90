"""The IOV lookup: start inclusive, end exclusive, open ends, gaps, (major, minor) order,
and one indexed query whatever the number of IOVs."""

from __future__ import annotations

import sys

import pytest
from django.db import connection

from conditions import actions
from conditions.models import PayloadIOV

pytestmark = pytest.mark.django_db

OPEN = sys.maxsize


@pytest.fixture
def tag(cdb):
    cdb.gt("gt")
    cdb.pt("calib")
    cdb.insert("gt", "calib", "a", (10, 0), (20, 0))
    cdb.insert("gt", "calib", "b", (30, 5))
    return cdb


def test_start_is_inclusive_and_end_exclusive(tag):
    assert tag.urls("gt", 9, 10**9) == {}
    assert tag.urls("gt", 10, 0) == {"calib": "a"}
    assert tag.urls("gt", 19, 10**12) == {"calib": "a"}
    assert tag.urls("gt", 20, 0) == {}


def test_an_open_iov_lasts_for_ever(tag):
    assert tag.urls("gt", 30, 4) == {}
    assert tag.urls("gt", 30, 5) == {"calib": "b"}
    assert tag.urls("gt", 10**15, 0) == {"calib": "b"}


def test_a_point_between_iovs_has_no_payload(tag):
    assert tag.urls("gt", 25, 0) == {}


def test_the_answer_lists_url_checksum_size_and_the_iov(tag):
    rows = tag.call("get", "payloadiovs/?gtName=gt&majorIOV=31&minorIOV=0")
    assert rows == [["calib", "b", "c-b", None, 30, 5, OPEN, OPEN]]


def test_minor_counts_only_within_the_same_major(cdb):
    cdb.gt("gt")
    cdb.pt("calib")
    cdb.insert("gt", "calib", "x", (5, 100), (6, 3))
    assert cdb.urls("gt", 5, 99) == {}
    assert cdb.urls("gt", 5, 100) == {"calib": "x"}
    assert cdb.urls("gt", 5, 10**9) == {"calib": "x"}  # a later LB of run 5
    assert cdb.urls("gt", 6, 0) == {"calib": "x"}  # run 6 before its LB 3
    assert cdb.urls("gt", 6, 2) == {"calib": "x"}
    assert cdb.urls("gt", 6, 3) == {}


def test_each_payload_type_is_answered_for_itself(tag):
    tag.pt("align")
    tag.insert("gt", "align", "z", (0, 0), (15, 0))
    assert tag.urls("gt", 12, 0) == {"calib": "a", "align": "z"}
    assert tag.urls("gt", 16, 0) == {"calib": "a"}
    assert tag.urls("gt", 25, 0) == {}


def test_bad_lookups_are_400_and_an_unknown_tag_404(tag, anon):
    api = "/api/cdb_rest/payloadiovs/"
    r = anon.get(api, {"gtName": "gt", "majorIOV": "x", "minorIOV": "0"})
    assert r.status_code == 400 and "majorIOV" in r.json()["detail"]
    r = anon.get(api, {"gtName": "gt", "majorIOV": "1"})
    assert r.status_code == 400 and "minorIOV" in r.json()["detail"]
    r = anon.get(api, {"gtName": "gt", "majorIOV": "-1", "minorIOV": "0"})
    assert r.status_code == 400
    r = anon.get(api, {"majorIOV": "1", "minorIOV": "0"})
    assert r.status_code == 400 and "gtName" in r.json()["detail"]
    r = anon.get(api, {"gtName": "nope", "majorIOV": "1", "minorIOV": "0"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_a_lookup_is_one_query_however_many_iovs(cdb, anon, django_assert_num_queries):
    cdb.gt("gt")
    for t in ("calib", "align", "beamspot"):
        cdb.pt(t)
        cdb.insert("gt", t, f"{t}-0", (0, 0), (1, 0))
    pl = actions.get_payload_list(cdb.call("get", "gtPayloadLists/gt")["calib"])
    PayloadIOV.objects.bulk_create(
        PayloadIOV(
            payload_list=pl,
            payload_url=f"calib/{run}.json",
            checksum="x",
            major_iov=run,
            minor_iov=0,
            major_iov_end=run + 1,
            minor_iov_end=0,
        )
        for run in range(1, 5000)
    )
    for run in (0, 700, 4999, 5000):
        with django_assert_num_queries(1):
            r = anon.get(f"/api/cdb_rest/payloadiovs/?gtName=gt&majorIOV={run}&minorIOV=7")
        assert r.status_code == 200
    assert {row[0]: row[1] for row in r.json()} == {}
    r = anon.get("/api/cdb_rest/payloadiovs/?gtName=gt&majorIOV=700&minorIOV=7")
    assert {row[0]: row[1] for row in r.json()} == {"calib": "calib/700.json"}


def test_the_lookup_probes_the_index(cdb):
    cdb.gt("gt")
    cdb.pt("calib")
    cdb.insert("gt", "calib", "a", (0, 0))
    pl = PayloadIOV.objects.get().payload_list
    PayloadIOV.objects.bulk_create(
        PayloadIOV(payload_list=pl, payload_url="u", checksum="", major_iov=r, minor_iov=0)
        for r in range(1, 5000)
    )
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("ANALYZE")
            cursor.execute("EXPLAIN QUERY PLAN " + actions._lookup_sql(), [5, 0, 5, 0, "gt"])
            plan = " ".join(str(part) for row in cursor.fetchall() for part in row)
            # a range search of the unique index's row values, not a scan
            assert "INDEX" in plan and "(payload_list_id=? AND (major_iov,minor_iov)<" in plan
        else:
            cursor.execute("ANALYZE")
            cursor.execute("EXPLAIN " + actions._lookup_sql(), [5, 0, 5, 0, "gt"])
            plan = " ".join(str(part) for row in cursor.fetchall() for part in row)
            assert "one_iov_start_per_list" in plan, plan
            assert "Seq Scan on conditions_payloadiov" not in plan, plan
