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


# Bins of the cutflow histogram that the files with metadata carry, as analyses label them.
CUTFLOW = ["all", "trigger", "two muons", "met > 20"]


def cutflow_histogram(counts, labels=CUTFLOW):
    """A TH1D with one labelled bin per step, as uproot writes it (sumw2 = counts)."""
    from uproot.writing import identify as root

    counts = np.asarray(counts, dtype=np.float64)
    axis = root.to_TAxis(
        "xaxis",
        "",
        len(counts),
        0.0,
        float(len(counts)),
        fLabels=root.to_THashList([root.to_TObjString(label) for label in labels]),
    )
    data = np.concatenate([[0.0], counts, [0.0]])
    return root.to_TH1x(
        "cutflow",
        "cutflow",
        data,
        float(counts[0]),
        float(counts[0]),
        float(counts[0]),
        0.0,
        0.0,
        data.copy(),
        axis,
    )


def write_with_metadata(storage_root, folder: str = "nano", n_parts: int = 6, tree="Events"):
    """HZZ split into ``n_parts`` files as an analysis framework leaves them: the events in
    ``tree``, a ``Runs`` tree (one entry: run, events, sum of weights), a labelled
    ``cutflow`` histogram, a 2-D histogram ``hists/met`` and a note (a TObjString)."""
    arrays = uproot.open(HZZ)["events"].arrays(library="ak")
    bounds = np.linspace(0, len(arrays), n_parts + 1).astype(int)
    rels = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        events = arrays[a:b]
        rel = f"{folder}/nano_{i}.root"
        path = storage_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        met = np.hypot(events["MET_px"], events["MET_py"])
        two = events["NMuon"] >= 2
        steps = [
            len(events),
            int(ak.sum(events["triggerIsoMu24"])),
            int(ak.sum(two)),
            int(ak.sum(two & (met > 20))),
        ]
        with uproot.recreate(path) as f:
            f[tree] = {name: events[name] for name in events.fields}
            f["Runs"] = {
                "run": np.array([1000 + i], dtype=np.int32),
                "genEventCount": np.array([len(events)], dtype=np.int64),
                "genEventSumw": np.array([float(ak.sum(events["EventWeight"]))]),
            }
            f["cutflow"] = cutflow_histogram(steps)
            f["hists/met"] = np.histogram2d(
                ak.to_numpy(events["MET_px"]),
                ak.to_numpy(events["MET_py"]),
                bins=[4, 5],
                range=[[-100, 100], [-100, 100]],
            )
            f["notes"] = "written by the tests"
        rels.append(rel)
    return rels


@pytest.fixture
def nano(local_se, storage_root):
    """A dataset of six files with metadata objects beside the events (see
    write_with_metadata), registered with its tree Events."""
    from dmu import actions

    dataset, _ = actions.check_register_dataset(
        "demo.nano", local_se, write_with_metadata(storage_root), tree="Events"
    )
    return dataset


def input_events(dataset, tree: str = "Events") -> list[ak.Array]:
    """The events of each file of ``dataset``, in file order, read by uproot itself."""
    found = []
    for f in dataset.files.order_by("lfn"):
        r = f.replicas.select_related("storage_element").get()
        with uproot.open(r.storage_element.endpoint().local_path(r.path)) as root:
            found.append(root[tree].arrays(library="ak"))
    return found
