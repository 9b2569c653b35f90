"""Fixtures for the skim service: demo datasets with built TAG collections, split files."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from tests.conftest import HZZ, put_file


def build_tags(dataset, schema_name: str):
    """Build the dataset's TAG collection with a shipped schema, straight into the store."""
    import yaml
    from django.utils import timezone

    from tagdb.actions import get_store
    from tagdb.models import CollectionState, TagCollection, TagSchema
    from tagdb.schema import builtin_schemas, compute_tags

    schema = builtin_schemas()[schema_name]
    row, _ = TagSchema.objects.get_or_create(
        name=schema.name,
        version=schema.version,
        defaults={"tree": schema.tree, "definition": yaml.safe_dump(schema.to_dict())},
    )
    collection, _ = TagCollection.objects.get_or_create(dataset=dataset, schema=row)
    builder = get_store().begin_build(collection.key, schema)
    for f in dataset.files.all():
        replica = f.replicas.select_related("storage_element").first()
        path = replica.storage_element.endpoint().local_path(replica.path)
        builder.load(str(f.guid), compute_tags(schema, path))
    info = builder.publish()
    collection.state = CollectionState.READY
    collection.n_events, collection.n_files, collection.built_at = (
        info.n_events,
        info.n_files,
        timezone.now(),
    )
    collection.save()
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
