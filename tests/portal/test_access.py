"""Every route of the portal, walked as an anonymous visitor, the owner of the things it
shows (a physicist), a second physicist, an operator and an admin, and each answer held to
the one table of who may do what (``dss/access.py``). A route the table lacks fails."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from dss.access import NOBODY, READS, STAFF, access_of
from tests.conftest import make_user

IDENTITIES = ("anonymous", "owner", "physicist", "operator", "admin")


def routes(patterns=None, namespace: str | None = None):
    """(name, pattern) of every named route the URL resolver knows."""
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            yield from routes(p.url_patterns, p.namespace or namespace)
        elif isinstance(p, URLPattern) and p.name:
            yield (f"{namespace}:{p.name}" if namespace else p.name), p


def parameters(pattern: URLPattern) -> list[str]:
    return list(pattern.pattern.regex.groupindex)


@pytest.fixture
def world(demo_datasets, local_se, pilots_dir, settings, django_capture_on_commit_callbacks):
    """One of everything the routes show, the physicist's where things have an owner."""
    from dmu import actions as dmu_actions
    from dmu import catalogs
    from dss import tokens
    from pilotchecker import actions as pilot_actions
    from skims import actions as skim_actions
    from tagdb import actions as tag_actions
    from tests.skims.conftest import build_tags
    from tests.skims.test_skim_correctness import run_skim

    settings.PILOT_DIR = pilots_dir
    owner = make_user("owner", ["physicist"])
    users = {
        "owner": owner,
        "physicist": make_user("phys2", ["physicist"]),
        "operator": make_user("oper", ["operator"]),
        "admin": make_user("admin1", ["admin"]),
    }
    hzz, zmumu = demo_datasets
    collection = build_tags(hzz, "hzz")
    with django_capture_on_commit_callbacks(execute=False):
        done = run_skim(
            skim_actions.check_submit_skim(
                user=owner,
                inputs=[skim_actions.InputSpec(hzz, collection)],
                selection="n_muon >= 2",
                output_name="user.owner.done",
            )
        )
        queued = skim_actions.check_submit_skim(
            user=owner,
            inputs=[skim_actions.InputSpec(hzz, collection)],
            selection="n_muon >= 3",
            output_name="user.owner.queued",
        )
        build = tag_actions.do_start_build(zmumu, None, owner)
        query = tag_actions.check_save_query(owner, collection, "two muons", "n_muon >= 2")
        transfer = dmu_actions.check_request_transfer(hzz, local_se, user=users["admin"])
        registration = dmu_actions.do_enqueue_registration(
            "demo.more", local_se, ["demo/uproot-HZZ.root"], user=users["admin"]
        )
        # a dataset queued for Rucio (the walk itself runs with no Rucio configured)
        settings.DSS_RUCIO_URL = "http://rucio.invalid"
        catalogs.queue_rucio_registration(hzz)
        settings.DSS_RUCIO_URL = ""
        site = pilot_actions.do_add_site("UKI-TEST", "local", status="online")
        (pilot,) = pilot_actions.do_submit_pilots(site, 1, user=users["admin"])
    assert done.state == "succeeded", done.message
    token = tokens.do_issue_token(owner, "laptop").token
    cdb = conditions_world(users["admin"])
    by_param = {
        "dataset": hzz.name,
        "storage_element": local_se.name,
        "site": site.name,
        "skim": done.pk,
        "queued_skim": queued.pk,
        "provenance": done.provenance.pk,
        "build": build.pk,
        "query": query.pk,
        "collection": collection.pk,
        "transfer": transfer.pk,
        "registration": registration.pk,
        "pilot": pilot.pk,
        "token": token.pk,
        "cdb": cdb,
        "cond_gt": cdb["name"],
        "cond_type": cdb["pt"],
    }
    return users, by_param


def conditions_world(admin) -> dict:
    """A locked global tag with one IOV: writes through the routes reach the lock (409)
    rather than change it. Keyed by the conditions routes' path parameters."""
    from conditions import actions as cond

    gt = cond.do_create_global_tag(admin, "gt1")
    cond.do_create_payload_type(admin, "pt1")
    iov = cond.do_insert_iov(admin, gt, "pt1", "pt1/a.json", "ab", (1, 0))
    cond.do_set_status(admin, gt, "locked")
    return {
        "pk": gt.pk,
        "name": gt.name,
        "clone": "gt1-clone",
        "status": "locked",
        "gt": gt.name,
        "pt": "pt1",
        "major": 1,
        "minor": 0,
        "major_end": 5,
        "minor_end": 0,
        "iov": iov.pk,
        "pl": iov.payload_list.pk,
        "list": iov.payload_list.name,
    }


# The conditions routes' parameters that differ by route.
CDB_PARAMS = {
    "cdb-pt-delete": {"name": "pt1"},
    "cdb-pl-delete": {"name": "list"},
    "cdb-pl-id": {"pk": "pl"},
    "cdb-piov-id": {"pk": "iov"},
}


