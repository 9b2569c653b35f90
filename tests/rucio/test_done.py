"""The issue's "done when": a dataset registered in the real Rucio is imported, tagged and
skimmed, and the skim's output is visible through the Rucio client."""

from __future__ import annotations

import uuid

import pytest

from dmu import actions as dmu_actions
from dmu import catalogs
from dmu.models import RucioRegistration, RucioState
from dmu.tasks import register_in_rucio
from skims import actions
from tests.conftest import HZZ
from tests.skims.test_skim_correctness import run_skim

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rucio_dataset_is_imported_tagged_skimmed_and_its_skim_registered_in_rucio(
    rucio, scope, site, physicist
):
    from tagdb import actions as tag_actions

    # A dataset that only Rucio knows.
    name = f"{scope}.hzz"
    rel = site.put(HZZ, f"{name}/uproot-HZZ.root")
    origin, _ = dmu_actions.check_register_dataset(name, site.se, [rel])
    catalogs.RucioCatalog(rucio).register(origin)
    origin.delete()

    dataset, added = catalogs.check_import_from_rucio(scope, name, user=physicist)
    assert added == 1

    collection = tag_actions.get_or_create_collection(dataset, tag_actions.get_schema("hzz"))
    tag_actions.check_build_now(collection)
    collection.refresh_from_db()
    assert collection.state == "ready"

    if "user" not in rucio.list_scopes():
        rucio.add_scope(account=rucio.account, scope="user")
    out_name = f"user.phys.dimuon_{uuid.uuid4().hex[:8]}"
    skim = actions.check_submit_skim(
        user=physicist,
        inputs=[actions.InputSpec(dataset, collection)],
        selection="n_muon >= 2",
        output_name=out_name,
        output_se=site.se,
    )
    skim = run_skim(skim)
    assert skim.state == "succeeded", skim.message
    assert skim.output_dataset.name == out_name

    reg = RucioRegistration.objects.get(dataset=skim.output_dataset)
    assert reg.state == RucioState.PENDING
    register_in_rucio.apply(args=[skim.output_dataset.pk])  # what the worker runs
    reg.refresh_from_db()
    assert reg.state == RucioState.REGISTERED, reg.last_error

    (f,) = skim.output_dataset.files.all()
    (there,) = list(rucio.list_files("user", out_name))
    assert (there["name"], there["bytes"], there["adler32"]) == (f.lfn, f.bytes, f.adler32)
    (replica,) = list(rucio.list_replicas([{"scope": "user", "name": out_name}]))
    assert site.rse in replica["rses"]
    assert rucio.get_did("user", out_name)["type"].upper() == "DATASET"
