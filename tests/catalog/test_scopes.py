"""Where a physicist may register files (the ``dmu put`` path): datasets of their own scope
(``user.<name>.*``), on storage elements open to users, at the place ``dmu put`` puts a file;
admins register anywhere. Skim outputs obey the same rule (tests/skims/test_skim_scopes.py)."""

import pytest
from rest_framework.test import APIClient

from dmu import actions
from dmu.models import Dataset
from dmu.storage import deterministic_path
from tests.conftest import HZZ, put_file

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


def register(user, dataset: str, se: str, path: str):
    return api(user).post(
        "/api/datasets/register/",
        {"dataset": dataset, "storage_element": se, "paths": [path]},
        format="json",
    )


def test_a_physicist_registers_a_file_put_in_their_own_scope(local_se, storage_root, physicist):
    rel = put_file(storage_root, HZZ, deterministic_path("user", "hzz.root"))

    r = register(physicist, "user.phys.mine", "LOCAL", rel)

    assert r.status_code == 201, r.json()
    assert Dataset.objects.get(name="user.phys.mine").files.count() == 1


@pytest.mark.parametrize(
    ("dataset", "se", "path", "where"),
    [
        ("user.other.theirs", "LOCAL", deterministic_path("user", "hzz.root"), "dataset name"),
        ("data24.official", "LOCAL", deterministic_path("data24", "hzz.root"), "dataset name"),
        ("user.phys", "LOCAL", deterministic_path("user", "hzz.root"), "dataset name"),
        ("user.physics.x", "LOCAL", deterministic_path("user", "hzz.root"), "dataset name"),
        ("user.phys.x", "CLOSED", deterministic_path("user", "hzz.root"), "storage element"),
        ("user.phys.x", "LOCAL", "demo/uproot-HZZ.root", "demo/uproot-HZZ.root"),
    ],
)
def test_a_physicist_cannot_register_outside_their_scope_storage_or_place(
    demo_datasets, storage_root, closed_se, physicist, dataset, se, path, where
):
    put_file(storage_root, HZZ, path)

    r = register(physicist, dataset, se, path)

    assert r.status_code == 403, r.json()
    assert r.json()["error"] == "forbidden" and r.json()["where"] == where
    assert not Dataset.objects.filter(name=dataset).exists()


def test_an_admin_registers_anywhere(local_se, storage_root, closed_se, siteadmin, tmp_path):
    put_file(storage_root, HZZ, "official/hzz.root")
    put_file(tmp_path / "closed", HZZ, "official/hzz.root")

    on_local = register(siteadmin, "data24.official", "LOCAL", "official/hzz.root")
    on_closed = register(siteadmin, "data24.official", "CLOSED", "official/hzz.root")

    assert (on_local.status_code, on_closed.status_code) == (201, 200)
    assert Dataset.objects.get(name="data24.official").files.get().replicas.count() == 2


def test_an_operator_without_the_physicist_role_registers_nothing(local_se, operator):
    r = register(operator, "user.oper.x", "LOCAL", deterministic_path("user", "x.root"))
    assert r.status_code == 403


def test_a_rerun_by_an_operator_goes_to_the_operators_scope(operator, physicist):
    assert actions.name_for_user(operator, "user.phys.dimuon") == "user.oper.dimuon"
    assert actions.name_for_user(physicist, "user.phys.dimuon") == "user.phys.dimuon"
    assert actions.name_for_user(operator, "data24.dimuon") == "user.oper.dimuon"
