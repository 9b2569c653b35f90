"""A selection typed in the browser: a mistake is shown next to the box, with a caret under
the column of the token that is wrong."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import login, shot


def test_a_bad_selection_points_at_the_wrong_token(page, hzz_tags, physicist):
    login(page, "phys", "phys-pw")
    page.goto(hzz_tags.get_absolute_url())
    page.get_by_label("Selection", exact=True).fill("n_muon >= 2 && met_x > 40")

    alert = page.locator("#live-count").get_by_role("alert")
    expect(alert).to_contain_text("unknown attribute 'met_x' at column 16; did you mean 'met'?")
    expect(page.get_by_role("button", name="Skim these events")).to_have_count(0)
    line, caret = page.locator("#live-count pre.caret").inner_text().split("\n")[:2]
    assert line == "n_muon >= 2 && met_x > 40"
    column = caret.index("^")
    assert column == 15 and line[column:].startswith("met_x")
    shot(page, "03b-bad-selection")

    # Fixing the token brings the count back.
    page.get_by_label("Selection", exact=True).fill("n_muon >= 2 && met > 40")
    expect(page.locator("#live-count .count")).to_contain_text("of 2,421 events pass")
    expect(alert).to_have_count(0)
