"""Rucio down, unreachable or refusing: the portal keeps its record, retries a bounded number
of times, and says why on the dataset page and in the API."""

from __future__ import annotations

import socket

import pytest

from dmu import actions, catalogs
from dmu.models import Dataset, RucioRegistration, RucioState
from dmu.tasks import register_in_rucio
from tests.conftest import HZZ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rucio_down(rucio, settings):
    """The portal pointed at a port where nothing listens."""
    settings.DSS_RUCIO_URL = f"http://127.0.0.1:{free_port()}"
    return settings.DSS_RUCIO_URL


def queued(site, name, django_capture_on_commit_callbacks) -> Dataset:
    rel = site.put(HZZ, f"{name}/uproot-HZZ.root")
    dataset, _ = actions.check_register_dataset(name, site.se, [rel])
    with django_capture_on_commit_callbacks(execute=False):
        catalogs.queue_rucio_registration(dataset)
    return dataset


def test_rucio_down_keeps_the_dataset_and_waits_longer_each_time(
    rucio, scope, site, rucio_down, django_capture_on_commit_callbacks
):
    dataset = queued(site, f"{scope}.down", django_capture_on_commit_callbacks)

    assert catalogs.do_register_in_rucio(dataset.pk) == 1
    assert catalogs.do_register_in_rucio(dataset.pk) == 2
    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts) == (RucioState.PENDING, 2)
    assert "Rucio does not answer at " + rucio_down in reg.last_error
    assert reg.next_attempt_at is not None
    assert Dataset.objects.get(pk=dataset.pk).files.count() == 1


def test_retries_are_bounded_then_the_registration_fails(
    rucio, scope, site, rucio_down, settings, django_capture_on_commit_callbacks
):
    dataset = queued(site, f"{scope}.bounded", django_capture_on_commit_callbacks)

    # Run eagerly, a retry runs at once: the task must stop by itself after the bound.
    register_in_rucio.apply(args=[dataset.pk])

    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts) == (RucioState.FAILED, settings.DSS_RUCIO_RETRIES)
    assert reg.last_error.startswith(f"gave up after {settings.DSS_RUCIO_RETRIES} attempt(s)")
    assert dataset.files.count() == 1


def test_a_failed_registration_succeeds_when_asked_again_with_rucio_back(
    rucio, scope, site, rucio_down, settings, rucio_env, django_capture_on_commit_callbacks
):
    dataset = queued(site, f"{scope}.later", django_capture_on_commit_callbacks)
    register_in_rucio.apply(args=[dataset.pk])
    settings.DSS_RUCIO_URL = rucio_env["DSS_RUCIO_URL"]

    with django_capture_on_commit_callbacks(execute=False):
        catalogs.queue_rucio_registration(dataset)
    register_in_rucio.apply(args=[dataset.pk])

    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts, reg.last_error) == (RucioState.REGISTERED, 1, "")
    assert [f["name"] for f in rucio.list_files(scope, f"{scope}.later")] == ["uproot-HZZ.root"]


def test_a_scope_rucio_does_not_have_fails_at_once(rucio, site, django_capture_on_commit_callbacks):
    dataset = queued(site, "noscopehere.data", django_capture_on_commit_callbacks)

    assert catalogs.do_register_in_rucio(dataset.pk) is None

    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts) == (RucioState.FAILED, 1)
    assert "Rucio has no scope 'noscopehere'" in reg.last_error


def test_wrong_credentials_fail_at_once(
    rucio, scope, site, settings, django_capture_on_commit_callbacks
):
    dataset = queued(site, f"{scope}.creds", django_capture_on_commit_callbacks)
    settings.DSS_RUCIO_PASSWORD = "wrong"

    assert catalogs.do_register_in_rucio(dataset.pk) is None

    reg = RucioRegistration.objects.get(dataset=dataset)
    assert reg.state == RucioState.FAILED
    assert "refused the credentials" in reg.last_error


def test_nothing_is_queued_without_rucio(db, local_se, storage_root, settings):
    from tests.conftest import put_file

    settings.DSS_RUCIO_URL = ""
    dataset, _ = actions.check_register_dataset(
        "plain.data", local_se, [put_file(storage_root, HZZ, "p/uproot-HZZ.root")]
    )
    assert catalogs.queue_rucio_registration(dataset) is None
    assert not RucioRegistration.objects.exists()


def test_a_rucio_that_does_not_answer_in_time_counts_as_down(
    rucio, scope, site, settings, django_capture_on_commit_callbacks
):
    dataset = queued(site, f"{scope}.slow", django_capture_on_commit_callbacks)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.DSS_RUCIO_URL = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings.DSS_RUCIO_TIMEOUT = 1

        assert catalogs.do_register_in_rucio(dataset.pk) == 1

    reg = RucioRegistration.objects.get(dataset=dataset)
    assert (reg.state, reg.attempts) == (RucioState.PENDING, 1)
    assert "Rucio does not answer at" in reg.last_error
