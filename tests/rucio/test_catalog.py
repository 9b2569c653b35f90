"""Registering portal datasets in a real Rucio and importing Rucio datasets into the portal."""

from __future__ import annotations

import pytest

from dmu import actions, catalogs
from dmu.models import Dataset, File, RucioRegistration, RucioState
from dss.errors import ChecksumMismatch, InvalidInput, NotFound
from tests.conftest import HZZ, ZMUMU


def register_on_site(site, name: str, files) -> Dataset:
    rels = [site.put(src, f"{name}/{src.name}") for src in files]
    dataset, _ = actions.check_register_dataset(name, site.se, rels)
    return dataset


def test_a_portal_dataset_is_registered_with_guid_bytes_adler32_and_replicas(
    rucio, scope, site, django_capture_on_commit_callbacks
):
    dataset = register_on_site(site, f"{scope}.demo", [HZZ, ZMUMU])
    with django_capture_on_commit_callbacks(execute=False):
        reg = catalogs.queue_rucio_registration(dataset)
    assert reg.state == RucioState.PENDING

    assert catalogs.do_register_in_rucio(dataset.pk) is None

    reg.refresh_from_db()
    assert (reg.state, reg.attempts, reg.files_registered) == (RucioState.REGISTERED, 1, 2)
    assert reg.did == f"{scope}:{scope}.demo" and reg.rse == site.rse
    files = {f["name"]: f for f in rucio.list_files(scope, f"{scope}.demo")}
    for f in dataset.files.all():
        there = files[f.lfn]
        assert (there["bytes"], there["adler32"]) == (f.bytes, f.adler32)
        assert there["guid"].replace("-", "").lower() == f.guid.hex
    replicas = list(rucio.list_replicas([{"scope": scope, "name": f"{scope}.demo"}]))
    assert {r["name"] for r in replicas} == set(files)
    assert all(site.rse in r["rses"] for r in replicas)


def test_registering_twice_changes_nothing_in_rucio(rucio, scope, site):
    dataset = register_on_site(site, f"{scope}.twice", [HZZ])
    catalog = catalogs.RucioCatalog(rucio)
    assert catalog.register(dataset) == 1
    assert catalog.register(dataset) == 0
    assert len(list(rucio.list_files(scope, f"{scope}.twice"))) == 1


def test_a_rucio_dataset_is_found_shown_and_imported_with_checksums_verified(rucio, scope, site):
    source = register_on_site(site, f"{scope}.origin", [HZZ])
    catalogs.RucioCatalog(rucio).register(source)
    # Rucio has it; the portal forgets it, then imports it back from Rucio.
    File.objects.filter(dataset=source).delete()
    source.delete()

    found = catalogs.RucioCatalog().search(scope, "*orig*")
    assert [d.did for d in found] == [f"{scope}:{scope}.origin"]
    assert not found[0].in_portal
    files = catalogs.RucioCatalog().files(scope, f"{scope}.origin")
    assert [f.name for f in files] == ["uproot-HZZ.root"]
    assert site.rse in files[0].replicas

    dataset, added = catalogs.check_import_from_rucio(scope, f"{scope}.origin")
    assert (dataset.name, added) == (f"{scope}.origin", 1)
    f = dataset.files.get()
    assert (f.bytes, f.adler32) == (files[0].bytes, files[0].adler32)
    assert f.replicas.get().storage_element == site.se
    reg = RucioRegistration.objects.get(dataset=dataset)
    assert reg.state == RucioState.REGISTERED


def test_an_import_whose_replica_disagrees_with_rucio_records_nothing(rucio, scope, site):
    rel = site.put(HZZ, "bad/uproot-HZZ.root")
    rucio.add_dataset(scope=scope, name=f"{scope}.lying")
    rucio.add_replicas(
        rse=site.rse,
        files=[
            {
                "scope": scope,
                "name": "uproot-HZZ.root",
                "bytes": HZZ.stat().st_size,
                "adler32": "00000001",
                "pfn": site.se.url + "/" + rel,
            }
        ],
    )
    rucio.attach_dids(scope, f"{scope}.lying", [{"scope": scope, "name": "uproot-HZZ.root"}])

    with pytest.raises(ChecksumMismatch) as e:
        catalogs.check_import_from_rucio(scope, f"{scope}.lying")
    assert "00000001" in e.value.message and e.value.where == f"{scope}:{scope}.lying"
    assert not Dataset.objects.filter(name=f"{scope}.lying").exists()


def test_an_unknown_scope_is_named(rucio):
    with pytest.raises(NotFound) as e:
        catalogs.RucioCatalog().search("nosuchscope", "*")
    assert "nosuchscope" in e.value.message and e.value.where == "scope"


def test_an_unknown_dataset_is_named(rucio, scope):
    with pytest.raises(NotFound) as e:
        catalogs.RucioCatalog().files(scope, "nothing.here")
    assert e.value.where == f"{scope}:nothing.here"


def test_a_name_rucio_rejects_is_invalid_input_naming_it(rucio, scope):
    with pytest.raises(InvalidInput) as e:
        with catalogs.rucio_errors(where=f"{scope}:bad+name"):
            rucio.add_dataset(scope=scope, name="bad+name!")
    assert "Rucio rejected the name" in e.value.message
    assert "does not match" in e.value.message and "schema[" not in e.value.message


def test_a_pattern_with_other_characters_is_refused_before_asking_rucio(rucio):
    with pytest.raises(InvalidInput) as e:
        catalogs.RucioCatalog().search("data", "a b")
    assert e.value.where == "name"


def test_wrong_credentials_are_a_clear_error(rucio, settings):
    settings.DSS_RUCIO_PASSWORD = "not-the-password"
    with pytest.raises(catalogs.RucioError) as e:
        catalogs.RucioCatalog().search("data", "*")
    assert e.value.code == "rucio_auth"
    assert "refused the credentials of account" in e.value.message
    assert e.value.where == settings.DSS_RUCIO_URL
