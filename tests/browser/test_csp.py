"""Every page of the portal is served with a strict Content-Security-Policy, and Chromium
reports no violation of it on any of them: no inline script or style, nothing from another
origin, htmx fragments included."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.browser.conftest import login
from tests.portal.hostile import build_world, good_args, routes

pytestmark = pytest.mark.django_db(transaction=True)

WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`));
"""


@pytest.fixture
def world(demo_datasets, tmp_path, settings, django_user_model):
    return build_world(demo_datasets, tmp_path, settings, django_user_model)


def pages_of(world) -> list[str]:
    """Every page (not API) route with its arguments filled that answers a GET with HTML,
    and the API's documentation pages."""
    c = Client()
    c.force_login(world["user"])
    urls = []
    for route in routes():
        if route.api or route.name == "logout":
            continue
        url = route.fill(good_args(route.template, world))
        r = c.get(url)
        if r.status_code == 200 and r["Content-Type"].startswith("text/html"):
            urls.append(url)
    return [*urls, "/api/docs/", "/admin/"]


def test_the_policy_is_strict(client):
    header = client.get("/login/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"
    assert "unsafe" not in header


def test_no_page_violates_the_content_security_policy(browser, live_server, world):
    context = browser.new_context(base_url=live_server.url)
    context.add_init_script(WATCH)
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(m.text) if "Content Security" in m.text else None)
    login(page, "root", "root-pw")
    urls = pages_of(world)
    violations = {}
    for url in urls:
        answer = page.goto(url)
        assert answer.status == 200 and "content-security-policy" in answer.headers, url
        # htmx fragments (live counts, free space, histograms) load after the page
        page.wait_for_load_state("networkidle")
        found = page.evaluate("window.__csp")
        if found:
            violations[url] = found
    context.close()
    assert len(urls) > 25
    assert not violations and not console, (violations, console)
