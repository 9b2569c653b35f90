"""Every page and API route answers hostile input (NUL, lone surrogates, integers past
bigint, floats past double, NaN, wrong types, missing ids) with a 4xx, never a 500; the API
with its usual JSON error body. Run on PostgreSQL too (DATABASE_URL), which refuses NUL in
text and integers past bigint where SQLite lets them through."""

from __future__ import annotations

import itertools
from urllib.parse import quote, urlencode

import pytest
from django.test import Client

from tests.portal.hostile import (
    HOSTILE_JSON,
    HOSTILE_TEXT,
    build_world,
    forms_of,
    good_args,
    hostile_paths,
    json_with,
    routes,
)

pytestmark = pytest.mark.django_db(transaction=True)
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def world(demo_datasets, tmp_path, settings, django_user_model):
    return build_world(demo_datasets, tmp_path, settings, django_user_model)


def server_errors(answers) -> str:
    return "\n".join(f"{method} {url} {what}: {status}" for method, url, what, status in answers)


def _client(world) -> Client:
    c = Client(raise_request_exception=False)
    c.force_login(world["user"])
    return c


def _check(answers, method, url, what, r, api):
    if r.status_code >= 500:
        answers.append((method, url, what, r.status_code))
    elif api and r.status_code >= 400 and r.get("Content-Type", "").startswith("application/json"):
        body = r.json()
        if not (isinstance(body, dict) and "error" in body):
            answers.append((method, url, what, f"{r.status_code} without an error code"))


def test_no_route_answers_a_hostile_path_with_a_server_error(world):
    c = _client(world)
    answers = []
    for route in routes():
        if route.name in ("api-schema",):
            continue
        for url in hostile_paths(route, good_args(route.template, world)):
            for method in ("get", "post"):
                r = getattr(c, method)(url)
                _check(answers, method, url, "path", r, route.api)
    assert not answers, server_errors(answers)


def test_no_page_answers_hostile_form_or_query_input_with_a_server_error(world):
    c = _client(world)
    answers = []
    pages, post_only, every_field = [], [], set()
    for route in routes():
        if route.api:
            continue
        url = route.fill(good_args(route.template, world))
        r = c.get(url)
        if r.status_code == 405:
            post_only.append(url)
        elif r.status_code == 200 and r.get("Content-Type", "").startswith("text/html"):
            forms = [f for f in forms_of(r.content.decode(), url) if f.action != "/logout/"]
            pages.append((url, forms))
            for form in forms:
                every_field |= set(form.fields)

    counts = {"get": 0, "post": 0}

    def send(method: str, target: str, data: dict, what: str) -> None:
        # as a browser sends it: a lone surrogate becomes bytes that are not UTF-8
        encoded = urlencode(data, doseq=True, errors="surrogatepass")
        if method == "post":
            r = c.post(target, encoded, content_type=FORM)
        else:
            r = c.get(f"{target}?{encoded}")
        _check(answers, method, target, what, r, False)
        counts[method] += 1

    sent_forms = set()
    for url, forms in pages:
        params = {"page", "sort", "q", "state", "format", "embedded", "mine"}
        for form in forms:
            params |= set(form.fields)
            # a form on many pages (the header's search) is the same target: sent once
            key = (form.method, form.action, tuple(sorted(form.fields)))
            if key in sent_forms:
                continue
            sent_forms.add(key)
            for name in form.fields:
                for bad in HOSTILE_TEXT:
                    data = {k: v for k, v in form.fields.items() if v}
                    data[name] = [bad]
                    send(form.method, form.action, data, f"{name}={bad[:30]!r}")
        # Query parameters: every one the page's forms send, all at once (a page's form
        # validates them together, so one refused value does not hide another's error), and
        # the ones views read outside forms (paging, sorting) one at a time.
        for bad in HOSTILE_TEXT:
            send("get", url, dict.fromkeys(sorted(params), bad), f"?*={bad[:30]!r}")
            for name in ("page", "sort"):
                send("get", url, {name: bad}, f"?{name}={bad[:30]!r}")
    # Routes that only take POST get the fields of the forms that post to them, and the
    # names the portal's POST-only routes read.
    for url in post_only:
        names = {"selection", "name", "good_runs", "events", "output_name", "reason", "status"}
        names |= {n for _, forms in pages for f in forms if f.action == url for n in f.fields}
        for name in sorted(names):
            for bad in HOSTILE_TEXT:
                send("post", url, {name: bad}, f"{name}={bad[:30]!r}")
    assert c.get("/account/").status_code == 200, "the fuzzing logged itself out"
    assert len(pages) > 20 and len(every_field) > 30 and len(post_only) > 8
    print(f"{counts['get']} GET and {counts['post']} POST requests")
    assert not answers, server_errors(answers)


