"""Fixtures for the skim service: demo datasets with built TAG collections, split files."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from tests.conftest import HZZ, put_file


def build_tags(dataset, schema_name: str):
    """Build the dataset's TAG collection with a shipped schema, as the TAG service does."""
    from tagdb import actions as tag_actions

    collection = tag_actions.get_or_create_collection(dataset, tag_actions.get_schema(schema_name))
    tag_actions.check_build_now(collection)
    collection.refresh_from_db()
    return collection


@pytest.fixture
def hzz_tags(demo_datasets):
    hzz, _ = demo_datasets
    return build_tags(hzz, "hzz")


@pytest.fixture
def zmumu_tags(demo_datasets):
    _, zmumu = demo_datasets
    return build_tags(zmumu, "zmumu")


def write_split(storage_root, n_parts: int = 3) -> list[str]:
    """HZZ split into ``n_parts`` ROOT files of consecutive entries, on the local SE."""
    arrays = uproot.open(HZZ)["events"].arrays(library="ak")
    bounds = np.linspace(0, len(arrays), n_parts + 1).astype(int)
    rels = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        rel = f"split/hzz_{i}.root"
        path = storage_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with uproot.recreate(path) as f:
            f["events"] = {name: arrays[name][a:b] for name in arrays.fields}
        rels.append(rel)
    return rels


@pytest.fixture
def split_hzz(local_se, storage_root):
    from dmu import actions

    rels = write_split(storage_root)
    dataset, _ = actions.check_register_dataset("demo.hzz_split", local_se, rels)
    return dataset


def same_events(a: ak.Array, b: ak.Array) -> bool:
    """Equal values in every field, jagged ones included."""
    if len(a) != len(b) or set(a.fields) - set(b.fields):
        return False
    return all(
        ak.all(ak.ravel(a[f]) == ak.ravel(b[f]))
        and (a[f].ndim == 1 or ak.all(ak.num(a[f]) == ak.num(b[f])))
        for f in a.fields
    )


@pytest.fixture
def hzz_copy(local_se, storage_root):
    return put_file(storage_root, HZZ, "copy/hzz.root")