# What a route's path parameters name, by the route (a route with parameters that is not
# here fails the walk).
KINDS = {
    "token_rotate": "token",
    "token_revoke": "token",
    "api-token-rotate": "token",
    "api-token-revoke": "token",
    "api-skim": "skim",
    "api-skim-cancel": "queued_skim",
    "api-skim-retry": "skim",
    "skim": "skim",
    "skim_cancel": "queued_skim",
    "skim_retry": "skim",
    "api-provenance": "provenance",
    "api-provenance-rerun": "provenance",
    "provenance": "provenance",
    "provenance_rerun": "provenance",
    "api-dataset": "dataset",
    "api-dataset-rucio": "dataset",
    "dmu:dataset": "dataset",
    "dmu:dataset_rucio_register": "dataset",
    "api-registration": "registration",
    "dmu:registration": "registration",
    "dmu:storage_element": "storage_element",
    "dmu:storage_element_space": "storage_element",
    "api-transfer": "transfer",
    "api-transfer-cancel": "transfer",
    "dmu:transfer": "transfer",
    "dmu:transfer_cancel": "transfer",
    "api-tag-build-detail": "build",
    "api-tag-build-cancel": "build",
    "tagdb:build": "build",
    "tagdb:build_cancel": "build",
    "api-tag-query": "query",
    "tagdb:delete_query": "query",
    "api-site": "site",
    "api-site-status": "site",
    "pilotchecker:site": "site",
    "pilotchecker:site_edit": "site",
    "pilotchecker:site_status": "site",
    "api-pilot": "pilot",
    "api-pilot-report": "pilot",
    # any number: without the job's token every caller is refused alike
    "api-skim-job-report": "skim",
    "api-pilot-cancel": "pilot",
    "pilotchecker:pilot": "pilot",
    "pilotchecker:pilot_cancel": "pilot",
    "conditions:global_tag": "cond_gt",
    "conditions:global_tag_status": "cond_gt",
    "conditions:run_axis": "cond_type",
}
RUCIO = {"scope": "data24", "name": "data24.dimuon"}


def url_of(name: str, pattern: URLPattern, by_param: dict) -> str:
    params = parameters(pattern)
    if not params:
        return reverse(name)
    if name.startswith("admin:"):
        # refused before the object is looked up: any value of the right shape will do
        return reverse(name, kwargs={p: "dss" if p == "app_label" else "1" for p in params})
    if name.startswith("cdb-"):
        cdb = by_param["cdb"]
        remap = CDB_PARAMS.get(name, {})
        return reverse(name, kwargs={p: cdb.get(remap.get(p, p), remap.get(p, p)) for p in params})
    if "scope" in params:
        return reverse(name, kwargs={p: RUCIO[p] for p in params})
    if name.startswith("tagdb:") or name.startswith("api-tag-"):
        kind = KINDS.get(name, "collection")
    else:
        assert name in KINDS, f"the walk does not know what {name}'s parameters name"
        kind = KINDS[name]
    (param,) = params
    return reverse(name, kwargs={param: by_param[kind]})


def client_for(who: str, users: dict) -> Client:
    c = Client()
    if who != "anonymous":
        c.force_login(users[who])
    return c


def to_login(response) -> bool:
    """Sent to a login page to come back after (a logout's own redirect is not that)."""
    return response.status_code == 302 and "login/?next=" in response["Location"]


def refused(response, who: str, api: bool) -> bool:
    if who == "anonymous":
        # the API's documentation pages send a visitor to log in, as pages do
        return response.status_code in (401, 403) and api or to_login(response)
    return response.status_code in (403, 404)


def allowed(response) -> bool:
    return not to_login(response) and response.status_code not in (401, 403, 404, 405)


@pytest.mark.django_db(transaction=False)
def test_every_route_answers_each_role_as_the_table_says(world):
    users, by_param = world
    mismatches, missing = [], []
    for name, pattern in routes():
        rule = access_of(name)
        if rule is None:
            missing.append(name)
            continue
        url = url_of(name, pattern, by_param)
        api = url.startswith("/api/")
        for method in ("get", rule.method):
            who_may = rule.get if method == "get" else rule.post
            for who in IDENTITIES:
                cache.clear()  # rate limits are not what this test is about
                c = client_for(who, users)
                r = getattr(c, method)(url)
                assert r.status_code < 500, f"{method.upper()} {url} as {who}: {r.status_code}"
                if who_may is READS:
                    ok = (
                        refused(r, who, api)
                        if who not in rule.get
                        else (allowed(r) or r.status_code == 405)
                    )
                elif who_may is STAFF:
                    # no role is staff: the admin site sends everyone to a login page
                    ok = to_login(r) or r.status_code == 302 and r["Location"] == "/admin/"
                elif who_may is NOBODY or who not in who_may:
                    ok = refused(r, who, api) or r.status_code == 405
                else:
                    ok = allowed(r)
                if not ok:
                    mismatches.append(
                        f"{method.upper()} {url} ({name}) as {who}: {r.status_code}"
                        + (f" -> {r['Location']}" if r.status_code == 302 else "")
                    )
    assert not missing and not mismatches, "\n".join(
        [f"routes missing from dss/access.py: {missing}", *mismatches]
    )
