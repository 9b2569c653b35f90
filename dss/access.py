"""Who may open each page and call each API route: one table for the whole portal.

Every named route of the portal is here, by its URL name, with who may read it (GET) and
who may act through it (POST, and PATCH or DELETE where a route has them). The views keep
their own checks; ``tests/portal/test_access.py`` walks every route the URL resolver knows
as an anonymous visitor, two physicists, an operator and an admin, and holds each answer to
this table. A route missing here fails that test, so a new page cannot arrive unlisted.

Who, in the table's words:

- ``ANYONE``: no login needed.
- ``USER``: anyone logged in, whatever their roles.
- ``PHYSICIST``, ``OPERATOR``, ``ADMIN``: holders of that role (a superuser holds all).
- ``OWNER``: the user the thing belongs to (their skim, build, saved query, API token);
  everyone else is refused, or told it does not exist (their own tokens and queries).
- ``OWNER | ADMIN``: the owner, or an admin.
- ``NOBODY``: no role may (the route does not take this method, or needs a credential that
  no user holds, such as a pilot's one-time token).
- ``READS``: for POST only: the route just reads (it answers a POST as a GET, or refuses the
  method); whoever may GET it may POST it.
- ``STAFF``: the Django admin site, for staff accounts only (the roles above are not staff).
- ``CONDITIONS_MANAGER``: holders of the conditions-manager role.

A route that acts with PUT or DELETE only names that method; the walk uses it in place of
POST.

What a pilot's page and API show of its report and logs depends on more than the route
(the site's contacts): see ``pilotchecker.models.Site.may_read_pilot_output``.
"""

from __future__ import annotations

from dataclasses import dataclass

ANYONE = frozenset({"anonymous", "physicist", "operator", "admin", "owner"})
USER = frozenset({"physicist", "operator", "admin", "owner"})
PHYSICIST = frozenset({"physicist", "owner"})
OPERATOR = frozenset({"operator"})
ADMIN = frozenset({"admin"})
OWNER = frozenset({"owner"})
NOBODY: frozenset[str] = frozenset()
STAFF: frozenset[str] = frozenset({"staff"})
CONDITIONS_MANAGER = frozenset({"conditions-manager"})
READS = None  # POST only: as GET


@dataclass(frozen=True)
class Access:
    """Who may GET a route and who may change something through it."""

    get: frozenset[str]
    post: frozenset[str] | None = READS
    # the method that acts through the route, for routes that act with PUT or DELETE only
    method: str = "post"


def page(get: frozenset[str] = USER, post: frozenset[str] | None = READS) -> Access:
    return Access(get, post)


def action(post: frozenset[str]) -> Access:
    """A route that only acts (POST); a GET is refused."""
    return Access(NOBODY, post)


