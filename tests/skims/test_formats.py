"""Every format the portal writes (ROOT TTree, ROOT RNTuple, Parquet) registers, gets TAGs
with the automatic schema and skims, event for event, and a skim's output does the same."""

from __future__ import annotations

import hashlib
import uuid

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot
from rest_framework.test import APIClient

from dmu import actions as dmu_actions
from dmu.eventfiles import open_event_file
from dss.errors import BadEventFile, DSSError
from skims import actions
from skims.eventio import EXTENSIONS, write_events
from tagdb import actions as tag_actions
from tests.conftest import HZZ, api_token
from tests.skims.conftest import same_events
from tests.skims.test_skim_correctness import outputs, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)

FORMATS = ["root", "rntuple", "parquet"]
# Jagged muon and jet branches, their counts, and flat MET, trigger and weight.
BRANCHES = [
    "NMuon",
    "Muon_Px",
    "Muon_Py",
    "Muon_Pz",
    "Muon_Charge",
    "NJet",
    "Jet_Px",
    "Jet_ID",
    "MET_px",
    "MET_py",
    "triggerIsoMu24",
    "EventWeight",
]
SELECTION = "nmuon >= 2 && met_px > 0"


def demo_events() -> ak.Array:
    return uproot.open(HZZ)["events"].arrays(BRANCHES, library="ak")


def expected_events(events: ak.Array) -> ak.Array:
    """What awkward itself keeps under SELECTION."""
    return events[(events["NMuon"] >= 2) & (events["MET_px"] > 0)]


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


@pytest.fixture
def tag_collections():
    """Collections made by a test, dropped from the TAG DB afterwards."""
    made = []
    yield made
    for collection in made:
        tag_actions.get_store().drop(collection.key)


def write_dataset(storage_root, local_se, fmt: str, name: str, batch: int = 1000):
    """The demo branches written in ``fmt`` (clusters of ``batch`` entries) and registered."""
    rel = f"formats/{name}{EXTENSIONS[fmt]}"
    path = storage_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    written = write_events(demo_events(), str(path), fmt, batch=batch)
    dataset, added = dmu_actions.check_register_dataset(name, local_se, [rel])
    assert added == 1
    return dataset, written


def build_auto_tags(dataset, made: list):
    schema = tag_actions.do_auto_schema(dataset)
    collection = tag_actions.get_or_create_collection(dataset, schema)
    made.append(collection)
    tag_actions.check_build_now(collection)
    collection.refresh_from_db()
    return collection


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_registers_with_its_guid_events_and_tree(fmt, local_se, storage_root):
    dataset, written = write_dataset(storage_root, local_se, fmt, f"fmt.reg_{fmt}")
    f = dataset.files.get()
    assert (str(f.guid), f.events, f.tree, f.bytes) == (
        written.guid,
        2421,
        "events",
        written.bytes,
    )
    path = storage_root / f.replicas.get().path
    with open_event_file(str(path)) as opened:
        tree = opened.tree()
        assert tree.format == {"root": "ttree", "rntuple": "rntuple", "parquet": "parquet"}[fmt]
        assert tree.keys() == BRANCHES
        assert tree.cluster_offsets() == [0, 1000, 2000, 2421]
        kinds = {b.name: (b.dtype.kind, b.jagged) for b in tree.branches()}
    assert kinds["Muon_Px"] == ("f", True) and kinds["Jet_ID"] == ("b", True)
    assert kinds["NMuon"] == ("i", False) and kinds["triggerIsoMu24"] == ("b", False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_gets_automatic_tags_and_skims_event_for_event(
    fmt, local_se, storage_root, physicist, tag_collections
):
    dataset, _ = write_dataset(storage_root, local_se, fmt, f"fmt.tag_{fmt}")
    collection = build_auto_tags(dataset, tag_collections)
    assert collection.state == "ready" and collection.n_events == 2421
    events = demo_events()
    want = expected_events(events)
    result = tag_actions.count(collection, SELECTION)
    assert result.count == len(want) > 0

    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(dataset, collection)],
            SELECTION,
            f"user.phys.fmt_{fmt}",
            output_format=fmt,
        )
    )
    assert skim.state == "succeeded", skim.message
    out = outputs(skim)
    assert skim.events_written == len(out) == len(want)
    assert out.fields == BRANCHES
    assert same_events(want, out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_skims_without_tags_by_scanning(fmt, local_se, storage_root, physicist):
    dataset, _ = write_dataset(storage_root, local_se, fmt, f"fmt.scan_{fmt}")
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(dataset, None)],
            SELECTION,
            f"user.phys.scan_{fmt}",
            branches=["Muon_*", "MET_px"],
            output_format="rntuple",
        )
    )
    assert skim.state == "succeeded", skim.message
    want = expected_events(demo_events())[
        ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_Charge", "MET_px"]
    ]
    out = outputs(skim)
    assert out.fields == want.fields
    assert same_events(want, out)


