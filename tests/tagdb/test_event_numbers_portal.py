"""A dataset whose event numbers go up to 2^64 - 1, through the portal: registered, tagged
with the automatic schema, selected, listed as CSV and JSON and picked, all unsigned."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import uproot
from rest_framework.test import APIClient

from dss.errors import InvalidInput
from tests.conftest import api_token

pytestmark = pytest.mark.django_db

TOP = 2**64 - 1
HALF = 2**63
EVENTS = [5, HALF - 1, HALF, TOP - 1, TOP]


@pytest.fixture
def numbered(local_se, storage_root):
    from dmu import actions as dmu_actions
    from tagdb import actions

    path = storage_root / "big" / "numbers.root"
    path.parent.mkdir()
    with uproot.recreate(path) as f:
        tree = f.mktree(
            "events", {"RunNumber": np.uint32, "EventNumber": np.uint64, "x": np.float32}
        )
        tree.extend(
            {
                "RunNumber": np.full(len(EVENTS), 300000, dtype=np.uint32),
                "EventNumber": np.array(EVENTS, dtype=np.uint64),
                "x": np.arange(len(EVENTS), dtype=np.float32),
            }
        )
    dataset, _ = dmu_actions.check_register_dataset(
        "data.bignumbers", local_se, ["big/numbers.root"]
    )
    collection = actions.get_or_create_collection(dataset, actions.do_auto_schema(dataset))
    actions.check_build_now(collection)
    collection.refresh_from_db()
    yield collection
    actions.get_store().drop(collection.key)


@pytest.fixture
def api(physicist) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    return client


def test_selections_lists_and_picks_show_event_numbers_unsigned(api, numbered):
    base = f"/api/tags/{numbered.pk}"
    r = api.post(f"{base}/count", {"selection": "event == 18446744073709551615"}, format="json")
    assert r.status_code == 200 and r.json()["count"] == 1
    r = api.post(f"{base}/count", {"selection": "event > 9223372036854775807"}, format="json")
    assert r.json()["count"] == 3

    r = api.post(f"{base}/events", {"selection": "event >= 9223372036854775807"}, format="json")
    assert [e["event"] for e in r.json()["events"]] == [HALF - 1, HALF, TOP - 1, TOP]
    assert b'"event":18446744073709551615' in r.content.replace(b" ", b"")

    r = api.post(f"{base}/events", {"selection": "x >= 3", "format": "csv"}, format="json")
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert [(row["run"], row["event"]) for row in rows] == [
        ("300000", "18446744073709551614"),
        ("300000", "18446744073709551615"),
    ]

    r = api.post(
        f"{base}/pick",
        {"events": "300000 18446744073709551615\n300000 9223372036854775808\n300000 6\n"},
        format="json",
    )
    body = r.json()
    assert r.status_code == 200
    assert sorted((p["event"], p["entry"]) for p in body["found"]) == [(HALF, 2), (TOP, 4)]
    assert body["missing"] == [[300000, 6]]
    r = api.post(f"{base}/pick", {"events": [[300000, TOP - 1]]}, format="json")
    assert [p["entry"] for p in r.json()["found"]] == [3]

    r = api.post(f"{base}/pick", {"events": "300000 18446744073709551616\n"}, format="json")
    assert r.status_code == 400
    assert r.json()["where"] == "line 1"
    assert "event 18446744073709551616 is not a run or event number" in r.json()["detail"]
    r = api.post(f"{base}/pick", {"events": [[-1, 5]]}, format="json")
    assert r.status_code == 400 and r.json()["where"] == "item 1"

    attributes = {a["name"]: a for a in api.get(base).json()["attributes"]}
    assert (attributes["event"]["min"], attributes["event"]["max"]) == (5, TOP)


def test_event_pairs_beyond_the_unsigned_range_name_their_line(db):
    from tagdb import actions

    assert actions.parse_event_pairs(f"1 {TOP}\n") == [(1, TOP)]
    with pytest.raises(InvalidInput) as caught:
        actions.parse_event_pairs(f"1 2\n1 {TOP + 1}\n")
    assert caught.value.where == "line 2"
