"""A real Celery worker process (not eager mode) runs a job sent through the broker."""

import pytest
from django.conf import settings

from dmu.models import Dataset, RegistrationJob
from tests.conftest import HZZ, ZMUMU, put_file, wait_for
from tests.services import IN_CI


def test_a_worker_runs_a_registration_through_the_broker(
    celery_worker, local_se, storage_root, siteadmin
):
    from rest_framework.test import APIClient

    from tests.conftest import api_token

    if IN_CI:
        assert settings.CELERY_BROKER_URL.startswith("redis://")
    put_file(storage_root, HZZ, "w/hzz.root")
    put_file(storage_root, ZMUMU, "w/zmumu.root")
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(siteadmin)}")
    r = c.post(
        "/api/datasets/register/",
        {
            "dataset": "user.w.both",
            "storage_element": "LOCAL",
            "paths": ["w/hzz.root", "w/zmumu.root"],
            "wait": False,
        },
        format="json",
    )
    assert r.status_code == 202, r.json()
    job_id = r.json()["id"]

    def done():
        job = RegistrationJob.objects.get(pk=job_id)
        return job if job.is_final else None

    job = wait_for(done, timeout=90, what="the worker to finish the registration")
    assert job.state == "succeeded", job.message
    assert (job.progress_done, job.progress_total, job.files_added) == (2, 2, 2)
    assert Dataset.objects.get(name="user.w.both").files.count() == 2
    body = c.get(f"/api/registrations/{job_id}/").json()
    assert body["state"] == "succeeded"


@pytest.mark.django_db
def test_a_task_for_a_vanished_job_does_nothing():
    from dmu.tasks import register_dataset

    register_dataset(987654)
