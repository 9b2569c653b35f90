"""Browser fixtures: Debian's Chromium driven by Playwright (sync API) against a live portal.

Chromium is ``/usr/bin/chromium`` (``.ci/install-chromium.sh``); Playwright's own browser
download is not used. Without it the browser tests skip, and fail under CI=true.

With ``DSS_SCREENSHOTS=<dir>`` set (``scripts/screenshots.sh``), the journeys save their main
pages there as 1280x800 PNGs; the README's tour shows the ones in ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.services import require

CHROMIUM = os.environ.get("DSS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
# Long enough for a real worker to plan and run a skim of the demo file, or a local pilot.
JOB_TIMEOUT_MS = 90_000


@pytest.fixture
def browser(monkeypatch):
    """A fresh Chromium for each test (about a second): Playwright's event loop lives only as
    long as the test, and the rest of the suite runs without it."""
    require(Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright Python package")
    # Playwright's sync API runs an event loop in the test thread; Django's guard would then
    # refuse the ORM calls the test makes for its setup and checks.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def login(page, username: str, password: str) -> None:
    """Log in through the login form, with the mouse."""
    page.goto("/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


def shot(page, name: str, at=None) -> None:
    """Save the visible page as ``<DSS_SCREENSHOTS>/<name>.png`` when screenshots are asked for:
    from the top of the page, or scrolled so that the locator ``at`` is in view."""
    target = os.environ.get("DSS_SCREENSHOTS")
    if not target:
        return
    directory = Path(target) if Path(target).is_absolute() else ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    # Let htmx swaps and fonts settle so the picture shows the finished page.
    page.wait_for_load_state("networkidle")
    if at is None:
        page.evaluate("window.scrollTo(0, 0)")
    else:
        at.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(directory / f"{name}.png"))


def count_text(page) -> str:
    """The live count box's text, e.g. '1,413 of 2,421 events pass (58.4%) · …'."""
    return page.locator("#live-count").inner_text()


@pytest.fixture
def hzz_tags(demo_datasets):
    """demo.hzz with its TAG collection built (schema ``hzz``), as the TAG service does."""
    from tests.skims.conftest import build_tags

    hzz, _ = demo_datasets
    return build_tags(hzz, "hzz")


@pytest.fixture
def portal_url(live_server, monkeypatch, settings, pilots_dir):
    """The live portal's address and a pilot directory, for this process and (through the
    environment) for the worker started after it: pilots post their reports there."""
    pilots = pilots_dir
    monkeypatch.setenv("DSS_PORTAL_URL", live_server.url)
    monkeypatch.setenv("PILOT_DIR", str(pilots))
    settings.DSS_PORTAL_URL = live_server.url
    settings.PILOT_DIR = pilots
    return live_server.url


@pytest.fixture
def worker(portal_url, storage_root, celery_worker):
    """A real Celery worker that knows the live portal and the test storage (started last)."""
    return celery_worker


def number(text: str) -> int:
    """The first number in ``text``, thousands separators allowed: '1,413 of …' -> 1413."""
    return int(re.search(r"\d[\d,]*", text).group(0).replace(",", ""))