def _schema(c) -> dict:
    r = c.get("/api/schema/?format=json")
    assert r.status_code == 200
    return r.json()


# Values that pass validation, by field name: each request sets one field to a hostile value
# and the others to these, so that the hostile one travels as far into the portal as it can.
GOOD = {
    "dataset": "demo.hzz",
    "storage_element": "LOCAL",
    "paths": ["demo/uproot-HZZ.root"],
    "site": "UKI-TEST",
    "n": 1,
    "selection": "n_muon >= 2",
    "attribute": "met",
    "collections": [],
    "datasets": ["demo.hzz"],
    "output_name": "user.root.fuzz",
    "name": "fuzz",
    "batch_system": "local",
    "status": "test",
    "reason": "fuzz",
    "destination": "OTHER",
    "events": [[1, 2]],
    "schema": "hzz",
}


def _body_fields(schema: dict, operation: dict) -> list[str]:
    content = (operation.get("requestBody") or {}).get("content") or {}
    media = content.get("application/json") or {}
    ref = (media.get("schema") or {}).get("$ref", "")
    if not ref:
        return ["selection", "name"]  # free-form bodies: try some likely names
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return list(component.get("properties", {}))


def test_no_api_operation_answers_hostile_json_or_query_input_with_a_server_error(world):
    from tests.conftest import api_token

    token = api_token(world["user"])
    c = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Token {token}")
    schema = _schema(c)
    answers = []
    serial = itertools.count()
    for path, operations in schema["paths"].items():
        route = path.replace("{id}", "<int:pk>")
        route = route.replace("{name}", "<str:name>").replace("{scope}", "<str:scope>")
        url = route
        args = good_args(route, world)
        for arg, value in args.items():
            url = url.replace(f"<int:{arg}>", value).replace(f"<str:{arg}>", value)
        for method, operation in operations.items():
            if method not in ("get", "post", "patch", "put", "delete"):
                continue
            query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            for name in [*query, "limit", "offset"]:
                for bad in HOSTILE_TEXT:
                    target = f"{url}?{quote(name)}={quote(bad, errors='surrogatepass')}"
                    r = getattr(c, method)(target)
                    _check(answers, method, url, f"?{name}={bad[:30]!r}", r, True)
            if method in ("get", "delete"):
                continue
            fields = _body_fields(schema, operation)
            base = {k: GOOD[k] for k in fields if k in GOOD}
            for name in fields:
                for raw in HOSTILE_JSON:
                    # a new output each time, so that no request stops at "name taken"
                    if "output_name" in base:
                        base["output_name"] = f"user.root.fuzz{len(answers)}x{next(serial)}"
                    r = getattr(c, method)(
                        url, json_with(base, name, raw), content_type="application/json"
                    )
                    _check(answers, method, url, f"{name}={raw[:30]}", r, True)
            for raw in ("[]", '"x"', "1e309", "{", "null"):
                r = getattr(c, method)(url, raw, content_type="application/json")
                _check(answers, method, url, f"body {raw}", r, True)
    assert not answers, server_errors(answers)
