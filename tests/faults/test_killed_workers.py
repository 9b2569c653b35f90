"""kill -9 of the worker at each stage of each kind of long work, on the embedded broker and
on Redis: after a restart every job ends, with the right result, within a bounded time; the
catalog check then finds nothing, and no temporary is left."""

from __future__ import annotations

import pytest
from django.conf import settings

from dmu import actions as dmu_actions
from dmu.models import RegistrationJob, Replica, Transfer
from dss.jobs import FINAL_STATES
from skims import actions
from skims.models import SkimJob
from tagdb import actions as tag_actions
from tagdb.models import TagBuild
from tests.conftest import HZZ, ZMUMU, put_file, wait_for
from tests.faults.conftest import RECOVERY_BOUND, catalog_is_clean, temporaries
from tests.skims.conftest import build_tags, same_events
from tests.skims.test_skim_correctness import outputs, submit, uproot_filter_nmuon2

pytestmark = pytest.mark.django_db(transaction=True)


def ended(model, pk):
    def check():
        row = model.objects.get(pk=pk)
        return row if row.state in FINAL_STATES else None

    return check


def recovered(row, what: str):
    """Its log shows that the work was handed to another worker."""
    kinds = set(row.events.values_list("kind", flat=True))
    assert kinds & {"requeued", "taken-over"}, f"{what} was never handed on: {sorted(kinds)}"


def no_leftovers() -> None:
    from tagdb.actions import get_store

    assert temporaries(settings.DSS_STORAGE_ROOT, settings.DSS_SCRATCH_DIR) == []
    assert get_store().staging_tables() == []
    catalog_is_clean()


@pytest.mark.parametrize("stage", ["skim.plan", "skim.part.stored", "skim.finish"])
def test_a_skim_ends_with_the_right_events_after_its_worker_is_killed(
    workers, stage, split_hzz, physicist
):
    collection = build_tags(split_hzz, "hzz")
    first = workers.start(failpoints=f"{stage}=120")
    skim = submit(
        physicist,
        [actions.InputSpec(split_hzz, collection)],
        "n_muon >= 2",
        f"user.phys.killed_{stage.replace('.', '_')}",
    )
    workers.reached(stage)
    workers.kill(first)
    workers.start()
    skim = wait_for(ended(SkimJob, skim.pk), timeout=RECOVERY_BOUND, what="the skim to end")
    assert skim.state == "succeeded", skim.message
    assert skim.output_dataset.files.count() == 3 and skim.events_written == 1413
    assert same_events(outputs(skim), uproot_filter_nmuon2())
    recovered(skim, "the skim")
    no_leftovers()


@pytest.mark.parametrize("stage", ["tags.file", "tags.publish"])
def test_a_tag_build_ends_after_its_worker_is_killed(workers, stage, split_hzz, physicist):
    first = workers.start(failpoints=f"{stage}=120")
    build = tag_actions.do_start_build(split_hzz, tag_actions.get_schema("hzz"), physicist)
    workers.reached(stage)
    workers.kill(first)
    workers.start()
    build = wait_for(ended(TagBuild, build.pk), timeout=RECOVERY_BOUND, what="the TAG build")
    assert build.state == "succeeded", build.message
    collection = build.collection
    collection.refresh_from_db()
    assert (collection.state, collection.n_events, collection.n_files) == ("ready", 2421, 3)
    assert tag_actions.count(collection, "n_muon >= 2").count == 1413
    recovered(build, "the build")
    no_leftovers()


def test_a_registration_ends_after_its_worker_is_killed(workers, local_se, storage_root, siteadmin):
    paths = [
        put_file(storage_root, HZZ, "r/a.root"),
        put_file(storage_root, ZMUMU, "r/b.root"),
    ]
    first = workers.start(failpoints="register.file=120")
    job = dmu_actions.do_enqueue_registration("user.w.killed", local_se, paths, user=siteadmin)
    workers.reached("register.file")
    workers.kill(first)
    workers.start()
    job = wait_for(ended(RegistrationJob, job.pk), timeout=RECOVERY_BOUND, what="registration")
    assert job.state == "succeeded", job.message
    assert job.files_added == 2
    recovered(job, "the registration")
    no_leftovers()


def test_a_transfer_ends_after_its_worker_is_killed_mid_copy(
    workers, demo_datasets, storage_root, siteadmin
):
    hzz, _ = demo_datasets
    disk2 = dmu_actions.do_add_storage_element("DISK2", (storage_root.parent / "disk2").as_uri())
    first = workers.start(failpoints="transfer.copy=120")
    transfer = dmu_actions.check_request_transfer(hzz, disk2, user=siteadmin)
    workers.reached("transfer.copy")
    # the copy's temporary is on the destination now, named by its attempt
    assert temporaries(storage_root.parent / "disk2") != []
    workers.kill(first)
    workers.start()
    transfer = wait_for(ended(Transfer, transfer.pk), timeout=RECOVERY_BOUND, what="transfer")
    assert transfer.state == "succeeded", transfer.message
    replica = Replica.objects.get(storage_element=disk2)
    assert (storage_root.parent / "disk2" / replica.path).read_bytes() == HZZ.read_bytes()
    assert temporaries(storage_root.parent / "disk2") == []
    recovered(transfer, "the transfer")
    no_leftovers()


def test_a_part_longer_than_the_redis_visibility_timeout_runs_once(
    workers, broker, split_hzz, physicist, monkeypatch
):
    if not broker.startswith("redis"):
        pytest.skip("the visibility timeout is Redis's")
    collection = build_tags(split_hzz, "hzz")
    # Redis hands a message that was not acknowledged within 1 s to a worker again.
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "1")
    workers.start(failpoints="skim.part.stored=8")
    skim = submit(
        physicist, [actions.InputSpec(split_hzz, collection)], "n_muon >= 2", "user.phys.twice"
    )
    skim = wait_for(ended(SkimJob, skim.pk), timeout=RECOVERY_BOUND, what="the skim to end")
    assert skim.state == "succeeded", skim.message
    log = "".join(p.read_text() for p in workers.folder.glob("worker-*.log"))
    received = log.count("skims.tasks.run_part[")
    assert received > 2 * 3, "Redis did not deliver a part twice; the test proves nothing"
    assert all(p.lease_attempts == 1 for p in skim.parts.all())  # each part ran once
    assert same_events(outputs(skim), uproot_filter_nmuon2())
    no_leftovers()  # every registered output has the checksum the catalog holds
