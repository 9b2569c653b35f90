"""A file damaged on its storage element after registration fails the TAG build or skim that
meets it, naming the file and the branch, and the API answers with JSON, never a 500."""

from __future__ import annotations

import numpy as np
import pytest
from rest_framework.test import APIClient

from dmu.eventfiles import open_event_file
from dss.errors import BadEventFile
from skims.eventio import read_entries
from tests.conftest import HZZ, api_token, corrupt_basket, put_file, wait_for
from tests.skims.conftest import build_tags

pytestmark = pytest.mark.django_db(transaction=True)


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def ended(client: APIClient, path: str) -> dict | None:
    r = client.get(path)
    assert r.status_code == 200, r.content
    body = r.json()
    return body if body["state"] in ("succeeded", "failed", "partial", "cancelled") else None


def test_a_skim_reading_a_damaged_basket_names_the_branch_and_entries(tmp_path):
    path = tmp_path / "hzz.root"
    path.write_bytes(HZZ.read_bytes())
    corrupt_basket(path, "Muon_Px")
    with open_event_file(str(path), "SE:hzz.root") as f:
        tree = f.tree("events")
        # Branches whose baskets are intact still read.
        assert len(read_entries(tree, ["MET_px", "NMuon"], np.array([0, 7]), "SE:hzz.root")) == 2
        with pytest.raises(BadEventFile) as caught:
            read_entries(tree, ["MET_px", "Muon_Px"], np.array([0, 7]), "SE:hzz.root")
    assert caught.value.where == "SE:hzz.root"
    assert caught.value.message.startswith("branch 'Muon_Px' cannot be read (entries 0-")


def test_tag_builds_and_skims_of_a_file_damaged_in_place_fail_it_without_a_server_error(
    celery_worker, demo_datasets, local_se, physicist, storage_root
):
    from dmu import actions as dmu_actions
    from tagdb import actions as tag_actions

    hzz, _ = demo_datasets
    scan_only, _ = dmu_actions.check_register_dataset(
        "demo.hzz_untagged", local_se, [put_file(storage_root, HZZ, "untagged/hzz.root")]
    )
    collection = build_tags(hzz, "hzz")  # while the file is still whole
    try:
        path = storage_root / "demo" / "uproot-HZZ.root"
        size = path.stat().st_size
        corrupt_basket(path, "Muon_Px")
        corrupt_basket(storage_root / "untagged" / "hzz.root", "Muon_Px")
        assert path.stat().st_size == size
        client = api(physicist)

        r = client.post("/api/tags/build", {"dataset": "demo.hzz", "schema": "hzz"}, format="json")
        assert r.status_code == 202, r.content
        build = wait_for(
            lambda: ended(client, f"/api/tags/builds/{r.json()['id']}"),
            timeout=120,
            what="the TAG build to end",
        )
        assert build["state"] == "failed"
        assert "uproot-HZZ.root" in build["message"]
        assert "branch 'Muon_Px' cannot be read" in build["message"]
        assert "internal error" not in build["message"]
        # The collection keeps the TAGs built before the damage.
        assert tag_actions.count(collection, "n_muon >= 2").count == 1413

        # A dataset without TAGs is scanned when the skim is planned.
        r = client.post(
            "/api/skims/",
            {
                "datasets": [scan_only.name],
                "selection": "n_muon >= 2",
                "output_name": "user.phys.damaged_scan",
            },
            format="json",
        )
        assert r.status_code == 201, r.content
        skim = wait_for(
            lambda: ended(client, f"/api/skims/{r.json()['id']}/"),
            timeout=120,
            what="the scanning skim to end",
        )
        assert skim["state"] == "failed"
        assert "untagged/hzz.root" in skim["message"]
        assert "branch 'Muon_Px' cannot be read" in skim["message"]

        # A skim from TAGs finds the input's bytes differ from the catalog before reading.
        r = client.post(
            "/api/skims/",
            {
                "collections": [collection.pk],
                "selection": "n_muon >= 2",
                "output_name": "user.phys.damaged_tags",
            },
            format="json",
        )
        assert r.status_code == 201, r.content
        skim = wait_for(
            lambda: ended(client, f"/api/skims/{r.json()['id']}/"),
            timeout=120,
            what="the skim from TAGs to end",
        )
        assert skim["state"] == "failed"
        assert "uproot-HZZ.root has adler32" in skim["message"]
        assert "internal error" not in skim["message"]
    finally:
        tag_actions.get_store().drop(collection.key)
