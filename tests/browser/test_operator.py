"""The operator's journey in a real browser: the provenance history, filtered, a record, a
re-run from it that a real worker runs to success."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from skims import actions
from skims.models import SkimJob
from tests.browser.conftest import JOB_TIMEOUT_MS, login, shot
from tests.conftest import wait_for


def test_an_operator_filters_the_history_and_reruns_a_skim(
    page, worker, hzz_tags, physicist, operator
):
    skim = actions.check_submit_skim(
        user=physicist,
        inputs=[actions.InputSpec(hzz_tags.dataset, hzz_tags)],
        selection="n_muon >= 2 && met > 40",
        output_name="user.phys.dimuon_met",
    )
    wait_for(
        lambda: SkimJob.objects.get(pk=skim.pk).is_final,
        timeout=JOB_TIMEOUT_MS / 1000,
        what="the worker to run the setup skim",
    )
    skim.refresh_from_db()
    assert skim.state == "succeeded", skim.message

    login(page, "oper", "oper-pw")
    page.goto("/provenance/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Provenance history")
    rows = page.locator("table.data tbody tr")
    expect(rows.first).to_contain_text("user.phys.dimuon_met")

    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(rows.first).to_have_text("No record matches.")
    page.get_by_label("State").select_option("succeeded")
    page.get_by_label("User").fill("phys")
    page.get_by_label("Dataset", exact=True).fill("hzz")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"state=succeeded"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("user.phys.dimuon_met")
    shot(page, "10-provenance")

    rows.first.get_by_role("link", name=f"skim #{skim.pk}").click()
    expect(page.locator("main")).to_contain_text("met > 40")
    shot(page, "11-provenance-record")
    page.get_by_label("Output name of the re-run").fill("user.oper.dimuon_met_again")
    page.get_by_role("button", name="Re-run").click()

    expect(page).to_have_url(re.compile(r"/skims/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("user.oper.dimuon_met_again")
    state = page.locator("#skim-state")
    expect(state).to_have_attribute("data-state", "succeeded", timeout=JOB_TIMEOUT_MS)
    written = skim.events_written
    expect(state).to_contain_text(f"{written:,} of {written:,} selected events written")
    shot(page, "12-rerun-done")
    again = SkimJob.objects.get(output_name="user.oper.dimuon_met_again")
    assert again.rerun_of == skim.provenance and again.events_written == written
