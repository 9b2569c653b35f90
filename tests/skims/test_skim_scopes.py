"""Where a skim may write its output: a physicist's own scope (``user.<name>.*``) on storage
elements open to users; an admin anywhere. Nothing is queued when refused."""

import pytest
from rest_framework.test import APIClient

from dmu import actions
from skims.models import SkimJob

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


@pytest.fixture
def closed_se(tmp_path):
    root = tmp_path / "closed"
    root.mkdir()
    return actions.do_add_storage_element("CLOSED", root.as_uri(), "admins only")


def skim_body(collection, **extra) -> dict:
    return {"collections": [collection.pk], "selection": "n_muon >= 2", **extra}


def test_a_physicists_skim_writes_only_their_scope_on_storage_open_to_users(
    hzz_tags, closed_se, physicist
):
    c = api(physicist)

    other = c.post("/api/skims/", skim_body(hzz_tags, output_name="user.bob.x"), format="json")
    closed = c.post(
        "/api/skims/",
        skim_body(hzz_tags, output_name="user.phys.x", output_se="CLOSED"),
        format="json",
    )
    mine = c.post("/api/skims/", skim_body(hzz_tags, output_name="user.phys.x"), format="json")

    assert (other.status_code, other.json()["where"]) == (403, "dataset name")
    assert "user.phys.<name>" in other.json()["detail"]
    assert (closed.status_code, closed.json()["where"]) == (403, "storage element")
    assert "those that are: LOCAL" in closed.json()["detail"]
    assert mine.status_code == 201, mine.json()
    assert list(SkimJob.objects.values_list("output_name", flat=True)) == ["user.phys.x"]


def test_an_admin_skims_into_any_scope_and_storage(hzz_tags, closed_se, siteadmin):
    from skims import actions as skim_actions

    skim = skim_actions.check_submit_skim(
        user=siteadmin,
        inputs=[skim_actions.InputSpec(hzz_tags.dataset, hzz_tags)],
        selection="n_muon >= 2",
        output_name="data24.official_skim",
        output_se=closed_se,
    )
    assert skim.output_se == closed_se
