"""Cancel with real workers: the running work stops by itself within seconds (no process is
killed), the worker runs the next job at once, and cancel-then-retry registers only files
that are there."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from dmu.models import Replica
from dss.jobs import FINAL_STATES
from skims import actions
from skims.models import SkimJob, SkimPart
from skims.tasks import plan_skim, run_part
from tests.conftest import wait_for
from tests.faults.conftest import RECOVERY_BOUND, catalog_is_clean, temporaries
from tests.skims.conftest import build_tags, same_events
from tests.skims.test_skim_correctness import outputs, submit, uproot_filter_nmuon2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    """The broker this test run is configured with (Redis in CI, else the embedded one):
    cancel does not depend on the broker, so it is not run on both."""
    return settings.CELERY_BROKER_URL


def ended(pk):
    def check():
        skim = SkimJob.objects.get(pk=pk)
        return skim if skim.state in FINAL_STATES else None

    return check


def test_a_cancelled_part_stops_within_seconds_and_the_worker_takes_the_next_skim_at_once(
    workers, split_hzz, physicist
):
    collection = build_tags(split_hzz, "hzz")
    worker = workers.start(failpoints="skim.part.stored=4")
    skim = submit(
        physicist, [actions.InputSpec(split_hzz, collection)], "n_muon >= 2", "user.phys.cancel1"
    )
    workers.reached("skim.part.stored")
    actions.do_cancel_skim(skim, physicist)
    cancelled_at = time.monotonic()

    # the paused parts wake, find their parts no longer theirs and discard what they stored
    def quiet():
        return not temporaries(settings.DSS_STORAGE_ROOT, settings.DSS_SCRATCH_DIR)

    wait_for(quiet, timeout=15, what="the cancelled parts to remove their temporaries")
    assert time.monotonic() - cancelled_at < 15
    skim.refresh_from_db()
    assert skim.state == "cancelled"
    assert set(skim.parts.values_list("state", flat=True)) == {"cancelled"}
    assert not skim.output_dataset_id

    # the same worker, never restarted, runs the next skim (its parts pause 4 s each)
    second = submit(
        physicist, [actions.InputSpec(split_hzz, collection)], "n_muon >= 3", "user.phys.next"
    )
    second = wait_for(ended(second.pk), timeout=60, what="the next skim")
    assert second.state == "succeeded", second.message
    assert worker.poll() is None  # the same worker process, alive
    catalog_is_clean()


def test_cancel_then_retry_registers_every_file_and_only_files_that_exist(
    workers, split_hzz, physicist
):
    collection = build_tags(split_hzz, "hzz")
    skim = submit(
        physicist, [actions.InputSpec(split_hzz, collection)], "n_muon >= 2", "user.phys.cretry"
    )
    # one part ends here before the cancel; its output is on the storage element
    plan_skim(skim.pk)
    first = skim.parts.order_by("number").first()
    run_part(first.pk)
    assert SkimPart.objects.get(pk=first.pk).state == "succeeded"
    actions.do_cancel_skim(skim, physicist)
    skim.refresh_from_db()
    assert set(skim.parts.values_list("state", flat=True)) == {"cancelled"}

    workers.start()
    actions.do_retry_skim(skim, physicist)
    skim = wait_for(ended(skim.pk), timeout=RECOVERY_BOUND, what="the retried skim")
    assert skim.state == "succeeded", skim.message
    files = list(skim.output_dataset.files.all())
    assert len(files) == 3 and sum(f.events for f in files) == 1413
    for f in files:
        replica = Replica.objects.select_related("storage_element").get(file=f)
        endpoint = replica.storage_element.endpoint()
        assert endpoint.exists(replica.path) and endpoint.size(replica.path) == f.bytes
    assert same_events(outputs(skim), uproot_filter_nmuon2())
    catalog_is_clean()


def test_a_sigterm_to_the_workers_whole_process_group_lets_running_work_end_then_stops_it(
    workers, split_hzz, physicist
):
    """What `make run`'s shell, systemd or a container runtime may send: the pool processes
    leave stopping to the main one, which lets the running parts end and then stops,
    instead of losing them and waiting for its pool for ever."""
    import os
    import signal

    collection = build_tags(split_hzz, "hzz")
    worker = workers.start(failpoints="skim.part.stored=3", as_run_starts_it=True)
    skim = submit(
        physicist, [actions.InputSpec(split_hzz, collection)], "n_muon >= 2", "user.phys.term"
    )
    workers.reached("skim.part.stored")
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except Exception:
        pytest.fail("the worker did not stop within 60 s of a SIGTERM to its process group")
    # the parts that were running when the signal came ended: none was lost
    running = SkimPart.objects.filter(skim=skim, state="running")
    assert not running.exists(), list(running.values_list("number", "lease_worker"))
