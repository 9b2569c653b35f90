"""The pipeline with a real Celery worker: `dmu put`'s register call queues the Rucio
registration after the commit, and a worker process registers the dataset in the real Rucio."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from dmu.models import RucioRegistration, RucioState
from tests.conftest import HZZ, api_token, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_env(rucio_env, site, monkeypatch):
    """What the worker process reads: the Rucio server and this test's SE → RSE mapping."""
    for key, value in rucio_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DSS_RUCIO_RSES", f"{site.se.name}={site.rse}")


def test_a_worker_registers_what_dmu_put_registered(
    rucio, scope, site, siteadmin, worker_env, celery_worker
):
    rel = site.put(HZZ, "worker/uproot-HZZ.root")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(siteadmin)}")
    r = api.post(
        "/api/datasets/register/",
        {"dataset": f"{scope}.worker", "storage_element": site.se.name, "paths": [rel]},
        format="json",
    )
    assert r.status_code == 201, r.json()

    reg = wait_for(
        lambda: RucioRegistration.objects.filter(
            dataset__name=f"{scope}.worker", state=RucioState.REGISTERED
        ).first(),
        timeout=60,
        what="the worker to register the dataset in Rucio",
    )
    assert reg.attempts == 1 and reg.rse == site.rse
    (f,) = rucio.list_files(scope, f"{scope}.worker")
    assert f["name"] == "uproot-HZZ.root" and f["bytes"] == HZZ.stat().st_size
