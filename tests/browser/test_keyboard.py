"""The physicist's first steps from the keyboard alone: no mouse click, only typing, Tab and
Enter, from the login form to a submitted skim."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from skims.models import SkimJob


def tab_to(page, predicate_js: str, limit: int = 60) -> None:
    """Press Tab until the focused element satisfies ``predicate_js`` (a JS function of it)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"({predicate_js})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate_js}")


def test_a_physicist_logs_in_and_submits_a_skim_with_the_keyboard(page, hzz_tags, physicist):
    tags_url = hzz_tags.get_absolute_url()
    page.goto(f"/login/?next={tags_url}")
    # The user name field has the focus when the page opens.
    assert page.evaluate("document.activeElement.id") == "id_username"
    page.keyboard.type("phys")
    page.keyboard.press("Tab")
    page.keyboard.type("phys-pw")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(re.escape(tags_url) + "$"))

    tab_to(page, "el => el.id === 'id_selection'")
    page.keyboard.type("n_muon >= 2")
    expect(page.locator("#live-count .count")).to_contain_text("1,413 of 2,421 events pass")
    # The count's first action follows the box in the tab order.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skim these events"
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/skims/new/$"))
    tab_to(page, "el => el.id === 'id_output_name'")
    page.keyboard.type("user.phys.keyboard")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/skims/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("user.phys.keyboard")
    skim = SkimJob.objects.get(output_name="user.phys.keyboard")
    assert skim.selection == "n_muon >= 2" and skim.owner == physicist
