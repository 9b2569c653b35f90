"""A physicist sends a skim to a compute site in a real browser: the form's "Run on" choice,
a real Celery worker that plans it and submits each part to the one-node Slurm, job
wrappers that report back, and the skim page that shows where each part ran."""

from __future__ import annotations

import re
import socket

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from dmu import actions as dmu_actions
from pilotchecker import actions as pilot_actions
from pilotchecker.models import Pilot, PilotState, Verdict
from skims.models import SkimJob
from tests.browser.conftest import JOB_TIMEOUT_MS, login, shot
from tests.pilotchecker.test_end_to_end import slurm_up
from tests.services import require
from tests.skims.conftest import write_split

pytestmark = pytest.mark.services


def test_a_physicist_runs_a_skim_on_a_site_and_sees_where_each_part_ran(
    page, worker, local_se, physicist, storage_root
):
    require(slurm_up(), "a Slurm cluster (SLURM_CONF from `bash .ci/slurm.sh start`)")
    dmu_actions.check_register_dataset("demo.hzz_split", local_se, write_split(storage_root))
    site = pilot_actions.do_add_site(
        "SLURM-LOCALHOST",
        "slurm",
        submit_params={"time_limit": "00:10:00"},
        requirements={"paths": [str(storage_root)]},
        status="online",
    )
    Pilot.objects.create(
        site=site, state=PilotState.REPORTED, verdict=Verdict.PASSED, finished_at=timezone.now()
    )

    login(page, "phys", "phys-pw")
    page.goto("/skims/new/")
    page.get_by_label("Datasets without TAGs").select_option("demo.hzz_split")
    page.get_by_label("Selection", exact=True).fill("n_muon >= 2")
    page.get_by_label("Output dataset name").fill("user.phys.on_site")
    page.get_by_label("Run on").select_option(label="site SLURM-LOCALHOST")
    shot(page, "skim-on-site-new")
    page.get_by_role("button", name="Submit the skim").click()

    expect(page).to_have_url(re.compile(r"/skims/\d+/$"))
    expect(page.locator("main")).to_contain_text("site SLURM-LOCALHOST")
    state = page.locator("#skim-state")
    expect(state).to_have_attribute("data-state", "succeeded", timeout=2 * JOB_TIMEOUT_MS)
    skim = SkimJob.objects.get(output_name="user.phys.on_site")
    cells = page.locator("td.ran-on")
    expect(cells).to_have_count(skim.parts.count())
    for p in skim.parts.order_by("number"):
        expect(cells.nth(p.number - 1)).to_contain_text(
            f"SLURM-LOCALHOST · job {p.batch_job_id} (done) · node {socket.gethostname()}"
        )
    shot(page, "skim-on-site-done")