ROUTES: dict[str, Access] = {
    # the portal as a whole
    "home": page(),
    "login": Access(ANYONE, ANYONE),
    "logout": action(USER),
    "account": page(),
    "token_create": action(USER),
    "token_rotate": action(OWNER),
    "token_revoke": action(OWNER),
    "admin:*": Access(STAFF, STAFF),
    "admin:login": Access(ANYONE, ANYONE),
    # API: documentation and tokens
    "api-schema": Access(USER, NOBODY),
    "api-docs": Access(USER, NOBODY),
    "api-redoc": Access(USER, NOBODY),
    "api-token": action(ANYONE),
    "api-tokens": Access(USER, USER),
    "api-token-rotate": action(OWNER),
    "api-token-revoke": action(OWNER),
    # catalog, storage, transfers, Rucio
    "dmu:datasets": page(),
    "dmu:register": Access(ADMIN, ADMIN),
    "dmu:dataset": page(),
    "dmu:registration": page(),
    "dmu:storage_elements": page(),
    "dmu:storage_element": page(),
    "dmu:storage_element_space": page(),
    "dmu:transfers": page(),
    "dmu:transfer_new": Access(ADMIN, ADMIN),
    "dmu:transfer": page(),
    "dmu:transfer_cancel": action(ADMIN),
    "dmu:rucio_search": page(),
    "dmu:rucio_dataset": page(),
    "dmu:rucio_import": action(ADMIN),
    "dmu:dataset_rucio_register": action(ADMIN),
    "api-datasets": Access(USER, NOBODY),
    "api-register": action(PHYSICIST | ADMIN),
    "api-dataset": Access(USER, NOBODY),
    "api-registration": Access(USER, NOBODY),
    "api-storage-elements": Access(USER, NOBODY),
    "api-whoami": Access(USER, NOBODY),
    "api-transfers": Access(USER, ADMIN),
    "api-transfer": Access(USER, NOBODY),
    "api-transfer-cancel": action(ADMIN),
    "api-rucio-datasets": Access(USER, NOBODY),
    "api-rucio-dataset": Access(USER, NOBODY),
    "api-rucio-import": action(ADMIN),
    "api-dataset-rucio": Access(USER, ADMIN),
    # TAGs
    "tagdb:collections": page(),
    "tagdb:build_new": Access(PHYSICIST | ADMIN, PHYSICIST | ADMIN),
    "tagdb:build": page(),
    "tagdb:build_cancel": action(OWNER | ADMIN),
    "tagdb:delete_query": action(OWNER),
    "tagdb:collection": page(),
    "tagdb:count": page(),
    "tagdb:events_csv": page(),
    "tagdb:events_json": page(),
    "tagdb:histogram_svg": page(),
    "tagdb:save_query": action(PHYSICIST),
    "tagdb:pick": action(USER),
    "tagdb:good_runs": action(USER),
    "api-tag-collections": Access(USER, NOBODY),
    "api-tag-schemas": Access(USER, NOBODY),
    "api-tag-build": action(PHYSICIST | ADMIN),
    "api-tag-build-detail": Access(USER, NOBODY),
    "api-tag-build-cancel": action(OWNER | ADMIN),
    "api-tag-query": Access(OWNER, NOBODY),
    "api-tag-collection": Access(USER, NOBODY),
    "api-tag-count": action(USER),
    "api-tag-histogram": action(USER),
    "api-tag-events": action(USER),
    "api-tag-top": action(USER),
    "api-tag-files": action(USER),
    "api-tag-pick": action(USER),
    "api-tag-good-runs": action(USER),
    "api-tag-queries": Access(USER, PHYSICIST),
    # skims and provenance
    "skims": page(),
    "skim_new": Access(PHYSICIST, PHYSICIST),
    "skim": page(),
    "skim_cancel": action(OWNER | ADMIN),
    "skim_retry": action(OWNER | ADMIN),
    "provenance_list": page(OPERATOR),
    "provenance": page(OPERATOR),
    "provenance_rerun": action(OPERATOR),
    "api-skims": Access(USER, PHYSICIST),
    "api-skim": Access(USER, NOBODY),
    "api-skim-cancel": action(OWNER | ADMIN),
    "api-skim-retry": action(OWNER | ADMIN),
    # a skim job's one-time token, which no user holds
    "api-skim-job-report": action(NOBODY),
    "api-provenance-list": Access(OPERATOR, NOBODY),
    "api-provenance": Access(OPERATOR, NOBODY),
    "api-provenance-rerun": action(OPERATOR),
    "api-branch-presets": Access(USER, NOBODY),
    # sites and pilots
    "pilotchecker:sites": page(),
    "pilotchecker:site_create": Access(ADMIN, ADMIN),
    "pilotchecker:site": page(),
    "pilotchecker:site_edit": Access(ADMIN, ADMIN),
    "pilotchecker:site_status": action(ADMIN),
    "pilotchecker:submit": Access(ADMIN, ADMIN),
    "pilotchecker:pilot": page(),
    "pilotchecker:pilot_cancel": action(ADMIN),
    "api-sites": Access(USER, ADMIN),
    "api-site": Access(USER, NOBODY),
    "api-site-status": action(ADMIN),
    "api-pilots": Access(USER, ADMIN),
    "api-pilot": Access(USER, NOBODY),
    "api-ping": Access(ANYONE, NOBODY),
    # conditions pages
    "conditions:global_tags": page(),
    "conditions:compare": page(),
    "conditions:global_tag": page(),
    "conditions:global_tag_status": action(ADMIN | CONDITIONS_MANAGER),
    "conditions:run_axis": page(),
    # the conditions database (nopayloaddb's API): reads open to worker nodes
    "cdb-gt": Access(ANYONE, ADMIN | CONDITIONS_MANAGER),
    "cdb-gt-id": Access(ANYONE, NOBODY),
    "cdb-gt-name": Access(ANYONE, NOBODY),
    "cdb-gts": Access(ANYONE, NOBODY),
    "cdb-gtstatus": Access(ANYONE, ADMIN | CONDITIONS_MANAGER),
    "cdb-gt-lists": Access(ANYONE, NOBODY),
    "cdb-gt-delete": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "delete"),
    "cdb-gt-clone": action(ADMIN | CONDITIONS_MANAGER),
    "cdb-gt-status": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "put"),
    "cdb-pt": Access(ANYONE, ADMIN | CONDITIONS_MANAGER),
    "cdb-pt-delete": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "delete"),
    "cdb-pl": Access(ANYONE, ADMIN | CONDITIONS_MANAGER),
    "cdb-pl-id": Access(ANYONE, NOBODY),
    "cdb-pl-attach": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "put"),
    "cdb-pl-delete": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "delete"),
    "cdb-piov": Access(ANYONE, ADMIN | CONDITIONS_MANAGER),
    "cdb-piov-id": Access(ANYONE, NOBODY),
    "cdb-piov-attach": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "put"),
    "cdb-piov-bulk": action(ADMIN | CONDITIONS_MANAGER),
    "cdb-piov-delete": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "delete"),
    "cdb-piov-delete-range": Access(NOBODY, ADMIN | CONDITIONS_MANAGER, "delete"),
    "cdb-lookup": Access(ANYONE, NOBODY),
    "api-conditions-grl": Access(ANYONE, NOBODY),
    "api-conditions-lumi": action(ANYONE),
    # a pilot's one-time token, which no user holds
    "api-pilot-report": action(NOBODY),
    "api-pilot-cancel": action(ADMIN),
}


def access_of(route_name: str) -> Access | None:
    """The table's entry for a URL name (``namespace:name``); the Django admin site's
    routes share one entry unless they have their own."""
    if route_name in ROUTES:
        return ROUTES[route_name]
    if route_name.startswith("admin:"):
        return ROUTES["admin:*"]
    return None
