"""Fixtures for the TAG DB's portal tests (pages, API, builds, CLI).

Imported by name in the test modules that use them, so that they stay out of the store
tests' conftest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HZZ, ZMUMU, put_file


@dataclass
class Tagged:
    """The demo datasets with their TAGs built."""

    hzz: object
    zmumu: object


def build_demo_tags(hzz_dataset, zmumu_dataset) -> Tagged:
    from tagdb import actions

    cols = actions.check_build_builtin([hzz_dataset.name, zmumu_dataset.name], lambda _: None)
    return Tagged(hzz=cols[0], zmumu=cols[1])


def drop_tags(*collections) -> None:
    from tagdb import actions

    for c in collections:
        actions.get_store().drop(c.key)


@pytest.fixture
def tagged(demo_datasets) -> Tagged:
    """demo.hzz and demo.zmumu with their TAGs built (this test only)."""
    built = build_demo_tags(*demo_datasets)
    yield built
    drop_tags(built.hzz, built.zmumu)


@pytest.fixture(scope="module")
def tagged_module(django_db_setup, django_db_blocker, tmp_path_factory) -> Tagged:
    """demo.hzz and demo.zmumu registered and tagged once for a whole module: the rows are
    committed, each test's transaction rolls back to them, and they go at the end."""
    from dmu import actions as dmu_actions
    from dmu.models import Dataset, StorageElement
    from tagdb.models import TagSchema

    with django_db_blocker.unblock():
        root = Path(tmp_path_factory.mktemp("tag-storage"))
        se = dmu_actions.do_add_storage_element("TAGTEST", root.as_uri(), "TAG tests")
        put_file(root, HZZ, "demo/uproot-HZZ.root")
        put_file(root, ZMUMU, "demo/uproot-Zmumu.root")
        hzz, _ = dmu_actions.check_register_dataset("demo.hzz", se, ["demo/uproot-HZZ.root"])
        zmm, _ = dmu_actions.check_register_dataset("demo.zmumu", se, ["demo/uproot-Zmumu.root"])
        built = build_demo_tags(hzz, zmm)
    yield built
    with django_db_blocker.unblock():
        drop_tags(built.hzz, built.zmumu)
        Dataset.objects.filter(pk__in=[hzz.pk, zmm.pk]).delete()
        TagSchema.objects.all().delete()
        StorageElement.objects.filter(pk=se.pk).delete()


def client_for(user):
    from django.test import Client

    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def lumi(local_se, storage_root):
    """data99.lumi: events with run, luminosity-block and event numbers (see
    ``tests.tagdb.goodruns_data``), registered and tagged with the automatic schema."""
    from dmu import actions as dmu_actions
    from tagdb import actions
    from tests.tagdb.goodruns_data import write_lumi_file

    write_lumi_file(storage_root / "data99" / "lumi.root")
    dmu_actions.check_register_dataset("data99.lumi", local_se, ["data99/lumi.root"])
    (collection,) = actions.check_build_builtin(["data99.lumi"], lambda _: None)
    yield collection
    drop_tags(collection)
