"""The site admin's journey in a real browser: the sites overview, a pilot submitted to the
local site from the form, run by a real worker as a local process, its verdict and report."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from pilotchecker import actions
from tests.browser.conftest import JOB_TIMEOUT_MS, login, shot


def test_a_site_admin_sends_a_pilot_and_reads_its_report(page, worker, siteadmin):
    actions.do_ensure_demo_site()
    login(page, "admin1", "admin1-pw")
    page.goto("/sites/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sites")
    expect(page.locator("table")).to_contain_text("LOCAL")
    shot(page, "07-sites")

    page.get_by_role("link", name="Submit pilots").first.click()
    page.get_by_label("Site").select_option("LOCAL")
    page.get_by_label("Number of pilots").fill("1")
    shot(page, "08-pilot-submit")
    page.get_by_role("button", name="Submit pilots").click()

    expect(page).to_have_url(re.compile(r"/pilots/\d+/$"))
    pilot_url = page.url
    steps = page.get_by_role("list", name="Lifecycle")
    expect(steps).to_contain_text(
        re.compile(r"reported: (passed|warning|failed)"), timeout=JOB_TIMEOUT_MS
    )
    expect(page.get_by_role("heading", name="Checks")).to_be_visible()
    shot(page, "09-pilot-report")

    # From the overview, the site's latest pilot leads back to its report.
    page.get_by_role("link", name="Sites", exact=True).first.click()
    page.locator("table").get_by_role("link", name=re.compile(r"^#\d+$")).first.click()
    expect(page).to_have_url(pilot_url)
    page.get_by_text("The report as received (JSON)").click()
    expect(page.locator("details.events pre")).to_contain_text('"verdict"')
