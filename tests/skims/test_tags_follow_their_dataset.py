"""TAGs that follow their dataset: a collection knows the files (GUID, adler32) it was built
from; a query says when the dataset changed since, a skim through it is refused instead of
skipping a file, the identical-request check sees the new file set, provenance lists the
files read, and a re-run selects the same events, or says how they differ."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from dmu import actions as dmu_actions
from dmu.models import File
from dss.errors import Conflict
from skims import actions
from skims.models import SkimJob
from tagdb import actions as tag_actions
from tests.conftest import api_token
from tests.skims.conftest import build_tags, write_split
from tests.skims.test_skim_correctness import run_skim, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_of_three(local_se, storage_root):
    """A dataset of the first two of three HZZ files, tagged; the third file is on the
    storage element, ready to be added."""
    rels = write_split(storage_root, 3)
    dataset, _ = dmu_actions.check_register_dataset("data24.hzz", local_se, rels[:2])
    collection = build_tags(dataset, "hzz")
    return dataset, collection, rels


def add_third(dataset, local_se, rels):
    dmu_actions.check_register_dataset(dataset.name, local_se, rels)


def test_a_collection_records_the_files_it_was_built_from(two_of_three):
    dataset, collection, _ = two_of_three
    found = tag_actions.coverage(collection)
    assert not found.stale and (found.covered, found.total) == (2, 2)
    built = collection.published_build.files.values_list("guid", "adler32")
    assert sorted(built) == sorted((str(f.guid), f.adler32) for f in dataset.files.all())


def test_a_file_added_to_a_tagged_dataset_makes_its_tags_stale_and_queries_say_so(
    two_of_three, local_se, physicist
):
    dataset, collection, rels = two_of_three
    add_third(dataset, local_se, rels)
    found = tag_actions.coverage(collection)
    assert found.stale and found.added == ("hzz_2.root",)
    assert found.message.startswith("the TAGs of data24.hzz cover 2 of its 3 file(s)")
    assert "not tagged: hzz_2.root" in found.message
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    body = api.post(
        f"/api/tags/{collection.pk}/count", {"selection": "n_muon >= 2"}, format="json"
    ).json()
    assert body["stale"]["added"] == ["hzz_2.root"]
    assert body["warnings"][0] == found.message
    detail = api.get(f"/api/tags/{collection.pk}/").json()["coverage"]
    assert detail["stale"] and (detail["covered"], detail["total"]) == (2, 3)
    assert detail["added"] == ["hzz_2.root"]
    c = Client()
    c.force_login(physicist)
    html = c.get(collection.get_absolute_url()).content.decode()
    assert "Stale." in html and "Rebuild the TAGs now" in html and "hzz_2.root" in html


def test_a_skim_through_stale_tags_is_refused_naming_the_file_not_run_without_it(
    two_of_three, local_se, physicist
):
    dataset, collection, rels = two_of_three
    add_third(dataset, local_se, rels)
    with pytest.raises(tag_actions.StaleTags, match="not tagged: hzz_2.root"):
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.a")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(physicist)}")
    r = api.post(
        "/api/skims/",
        {"collections": [collection.pk], "selection": "n_muon >= 2", "output_name": "user.phys.b"},
        format="json",
    )
    assert r.status_code == 409
    assert r.json()["error"] == "stale_tags" and r.json()["coverage"]["added"] == ["hzz_2.root"]
    assert not SkimJob.objects.exists()


def test_a_skim_planned_after_its_dataset_changed_fails_instead_of_skipping_the_file(
    two_of_three, local_se, physicist
):
    dataset, collection, rels = two_of_three
    skim = submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.c")
    add_third(dataset, local_se, rels)  # after submission, before a worker plans it
    skim = run_skim(skim)
    assert skim.state == "failed" and "not tagged: hzz_2.root" in skim.message
    assert not skim.parts.exists() and skim.output_dataset is None


def test_removed_and_changed_files_are_named_too(two_of_three):
    dataset, collection, _ = two_of_three
    first, second = dataset.files.order_by("lfn")
    File.objects.filter(pk=second.pk).update(adler32="00000001")  # re-registered content
    found = tag_actions.coverage(collection)
    assert found.changed == (second.lfn,) and found.covered == 1
    second.replicas.all().delete()
    File.objects.filter(pk=second.pk).delete()
    found = tag_actions.coverage(collection)
    assert found.removed == (second.lfn,) and found.total == 1 and found.covered == 1


def test_a_rebuild_makes_the_tags_current_and_the_catalog_check_reports_staleness(
    two_of_three, local_se, physicist
):
    dataset, collection, rels = two_of_three
    add_third(dataset, local_se, rels)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("check_catalog", stdout=out)
    assert "stale" in out.getvalue() and "hzz_2.root" in out.getvalue()
    build_tags(dataset, "hzz")
    collection.refresh_from_db()
    assert not tag_actions.coverage(collection).stale
    skim = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.d")
    )
    assert skim.state == "succeeded" and skim.events_written == 1413


def test_the_identical_request_check_sees_a_changed_file_set(two_of_three, local_se, physicist):
    dataset, collection, rels = two_of_three
    request = [actions.InputSpec(dataset, None)]  # a scan: no TAGs to go stale
    first = run_skim(submit(physicist, request, "n_muon >= 2", "user.phys.e1"))
    assert first.state == "succeeded"
    with pytest.raises(actions.IdenticalSkim):
        submit(physicist, request, "n_muon >= 2", "user.phys.e2")
    add_third(dataset, local_se, rels)
    again = run_skim(submit(physicist, request, "n_muon >= 2", "user.phys.e3"))
    assert again.state == "succeeded" and again.events_written == 1413
    record = again.provenance
    assert sorted(f["lfn"] for f in record.inputs[0]["files"]) == [
        "hzz_0.root",
        "hzz_1.root",
        "hzz_2.root",
    ]
    assert sorted(f["lfn"] for f in first.provenance.inputs[0]["files"]) == [
        "hzz_0.root",
        "hzz_1.root",
    ]


def test_provenance_names_the_tag_build_and_the_files_read(two_of_three, physicist):
    dataset, collection, _ = two_of_three
    skim = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.f")
    )
    record = skim.provenance
    (inp,) = record.inputs
    assert inp["tag_build"] == collection.published_build_id
    assert [f["lfn"] for f in inp["files"]] == ["hzz_0.root", "hzz_1.root"]
    assert record.events_selected == skim.events_selected > 0
    assert len(record.selection_digest) == 64


def rerun(record, operator, name):
    return run_skim(actions.do_rerun(record, operator, name))


def test_a_rerun_through_the_same_tag_build_selects_the_same_events(
    two_of_three, physicist, operator
):
    dataset, collection, _ = two_of_three
    original = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.g")
    )
    again = rerun(original.provenance, operator, "user.oper.g1")
    assert again.state == "succeeded"
    assert again.inputs.get().collection_id == collection.pk
    assert again.selection_digest == original.selection_digest
    check = again.provenance.options["rerun_check"]
    assert (
        check["same"]
        and check["message"] == f"same {original.events_selected:,} events as skim #{original.pk}"
    )
    c = Client()
    c.force_login(operator)
    html = c.get(again.provenance.get_absolute_url()).content.decode()
    assert f"same {original.events_selected:,} events as skim #{original.pk}" in html


def test_a_rerun_after_the_dataset_grew_selects_from_the_original_files(
    two_of_three, local_se, physicist, operator
):
    dataset, collection, rels = two_of_three
    original = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.h")
    )
    add_third(dataset, local_se, rels)  # the TAGs are stale for the dataset now...
    again = rerun(original.provenance, operator, "user.oper.h1")
    assert again.state == "succeeded", again.message
    inp = again.inputs.get()
    # ...but still cover the two files the original read: through them, pinned to those
    assert inp.collection_id == collection.pk and inp.pinned
    assert [f["lfn"] for f in inp.files] == ["hzz_0.root", "hzz_1.root"]
    assert inp.tag_build_id == collection.published_build_id
    assert again.selection_digest == original.selection_digest
    assert again.provenance.options["rerun_check"]["same"]


def test_a_rerun_whose_tags_are_gone_scans_the_same_files_with_their_schema(
    two_of_three, local_se, physicist, operator
):
    dataset, collection, rels = two_of_three
    original = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.k")
    )
    add_third(dataset, local_se, rels)
    tag_actions.get_store().drop(collection.key)
    collection.delete()
    again = rerun(original.provenance, operator, "user.oper.k1")
    assert again.state == "succeeded", again.message
    inp = again.inputs.get()
    assert inp.collection is None and inp.pinned and inp.scan_schema.name == "hzz"
    assert [f["lfn"] for f in inp.files] == ["hzz_0.root", "hzz_1.root"]
    assert again.selection_digest == original.selection_digest
    assert again.provenance.options["rerun_check"]["same"]


def test_a_rerun_whose_files_changed_is_refused_naming_them(two_of_three, physicist, operator):
    dataset, collection, _ = two_of_three
    original = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.i")
    )
    File.objects.filter(dataset=dataset, lfn="hzz_1.root").update(adler32="00000001")
    with pytest.raises(Conflict, match=r"changed since \(another adler32\): hzz_1.root"):
        actions.do_rerun(original.provenance, operator, "user.oper.i1")


def test_a_rerun_that_selected_other_events_says_how_they_differ(two_of_three, physicist, operator):
    import zlib

    import numpy as np

    dataset, collection, _ = two_of_three
    original = run_skim(
        submit(physicist, [actions.InputSpec(dataset, collection)], "n_muon >= 2", "user.phys.j")
    )
    again = rerun(original.provenance, operator, "user.oper.j1")
    # as if the repeated skim had selected one more event and lost one of these
    part = original.parts.order_by("number").first()
    entries = actions.part_entries(part)
    changed = np.sort(np.append(entries[1:], 10**6)).astype(np.int64)
    type(part).objects.filter(pk=part.pk).update(entries=zlib.compress(changed.tobytes()))
    original.selection_digest = "x"
    original.save(update_fields=["selection_digest"])
    check = actions.check_rerun(again)
    assert not check.same and (check.only_rerun, check.only_original) == (1, 1)
    assert check.both == original.events_selected - 1
    assert "1 only in this re-run, 1 only in skim" in check.message


def test_a_rerun_of_a_merged_skim_selects_the_same_events(two_of_three, physicist, operator):
    dataset, collection, _ = two_of_three
    original = run_skim(
        submit(
            physicist,
            [actions.InputSpec(dataset, collection)],
            "n_muon >= 2",
            "user.phys.m",
            merge_mb=100,
        )
    )
    assert original.state == "succeeded" and original.parts.count() == 1  # two files, one part
    again = rerun(original.provenance, operator, "user.oper.m1")
    assert again.selection_digest == original.selection_digest
    assert actions.compare_selections(again, original) == (original.events_selected, 0, 0)
    assert again.provenance.options["rerun_check"]["same"]
