"""The physicist's journey in a real browser: from a dataset to its TAGs, a selection counted
live, a histogram, a skim run by a real Celery worker, and the output dataset."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from dmu.models import Dataset
from tests.browser.conftest import JOB_TIMEOUT_MS, count_text, login, number, shot


def test_a_physicist_selects_events_and_skims_them(page, worker, hzz_tags, physicist):
    login(page, "phys", "phys-pw")
    page.get_by_role("link", name="Datasets", exact=True).click()
    page.get_by_role("link", name="demo.hzz", exact=True).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("demo.hzz")
    shot(page, "02-dataset")

    page.get_by_role("link", name="Open TAGs").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("TAGs of demo.hzz")
    assert number(count_text(page)) == 2421

    page.get_by_label("Selection", exact=True).fill("n_muon >= 2")
    expect(page.locator("#live-count .count")).to_contain_text("1,413 of 2,421 events pass")
    page.get_by_role("button", name="Apply to the plots").click()
    expect(page.locator("#histogram svg")).to_be_visible()
    assert page.locator("#histogram svg rect").count() > 3
    shot(page, "03-tags")
    shot(page, "03c-histogram", at=page.locator("#histogram"))

    # A button of the query form: the selection goes to the skim form in a POST body.
    page.get_by_role("button", name="Skim these events").click()
    expect(page).to_have_url(re.compile(r"/skims/new/$"))
    expect(page.get_by_label("Selection", exact=True)).to_have_value("n_muon >= 2")
    page.get_by_label("Output dataset name").fill("user.phys.dimuon")
    shot(page, "04-skim-new")
    page.get_by_role("button", name="Submit the skim").click()

    expect(page).to_have_url(re.compile(r"/skims/\d+/$"))
    state = page.locator("#skim-state")
    expect(state).to_have_attribute("data-state", "succeeded", timeout=JOB_TIMEOUT_MS)
    expect(state).to_contain_text("1,413 of 1,413 selected events written")
    shot(page, "05-skim-done")

    page.get_by_role("link", name="Open user.phys.dimuon").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("user.phys.dimuon")
    expect(page.locator("main")).to_contain_text("1,413")
    shot(page, "06-output-dataset")
    assert Dataset.objects.get(name="user.phys.dimuon").files.get().events == 1413
