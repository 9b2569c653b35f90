"""Every page in a real browser: an anonymous visitor is sent to the login page, and each
page a signed-in user sees has a title, one h1 and a label on every form control."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from pilotchecker import actions as pilot_actions
from skims import actions as skim_actions
from tests.browser.conftest import login, shot
from tests.conftest import make_user
from tests.skims.test_skim_correctness import run_skim

# Pages behind the login, ids and names included: the login check comes before the lookup.
PAGES = [
    "/",
    "/account/",
    "/datasets/",
    "/datasets/demo.hzz/",
    "/datasets/register/",
    "/registrations/1/",
    "/storage/",
    "/storage/LOCAL/",
    "/transfers/",
    "/transfers/new/",
    "/transfers/1/",
    "/tags/",
    "/tags/build/",
    "/tags/builds/1/",
    "/tags/1/",
    "/skims/",
    "/skims/new/",
    "/skims/1/",
    "/provenance/",
    "/provenance/1/",
    "/sites/",
    "/sites/new/",
    "/sites/LOCAL/",
    "/sites/LOCAL/edit/",
    "/pilots/submit/",
    "/pilots/1/",
    "/api/docs/",
]


def test_an_anonymous_visitor_is_sent_to_the_login_page_from_every_page(page, live_server):
    for path in PAGES:
        page.goto(path)
        assert page.url == f"{live_server.url}/login/?next={quote(path)}", path
        expect(page.get_by_role("heading", level=1)).to_contain_text("Log in to DSS")
    shot(page, "01-login")


# Unlabelled controls: a form control that is shown and is not a button, with no label[for],
# no wrapping label, no aria-label and no aria-labelledby.
UNLABELLED = """() => {
  const out = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (["hidden", "submit", "button", "reset", "image"].includes(el.type)) continue;
    if (el.hidden || el.getClientRects().length === 0) continue;
    const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    if (byFor || el.closest("label") || el.getAttribute("aria-label")
        || el.getAttribute("aria-labelledby")) continue;
    out.push(el.outerHTML.slice(0, 160));
  }
  return out;
}"""


@pytest.fixture
def everything(demo_datasets, hzz_tags, portal_url, settings):
    """One of each thing the pages show: datasets with TAGs, a finished skim with its
    provenance record, the local site and a pilot submitted to it."""
    user = make_user("all", ["physicist", "admin", "operator"])
    skim = skim_actions.check_submit_skim(
        user=user,
        inputs=[skim_actions.InputSpec(hzz_tags.dataset, hzz_tags)],
        selection="n_muon >= 2",
        output_name="user.all.dimuon",
    )
    skim = run_skim(skim)
    assert skim.state == "succeeded", skim.message
    site = pilot_actions.do_ensure_demo_site()
    (pilot,) = pilot_actions.do_submit_pilots(site, 1, user=user)
    return {"skim": skim, "collection": hzz_tags, "site": site, "pilot": pilot}


def test_every_page_has_a_title_one_h1_and_labelled_controls(page, everything):
    skim, collection, pilot = everything["skim"], everything["collection"], everything["pilot"]
    login(page, "all", "all-pw")
    pages = [
        "/",
        "/account/",
        "/datasets/",
        "/datasets/demo.hzz/",
        "/datasets/register/",
        "/storage/",
        "/storage/LOCAL/",
        "/transfers/",
        "/transfers/new/",
        "/tags/",
        "/tags/build/",
        collection.get_absolute_url(),
        f"{collection.get_absolute_url()}?selection=n_muon+%3E%3D+2",
        f"{collection.get_absolute_url()}?selection=met_x+%3E+1",
        "/skims/",
        f"/skims/new/?collection={collection.pk}&selection=n_muon+%3E%3D+2",
        skim.get_absolute_url(),
        "/provenance/",
        skim.provenance.get_absolute_url(),
        "/sites/",
        "/sites/new/",
        "/sites/LOCAL/",
        "/sites/LOCAL/edit/",
        "/pilots/submit/",
        pilot.get_absolute_url(),
    ]
    problems = []
    for path in pages:
        response = page.goto(path)
        if response.status != 200:
            problems.append(f"{path}: HTTP {response.status}")
            continue
        title = page.title().strip()
        if not title or title.startswith("·"):
            problems.append(f"{path}: no title ({title!r})")
        h1 = page.locator("h1").count()
        if h1 != 1:
            problems.append(f"{path}: {h1} h1 elements")
        problems += [f"{path}: unlabelled {c}" for c in page.evaluate(UNLABELLED)]
    page.goto("/login/")
    assert page.evaluate(UNLABELLED) == [] and page.locator("h1").count() == 1
    assert problems == [], "\n".join(problems)
