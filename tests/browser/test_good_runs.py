"""A real-size good-run list file and a long selection on the TAG page, in the browser: the
file is read as soon as it is chosen, and the live count (an htmx POST) carries both."""

from __future__ import annotations

import numpy as np
from playwright.sync_api import expect

from tests.browser.conftest import login
from tests.tagdb import goodruns_data as data
from tests.tagdb.portal import lumi  # noqa: F401


def long_pt_selection(length: int = 3900) -> str:
    """``pt > 0 && (pt > 21 || pt > 22.5 || …)``: a long selection whose meaning is pt > 21."""
    terms, i = [], 0
    text = ""
    while len(text) < length - 40:
        terms.append(f"pt > {21 + i * 0.5:g}")
        text = "pt > 0 && (" + " || ".join(terms) + ")"
        i += 1
    return text


def test_a_good_run_list_file_and_a_long_selection(page, lumi, physicist, tmp_path):  # noqa: F811
    events = data.lumi_events()
    in_list = data.expected_mask(events["Run"], events["LumiBlock"])
    missing = data.missing_runs(events["Run"])
    grl = tmp_path / "data99_GoodRunsList.xml"
    grl.write_text(data.atlas_xml())

    login(page, "phys", "phys-pw")
    page.goto(lumi.get_absolute_url())
    page.get_by_label("…or a good-run list file").set_input_files(str(grl))
    live = page.locator("#live-count")
    expect(live).to_contain_text("500 runs, 10,000 luminosity-block ranges")
    expect(live).to_contain_text(f"{len(missing)} runs of the GRL are not in this collection")
    expect(live.locator(".count")).to_contain_text(f"{int(in_list.sum()):,} of 20,000 events")

    selection = long_pt_selection()
    assert len(selection) > 3800
    page.get_by_label("Selection", exact=True).fill(selection)
    expected = int((in_list & (events["pt"] > 21)).sum())
    expect(live.locator(".count")).to_contain_text(f"{expected:,} of 20,000 events pass")
    page.get_by_role("button", name="Apply to the plots").click()
    expect(page.locator("#histogram svg")).to_be_visible()
    expect(live.locator(".count")).to_contain_text(f"{expected:,} of 20,000 events pass")
    assert np.any(in_list) and expected < int(in_list.sum())
