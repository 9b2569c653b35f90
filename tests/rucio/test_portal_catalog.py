"""The portal's own tables behind the same catalog interface as Rucio (no server needed)."""

from __future__ import annotations

import pytest

from dmu import actions, catalogs
from dss.errors import InvalidInput, NotFound
from tests.conftest import HZZ, put_file


@pytest.fixture
def portal(db, local_se, storage_root, settings):
    settings.DSS_RUCIO_URL = ""
    for name in ("demo.hzz", "demo.hzz_copy", "other.hzz"):
        rel = put_file(storage_root, HZZ, f"{name}/uproot-HZZ.root")
        actions.check_register_dataset(name, local_se, [rel])
    return catalogs.get_catalog()


def test_without_rucio_the_catalog_is_the_portals(portal):
    assert isinstance(portal, catalogs.PortalCatalog)


def test_it_searches_by_scope_and_pattern(portal):
    assert [d.did for d in portal.search("demo", "*")] == ["demo:demo.hzz", "demo:demo.hzz_copy"]
    assert [d.name for d in portal.search("demo", "*copy")] == ["demo.hzz_copy"]
    with pytest.raises(InvalidInput):
        portal.search("demo", "a b")


def test_it_lists_files_with_replicas_by_storage_element(portal, local_se):
    (f,) = portal.files("demo", "demo.hzz")
    assert f.name == "uproot-HZZ.root" and len(f.adler32) == 8
    assert list(f.replicas) == [local_se.name]
    with pytest.raises(NotFound):
        portal.files("other", "demo.hzz")
