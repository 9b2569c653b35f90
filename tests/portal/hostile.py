"""Hostile input for every route of the portal: the values, the routes with their path
arguments filled in, and the forms a page offers (read from its HTML).

The tests in ``test_hostile_input.py`` send each value in each parameter; the portal must
answer every one with a 4xx, never a server error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from django.urls import URLPattern, URLResolver, get_resolver

# Text that PostgreSQL refuses (NUL), that UTF-8 cannot encode (a lone surrogate), integers
# past bigint, int and double, and things of the wrong type.
HOSTILE_TEXT = [
    "a\x00b",
    "\ud800",
    "9223372036854775808",
    "2147483648",
    "-9223372036854775809",
    "1e309",
    "1.8e308",
    "NaN",
    "x" * 5000,
]
# The same as JSON texts, with values of every other type: spliced raw into a request body so
# that 1e309 and NaN reach the server as the client wrote them.
HOSTILE_JSON = [
    '"a\\u0000b"',
    '"\\ud800"',
    "9223372036854775808",
    "2147483648",
    "-9223372036854775809",
    "99999999999999999999999999",
    "1e309",
    "-1e309",
    '"1.8e308"',
    "NaN",
    "Infinity",
    '"NaN"',
    "-1",
    "0",
    "1.5",
    "true",
    "null",
    "[]",
    '["a\\u0000b"]',
    "[9223372036854775808]",
    "{}",
    '{"a\\u0000": "\\ud800"}',
    '{"run": [[9223372036854775808, 1]]}',
    '"x"',
]
PATH_INTS = ["0", "2147483648", "9223372036854775808", "99999999999999999999999999"]
PATH_TEXTS = ["a%00b", "%ED%A0%80", "x" * 300]


@dataclass
class Route:
    template: str  # "/skims/<int:pk>/"
    name: str
    api: bool

    @property
    def args(self) -> list[tuple[str, str]]:
        return re.findall(r"<(int|str):(\w+)>", self.template)

    def fill(self, values: dict[str, str]) -> str:
        return re.sub(r"<(?:int|str):(\w+)>", lambda m: values[m.group(1)], self.template)


def _route_text(pattern) -> str:
    text = str(pattern.pattern)
    if text.startswith("^"):
        # tagdb's API routes are regular expressions with an optional trailing slash
        text = text.strip("^$").replace("/?", "/")
        text = re.sub(r"\(\?P<(\w+)>\\d\+\)", r"<int:\1>", text)
        if not text.endswith("/"):
            text += "/"
    return text


def routes() -> list[Route]:
    """Every page and API route of the portal (not Django's admin, not logout)."""
    found: list[Route] = []

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + _route_text(p))
            elif isinstance(p, URLPattern):
                found.append(Route("/" + prefix + _route_text(p), p.name or "", False))

    walk(get_resolver().url_patterns, "")
    out = []
    for r in found:
        if r.template.startswith(("/admin/", "/logout/")):
            continue
        r.api = r.template.startswith("/api/")
        out.append(r)
    return out


def hostile_paths(route: Route, good: dict[str, str]) -> list[str]:
    """``route`` with one path argument at a time replaced by a hostile value."""
    urls = []
    for kind, name in route.args:
        for bad in PATH_INTS if kind == "int" else PATH_TEXTS:
            urls.append(route.fill({**good, name: bad}))
    return urls


@dataclass
class Form:
    method: str
    action: str
    fields: dict[str, list[str]] = field(default_factory=dict)


class _Forms(HTMLParser):
    def __init__(self, page: str):
        super().__init__()
        self.page = page
        self.forms: list[Form] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append(
                Form((a.get("method") or "get").lower(), a.get("action") or self.page)
            )
            return
        if not self.forms:
            return
        form = self.forms[-1]
        name = a.get("name")
        if tag == "input" and name:
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                form.fields.setdefault(name, [])
                return
            form.fields.setdefault(name, []).append(a.get("value") or "")
        elif tag == "select" and name:
            self._select = name
            form.fields.setdefault(name, [])
        elif tag == "option" and self._select is not None:
            values = form.fields[self._select]
            if not values or "selected" in a:
                value = a.get("value") or ""
                form.fields[self._select] = [value] if "selected" in a else values or [value]
        elif tag == "textarea" and name:
            self._textarea = name
            form.fields[name] = [""]

    def handle_data(self, data):
        if self._textarea is not None and self.forms:
            self.forms[-1].fields[self._textarea] = [data.strip()]

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def forms_of(html: str, page: str) -> list[Form]:
    """The forms on a page, each with its fields' current values."""
    parser = _Forms(page)
    parser.feed(html)
    return parser.forms


def json_with(body: dict, name: str, raw: str) -> str:
    """``body`` as JSON text with the value of ``name`` replaced by the raw JSON ``raw``."""
    marker = "@@HOSTILE@@"
    text = json.dumps({**body, name: marker})
    return text.replace(json.dumps(marker), raw)


def build_world(demo_datasets, tmp_path, settings, django_user_model) -> dict:
    """A portal with something behind every route: datasets with TAGs, a saved query, a
    skim, a transfer, a registration, a TAG build, a site with a pilot; and a superuser."""
    from dmu import actions as dmu_actions
    from pilotchecker import actions as pilot_actions
    from skims import actions as skim_actions
    from tagdb import actions as tag_actions
    from tests.skims.conftest import build_tags

    settings.PILOT_DIR = tmp_path / "pilots"
    hzz, zmumu = demo_datasets
    collection = build_tags(hzz, "hzz")
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "root-pw")
    query = tag_actions.check_save_query(admin, collection, "two muons", "n_muon >= 2")
    other = tmp_path / "other"
    other.mkdir()
    se2 = dmu_actions.do_add_storage_element("OTHER", other.as_uri())
    transfer = dmu_actions.check_request_transfer(zmumu, se2, user=admin)
    registration = dmu_actions.do_enqueue_registration("demo.again", se2, ["a.root"], user=admin)
    build = tag_actions.do_start_build(zmumu, None, user=admin)
    skim = skim_actions.check_submit_skim(
        user=admin,
        inputs=[skim_actions.InputSpec(hzz, collection)],
        selection="n_muon >= 2",
        output_name="user.root.dimuon",
    )
    site = pilot_actions.do_add_site("UKI-TEST", "local", status="online")
    (pilot,) = pilot_actions.do_submit_pilots(site, 1, user=admin)
    ids = {
        "tags": collection.pk,
        "tags/builds": build.pk,
        "tags/queries": query.pk,
        "skims": skim.pk,
        "provenance": skim.pk,
        "transfers": transfer.pk,
        "registrations": registration.pk,
        "pilots": pilot.pk,
    }
    names = {"datasets": "demo.hzz", "storage": "LOCAL", "sites": site.name}
    return {"user": admin, "ids": ids, "names": names}


def good_args(template: str, world) -> dict[str, str]:
    """Path arguments that name something that exists, chosen by the route's words."""
    words = template.strip("/").removeprefix("api/").split("/")
    values = {}
    for i, word in enumerate(words):
        if word.startswith("<int:"):
            key = "/".join(w for w in words[:i] if not w.startswith("<"))
            values[word[5:-1]] = str(world["ids"].get(key, 1))
        elif word.startswith("<str:"):
            arg = word[5:-1]
            before = words[i - 1]
            if before == "rucio" or before.startswith("<"):
                values[arg] = "data24" if arg == "scope" else "data24.x"
            else:
                values[arg] = world["names"].get(before, "demo.hzz")
    return values