def test_an_rntuple_skim_output_registers_and_skims_again(
    local_se, storage_root, physicist, tag_collections
):
    dataset, _ = write_dataset(storage_root, local_se, "root", "fmt.round")
    collection = build_auto_tags(dataset, tag_collections)
    first = run_skim(
        submit(
            physicist,
            [actions.InputSpec(dataset, collection)],
            SELECTION,
            "user.phys.round1",
            output_format="rntuple",
        )
    )
    assert first.state == "succeeded", first.message
    output = first.output_dataset.files.get()
    replica = output.replicas.get()

    # The output file, registered by path as a user would register it, is the same file.
    again, added = dmu_actions.check_register_dataset(
        "user.phys.round1_copy", replica.storage_element, [replica.path]
    )
    registered = again.files.get()
    assert added == 1
    assert (registered.guid, registered.events, registered.adler32) == (
        output.guid,
        output.events,
        output.adler32,
    )

    # ... and skims again, with TAGs of its own (automatic schema) and by scanning.
    tagged = build_auto_tags(again, tag_collections)
    once = expected_events(demo_events())
    # A cut at one of the values themselves compares the same in float32 and float64.
    cut = float(np.sort(ak.to_numpy(once["EventWeight"]))[len(once) // 2])
    twice = once[once["EventWeight"] > cut]
    for inputs, name in (
        ([actions.InputSpec(again, tagged)], "user.phys.round2"),
        ([actions.InputSpec(first.output_dataset, None)], "user.phys.round2_scan"),
    ):
        second = run_skim(
            submit(physicist, inputs, f"eventweight > {cut!r}", name, output_format="rntuple")
        )
        assert second.state == "succeeded", second.message
        out = outputs(second)
        assert len(out) == len(twice) > 0
        assert same_events(twice, out)


@pytest.mark.parametrize("fmt", ["rntuple", "parquet"])
def test_tag_builds_and_skims_of_these_formats_are_accepted_by_the_api(
    fmt, local_se, storage_root, physicist, django_capture_on_commit_callbacks
):
    dataset, _ = write_dataset(storage_root, local_se, fmt, f"fmt.api_{fmt}")
    client = api(physicist)
    with django_capture_on_commit_callbacks(execute=False):
        r = client.post("/api/tags/build", {"dataset": dataset.name}, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["schema"].startswith(f"auto_fmt_api_{fmt} v1")
    with django_capture_on_commit_callbacks(execute=False):
        r = client.post(
            "/api/skims/",
            {
                "datasets": [dataset.name],
                "selection": SELECTION,
                "output_name": f"user.phys.api_{fmt}",
                "branches": ["Muon_*"],
            },
            format="json",
        )
    assert r.status_code == 201, r.content


def test_a_parquet_file_without_a_dss_guid_gets_one_from_its_content(local_se, storage_root):
    table = ak.to_arrow_table(demo_events(), extensionarray=False)
    for name in ("a", "b"):
        pq.write_table(table, storage_root / f"{name}.parquet")
    dataset, _ = dmu_actions.check_register_dataset("fmt.plain", local_se, ["a.parquet"])
    other, _ = dmu_actions.check_register_dataset("fmt.plain2", local_se, ["b.parquet"])
    md5 = hashlib.md5((storage_root / "a.parquet").read_bytes()).hexdigest()
    guid = dataset.files.get().guid
    assert guid == uuid.uuid5(uuid.NAMESPACE_URL, f"dss:parquet:md5:{md5}")
    assert other.files.get().guid == guid  # the same bytes, the same GUID


def test_the_portal_writes_parquet_with_its_guid_tree_and_page_checksums(tmp_path):
    written = write_events(demo_events(), str(tmp_path / "out.parquet"), "parquet")
    parquet = pq.ParquetFile(tmp_path / "out.parquet")
    metadata = parquet.schema_arrow.metadata
    assert metadata[b"dss_guid"] == written.guid.encode() and metadata[b"dss_tree"] == b"events"
    # A page damaged on disk is found by its checksum, and named by its column.
    group = parquet.metadata.row_group(0)
    (chunk,) = [
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == "MET_px"
    ]
    first = min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o)
    start = first + chunk.total_compressed_size // 2
    with open(tmp_path / "out.parquet", "r+b") as fh:
        fh.seek(start)
        damaged = bytes(x ^ 0xFF for x in fh.read(16))
        fh.seek(start)
        fh.write(damaged)
    with open_event_file(str(tmp_path / "out.parquet"), "SE:out.parquet") as f:
        with pytest.raises(BadEventFile) as caught:
            f.tree().check_readable()
    assert caught.value.message.startswith("branch 'MET_px' cannot be read")
    assert "CRC" in caught.value.message


def test_a_missing_event_number_fails_the_build_naming_the_entry(
    local_se, storage_root, tag_collections
):
    table = pa.table(
        {"EventNumber": pa.array([1, None, 3], pa.uint64()), "x": pa.array([1.0, 2.0, 3.0])}
    )
    pq.write_table(table, storage_root / "holes.parquet")
    dataset, _ = dmu_actions.check_register_dataset("fmt.holes", local_se, ["holes.parquet"])
    schema = tag_actions.do_auto_schema(dataset)
    collection = tag_actions.get_or_create_collection(dataset, schema)
    tag_collections.append(collection)
    with pytest.raises(DSSError) as caught:
        tag_actions.check_build_now(collection)
    assert "the event number branch 'EventNumber' is missing at entry 1" in str(caught.value)
