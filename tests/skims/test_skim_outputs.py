"""What a skim's outputs hold besides the selected events: the event tree's name, small
objects of the input files copied along (metadata trees, histograms), and outputs merged to
a target size; each checked against what uproot and awkward read from the inputs."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from dmu.eventfiles import open_event_file
from dss.errors import InvalidInput
from skims import actions
from skims.models import SkimJob
from skims.tasks import plan_skim
from tests.skims.conftest import CUTFLOW, input_events, same_events, write_with_metadata
from tests.skims.test_skim_correctness import run_parts, run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)

SELECTION = "nmuon >= 2"


def expected(dataset) -> list[ak.Array]:
    """What awkward keeps of each input file under SELECTION."""
    return [events[events["NMuon"] >= 2] for events in input_events(dataset)]


def output_files(skim: SkimJob) -> list[str]:
    paths = []
    for f in skim.output_dataset.files.order_by("lfn"):
        r = f.replicas.select_related("storage_element").get()
        paths.append(r.storage_element.endpoint().local_path(r.path))
    return paths


def input_paths(dataset) -> dict[str, str]:
    found = {}
    for f in dataset.files.all():
        r = f.replicas.select_related("storage_element").get()
        found[f.lfn] = r.storage_element.endpoint().local_path(r.path)
    return found


def nano_input(dataset):
    return [actions.InputSpec(dataset, None)]


# --------------------------------------------------------------------------- the tree's name


def test_the_output_tree_keeps_the_input_trees_name(nano, physicist):
    skim = run_skim(submit(physicist, nano_input(nano), SELECTION, "user.phys.same_tree"))
    assert skim.state == "succeeded", skim.message
    assert skim.output_tree == "Events"
    for f, path in zip(skim.output_dataset.files.order_by("lfn"), output_files(skim), strict=True):
        assert f.tree == "Events"
        with uproot.open(path) as out:
            assert out.classnames() == {"Events;1": "TTree"}
    assert skim.provenance.options["output_tree"] == "Events"


@pytest.mark.parametrize("fmt", ["root", "rntuple", "parquet"])
def test_a_chosen_tree_name_is_written_registered_and_skims_again(nano, physicist, fmt):
    skim = run_skim(
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            f"user.phys.tree_{fmt}",
            output_tree="dimuons",
            output_format=fmt,
        )
    )
    assert skim.state == "succeeded", skim.message
    out = []
    for f, path in zip(skim.output_dataset.files.order_by("lfn"), output_files(skim), strict=True):
        assert f.tree == "dimuons"
        with open_event_file(path) as ef:
            assert list(ef.trees()) == ["dimuons"]
            out.append(ef.tree("dimuons").arrays())
    assert same_events(ak.concatenate(expected(nano)), ak.concatenate(out))
    assert skim.provenance.options["output_tree"] == "dimuons"
    # the registered name is the one a further skim of the output reads
    again = run_skim(
        submit(
            physicist,
            [actions.InputSpec(skim.output_dataset, None)],
            "nmuon >= 3",
            f"user.phys.tree_{fmt}_again",
        )
    )
    assert again.state == "succeeded", again.message
    assert again.output_tree == "dimuons"
    everything = ak.concatenate(expected(nano))
    assert again.events_written == int(ak.sum(everything["NMuon"] >= 3))


@pytest.mark.parametrize(
    "name", ["1events", "my tree", "dir/events", "events;1", "événements", "x" * 129]
)
def test_a_tree_name_root_code_cannot_use_is_refused(nano, physicist, name):
    with pytest.raises(InvalidInput, match="cannot name a tree") as caught:
        submit(physicist, nano_input(nano), SELECTION, "user.phys.bad_tree", output_tree=name)
    assert caught.value.where == "output_tree"
    assert not SkimJob.objects.exists()


def test_inputs_whose_trees_are_named_differently_need_a_tree_name(
    nano, local_se, storage_root, physicist
):
    from dmu import actions as dmu_actions

    rels = write_with_metadata(storage_root, "other", 2, tree="tree")
    other, _ = dmu_actions.check_register_dataset("demo.other", local_se, rels, tree="tree")
    inputs = nano_input(nano) + [actions.InputSpec(other, None)]
    with pytest.raises(InvalidInput, match=r"differently \(Events, tree\): name") as caught:
        submit(physicist, inputs, SELECTION, "user.phys.two_trees")
    assert caught.value.where == "output_tree"
    skim = run_skim(submit(physicist, inputs, SELECTION, "user.phys.two_trees", output_tree="t"))
    assert skim.state == "succeeded", skim.message
    assert set(skim.output_dataset.files.values_list("tree", flat=True)) == {"t"}


# --------------------------------------------------------------------------- objects copied along


def test_each_output_carries_the_metadata_of_its_input(nano, physicist):
    skim = run_skim(
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.with_meta",
            copy_objects=["Runs", "cutflow*", "hists/*"],
        )
    )
    assert skim.state == "succeeded", skim.message
    inputs = input_paths(nano)
    parts = list(skim.parts.order_by("number"))
    assert len(parts) == 6
    for part, path in zip(parts, output_files(skim), strict=True):
        assert part.copied == ["Runs", "cutflow", "hists/met"]
        with uproot.open(inputs[part.input_file.lfn]) as src, uproot.open(path) as out:
            assert set(out.classnames()) == {
                "Events;1",
                "Runs;1",
                "cutflow;1",
                "hists;1",
                "hists/met;1",
            }
            assert out["Runs"].arrays().tolist() == src["Runs"].arrays().tolist()
            for name in ("cutflow", "hists/met"):
                assert np.array_equal(out[name].values(flow=True), src[name].values(flow=True))
                assert np.array_equal(out[name].variances(), src[name].variances())
                assert out[name].member("fEntries") == src[name].member("fEntries")
            assert list(out["cutflow"].axis().labels()) == CUTFLOW
    outputs = skim.provenance.outputs
    assert [o["objects"] for o in outputs] == [["Runs", "cutflow", "hists/met"]] * 6
    assert skim.provenance.options["copy_objects"] == ["Runs", "cutflow*", "hists/*"]


def test_the_rntuple_output_carries_metadata_trees_as_rntuples(nano, physicist):
    skim = run_skim(
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.rn_meta",
            output_format="rntuple",
            copy_objects=["Runs", "cutflow"],
        )
    )
    assert skim.state == "succeeded", skim.message
    first = skim.parts.order_by("number").first()
    with uproot.open(input_paths(nano)[first.input_file.lfn]) as src:
        runs = src["Runs"].arrays().tolist()
        cutflow = src["cutflow"].values()
    with uproot.open(output_files(skim)[0]) as out:
        assert out.classnames()["Runs;1"] == "ROOT::RNTuple"
        assert out["Runs"].arrays().tolist() == runs
        assert np.array_equal(out["cutflow"].values(), cutflow)


def test_a_copy_name_that_matches_nothing_is_refused_naming_it(nano, physicist):
    with pytest.raises(InvalidInput, match="no object matches 'Lumis' in LOCAL:nano/nano_0.root"):
        submit(physicist, nano_input(nano), SELECTION, "user.phys.c1", copy_objects=["Lumis"])
    with pytest.raises(InvalidInput, match="no object matches 'Events' besides the event tree"):
        submit(physicist, nano_input(nano), SELECTION, "user.phys.c2", copy_objects=["Events"])
    assert not SkimJob.objects.exists()


def test_objects_that_cannot_be_copied_are_refused(nano, physicist):
    with pytest.raises(InvalidInput, match=r"'notes' \(TObjString\) cannot be copied along"):
        submit(physicist, nano_input(nano), SELECTION, "user.phys.c3", copy_objects=["n*"])


def test_objects_that_are_not_small_are_refused(nano, physicist, settings):
    settings.DSS_SKIM_COPY_MAX_ENTRIES = 5
    with pytest.raises(InvalidInput, match=r"'cutflow' in LOCAL:nano/nano_0.root is not small "):
        submit(physicist, nano_input(nano), SELECTION, "user.phys.c4", copy_objects=["cutflow"])
    settings.DSS_SKIM_COPY_MAX_ENTRIES = 1000
    settings.DSS_SKIM_COPY_MAX_MB = 1
    huge = {"x": np.zeros(200_000)}  # 1.6 MB in memory
    path = input_paths(nano)["nano_0.root"]
    with uproot.update(path) as f:
        f["Big"] = huge
    with pytest.raises(InvalidInput, match=r"'Big' .* is not small \(200,000 entries, 1\.6 MB"):
        # the catalog's checksum no longer matches, but submission reads objects first
        actions.check_output_options(nano_input(nano), "root", "", ["Big"])


def test_a_parquet_output_refuses_objects_to_copy(nano, physicist):
    with pytest.raises(InvalidInput, match="a Parquet output holds only its event table") as e:
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.c5",
            output_format="parquet",
            copy_objects=["Runs"],
        )
    assert e.value.where == "copy_objects"


def test_a_tree_named_as_a_copied_object_is_refused(nano, physicist):
    with pytest.raises(InvalidInput, match="the name of the object 'Runs'") as e:
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.c6",
            output_tree="Runs",
            copy_objects=["Runs"],
        )
    assert e.value.where == "output_tree"


# --------------------------------------------------------------------------- merged outputs


def test_merged_outputs_are_fewer_below_the_target_and_hold_exactly_the_selection(
    nano, physicist, settings
):
    settings.DSS_SKIM_CHUNK_EVENTS = 100
    unmerged = run_skim(submit(physicist, nano_input(nano), SELECTION, "user.phys.unmerged"))
    per_file = max(p.output_bytes for p in unmerged.parts.all())
    target_mb = 2.5 * per_file / 1e6  # room for two files' events, not three
    skim = run_skim(
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.merged",
            merge_mb=target_mb,
            copy_objects=["Runs", "cutflow", "hists/met"],
        )
    )
    assert skim.state == "succeeded", skim.message
    files = list(skim.output_dataset.files.order_by("lfn"))
    assert 1 < len(files) < 6
    bytes_per_event = sum(f.bytes for f in files) / skim.events_written
    for f in files:  # below the target, but for at most one chunk's worth
        assert f.bytes <= target_mb * 1e6 + settings.DSS_SKIM_CHUNK_EVENTS * bytes_per_event
    assert skim.events_written == skim.events_selected == sum(len(e) for e in expected(nano))

    # each output holds the selected events of its inputs, in order, and their metadata
    by_lfn = dict(zip(sorted(input_paths(nano)), expected(nano), strict=True))
    inputs = input_paths(nano)
    seen = []
    for output, path in zip(skim.provenance.outputs, output_files(skim), strict=True):
        lfns = [i["lfn"] for i in output["inputs"]]
        seen += lfns
        assert "input_lfn" not in output or len(lfns) == 1
        assert [i["events"] for i in output["inputs"]] == [len(by_lfn[n]) for n in lfns]
        with uproot.open(path) as out:
            events = out["Events"].arrays()
            assert same_events(ak.concatenate([by_lfn[n] for n in lfns]), events)
            runs = out["Runs"].arrays()
            cutflow = out["cutflow"]
            met = out["hists/met"]
            sources = [uproot.open(inputs[n]) for n in lfns]
            try:
                assert runs.tolist() == sum((s["Runs"].arrays().tolist() for s in sources), [])
                assert np.array_equal(
                    cutflow.values(flow=True), sum(s["cutflow"].values(flow=True) for s in sources)
                )
                assert np.array_equal(
                    cutflow.variances(), sum(s["cutflow"].variances() for s in sources)
                )
                assert cutflow.member("fEntries") == sum(
                    s["cutflow"].member("fEntries") for s in sources
                )
                assert list(cutflow.axis().labels()) == CUTFLOW
                assert np.array_equal(met.values(), sum(s["hists/met"].values() for s in sources))
            finally:
                for s in sources:
                    s.close()
    assert seen == sorted(inputs)  # every input in exactly one output, in order

    # provenance derives each output from each of its inputs
    doc = actions.prov_json(skim.provenance)
    derived = {
        (d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()
    }
    assert len(derived) == 6
    assert "merged" in set(skim.events.values_list("kind", flat=True))


def test_a_file_whose_output_exceeds_the_target_alone_is_not_split(nano, physicist):
    skim = run_skim(
        submit(physicist, nano_input(nano), SELECTION, "user.phys.tiny", merge_mb=0.001)
    )
    assert skim.state == "succeeded", skim.message
    assert skim.output_dataset.files.count() == 6
    assert all(p.n_inputs == 1 for p in skim.parts.all())


def test_merging_stays_within_each_input_dataset(nano, physicist, local_se, storage_root):
    from dmu import actions as dmu_actions

    other, _ = dmu_actions.check_register_dataset(
        "demo.nano2", local_se, write_with_metadata(storage_root, "nano2", 2), tree="Events"
    )
    skim = run_skim(
        submit(
            physicist,
            [actions.InputSpec(nano, None), actions.InputSpec(other, None)],
            SELECTION,
            "user.phys.two_sets",
            merge_mb=100,
        )
    )
    assert skim.state == "succeeded", skim.message
    parts = list(skim.parts.order_by("number"))
    assert [p.n_inputs for p in parts] == [6, 2]
    assert skim.events_written == sum(len(e) for e in expected(nano) + expected(other))


@pytest.mark.parametrize("merge_mb", [0, -1, "big", True, 10**7])
def test_a_bad_merge_target_is_refused(nano, physicist, merge_mb):
    with pytest.raises(InvalidInput, match="the merge target is a size in MB") as e:
        submit(physicist, nano_input(nano), SELECTION, "user.phys.m", merge_mb=merge_mb)
    assert e.value.where == "merge_mb"


def test_histograms_whose_binnings_differ_fail_the_merged_part_naming_them(
    local_se, storage_root, physicist
):
    from dmu import actions as dmu_actions
    from tests.skims.conftest import cutflow_histogram

    rels = write_with_metadata(storage_root, "odd", 2)
    with uproot.update(storage_root / rels[1]) as f:
        del f["cutflow"]
        f["cutflow"] = cutflow_histogram([5, 4, 3], ["all", "trigger", "two muons"])
    dataset, _ = dmu_actions.check_register_dataset("demo.odd", local_se, rels, tree="Events")
    skim = run_skim(
        submit(
            physicist,
            nano_input(dataset),
            SELECTION,
            "user.phys.odd",
            merge_mb=100,
            copy_objects=["cutflow"],
        )
    )
    assert skim.state == "failed"
    assert "histogram 'cutflow' has another binning" in skim.message
    assert "LOCAL:odd/nano_1.root" in skim.message and "LOCAL:odd/nano_0.root" in skim.message
    assert not skim.output_dataset_id


def test_inputs_with_other_branches_cannot_share_an_output(local_se, storage_root, physicist):
    from dmu import actions as dmu_actions

    rels = write_with_metadata(storage_root, "mixed", 2)
    with uproot.open(storage_root / rels[1]) as f:
        events = f["Events"].arrays()
    events = events[[name for name in events.fields if name != "EventWeight"]]
    with uproot.recreate(storage_root / rels[1]) as f:
        f["Events"] = {name: events[name] for name in events.fields}
    dataset, _ = dmu_actions.check_register_dataset("demo.mixed", local_se, rels, tree="Events")
    skim = run_skim(
        submit(physicist, nano_input(dataset), SELECTION, "user.phys.mixed", merge_mb=100)
    )
    assert skim.state == "failed"
    assert "LOCAL:mixed/nano_1.root" in skim.message and "they lack EventWeight" in skim.message


def test_a_merged_part_that_failed_is_retried_whole(nano, physicist, storage_root):
    skim = submit(physicist, nano_input(nano), SELECTION, "user.phys.retry_merged", merge_mb=0.2)
    plan_skim(skim.pk)
    # the file's bytes change after planning: its part finds it no longer matches the catalog
    path = storage_root / "nano/nano_4.root"
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    skim = run_parts(skim)
    assert skim.state == "failed" and "nano_4.root has adler32" in skim.message
    failed = skim.parts.get(state="failed")
    assert failed.n_inputs > 1
    assert f"and {failed.n_inputs - 1} more" in skim.message
    kept = {p.pk: p.output_adler32 for p in skim.parts.filter(state="succeeded")}

    path.write_bytes(good)
    actions.do_retry_skim(skim, physicist)
    skim = run_parts(skim, skim.parts.filter(state="queued"))
    assert skim.state == "succeeded", skim.message
    assert {p.pk: p.output_adler32 for p in skim.parts.filter(pk__in=kept)} == kept
    out = []
    for p in output_files(skim):
        with uproot.open(p) as f:
            out.append(f["Events"].arrays())
    assert same_events(ak.concatenate(expected(nano)), ak.concatenate(out))


def test_a_rerun_keeps_the_tree_copies_and_merging(nano, physicist, operator):
    done = run_skim(
        submit(
            physicist,
            nano_input(nano),
            SELECTION,
            "user.phys.keep_opts",
            output_tree="mu",
            copy_objects=["Runs"],
            merge_mb=100,
        )
    )
    again = run_skim(actions.do_rerun(done.provenance, operator))
    assert again.state == "succeeded", again.message
    assert (again.output_tree, again.copy_objects, again.merge_mb) == ("mu", ["Runs"], 100.0)
    assert again.output_dataset.files.count() == 1 and again.events_written == done.events_written


def test_the_options_tell_identical_requests_apart(nano, physicist):
    first = run_skim(submit(physicist, nano_input(nano), SELECTION, "user.phys.ident"))
    assert first.state == "succeeded"
    with pytest.raises(actions.IdenticalSkim):
        submit(physicist, nano_input(nano), SELECTION, "user.phys.ident2")
    with pytest.raises(actions.IdenticalSkim):  # the default tree, named
        submit(physicist, nano_input(nano), SELECTION, "user.phys.ident3", output_tree="Events")
    for name, options in [
        ("t", {"output_tree": "other"}),
        ("c", {"copy_objects": ["Runs"]}),
        ("m", {"merge_mb": 100}),
    ]:
        submit(physicist, nano_input(nano), SELECTION, f"user.phys.ident_{name}", **options)


def test_a_file_without_the_copied_object_fails_its_part_naming_both(
    local_se, storage_root, physicist
):
    from dmu import actions as dmu_actions

    rels = write_with_metadata(storage_root, "gap", 2)
    with uproot.update(storage_root / rels[1]) as f:
        del f["Runs"]
    dataset, _ = dmu_actions.check_register_dataset("demo.gap", local_se, rels, tree="Events")
    skim = run_skim(
        submit(physicist, nano_input(dataset), SELECTION, "user.phys.gap", copy_objects=["Runs"])
    )
    assert skim.state == "failed"
    assert "no object matches 'Runs' in LOCAL:gap/nano_1.root" in skim.message
