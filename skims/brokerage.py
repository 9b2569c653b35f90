"""Which compute site may run a skim part: the broker.

A site may take a skim job when all of these hold:

- it is ``online`` (not test, broker-off or offline: see pilotchecker's status rules);
- its latest pilot with an outcome passed, so its worker nodes were seen to be fit lately;
- its nodes reach every storage element the part needs, as its pilots verify it: a
  network storage element (root://, https://) must be among the site's ``reach``
  requirements (each pilot connects to it); a local-directory one (file://) must lie
  under one of the site's ``paths`` requirements (each pilot checks the path exists on
  the node, which is how a shared file system is shown to be mounted there).

Skims build on pilotchecker (sites, pilots, batch adapters); pilotchecker never imports
skims, so the dependency still points one way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from django.db.models import Count

from dmu.models import File, ReplicaState, StorageElement
from dss.errors import Conflict, InvalidInput, NotFound
from pilotchecker import actions as pilot_actions
from pilotchecker.models import Site, SiteStatus

NETWORK_SCHEMES = ("root", "xroot", "https", "http", "davs", "dav")


class NoSite(Conflict):
    """No site may take the work now; the message says why for each candidate."""

    code = "no_site"


def se_reachable(site: Site, se: StorageElement) -> bool:
    """Whether the site's pilots verify that its nodes reach ``se`` (see the module doc)."""
    url = urlsplit(se.url)
    requirements = site.requirements or {}
    if url.scheme in NETWORK_SCHEMES:
        return se.name in (requirements.get("reach") or [])
    if url.scheme == "file":
        root = PurePosixPath(unquote(url.path))
        for path in requirements.get("paths") or []:
            shared = PurePosixPath(path)
            if shared.is_absolute() and (root == shared or shared in root.parents):
                return True
    return False


def why_not(site: Site, needed: Sequence[StorageElement]) -> str:
    """Why ``site`` may not take a job that needs the storage elements ``needed``; '' if it may."""
    if site.status != SiteStatus.ONLINE:
        reason = f": {site.status_reason}" if site.status_reason else ""
        return f"{site.name} is {site.status}{reason}"
    if not site.can_take_skims:
        return f"{site.name}'s latest pilot did not pass (or it has none)"
    unreachable = [se.name for se in needed if not se_reachable(site, se)]
    if unreachable:
        return (
            f"{site.name}'s pilots do not check that its nodes reach {', '.join(unreachable)} "
            "(a network storage element must be in its 'reach' requirements, a local one "
            "under its 'paths')"
        )
    return ""


def storage_needed(files: Iterable[File], output_se: StorageElement) -> list[list[StorageElement]]:
    """For each input file, the storage elements holding an available replica of it (any
    one will do); and, last, the output storage element alone."""
    needed: list[list[StorageElement]] = []
    for f in files:
        ses = [
            r.storage_element
            for r in f.replicas.select_related("storage_element").filter(
                state=ReplicaState.AVAILABLE
            )
        ]
        needed.append(ses)
    needed.append([output_se])
    return needed


def _reason_for(site: Site, needed: list[list[StorageElement]]) -> str:
    base = why_not(site, [])
    if base:
        return base
    for options in needed:
        if options and not any(se_reachable(site, se) for se in options):
            return why_not(site, options[:1])
    return ""


def eligible_sites(
    needed: list[list[StorageElement]], *, exclude: Iterable[int] = ()
) -> tuple[list[Site], list[str]]:
    """The sites that may take a job needing ``needed`` (see :func:`storage_needed`), those
    with the fewest skim jobs under way first; and why each other site may not."""
    fit, refused = [], []
    for site in Site.objects.exclude(pk__in=list(exclude)).order_by("name"):
        reason = _reason_for(site, needed)
        if reason:
            refused.append(reason)
        else:
            fit.append(site)
    from .models import SITE_JOB_ACTIVE, SiteJob

    load = dict(
        SiteJob.objects.filter(state__in=SITE_JOB_ACTIVE, site__in=fit)
        .values_list("site")
        .annotate(n=Count("pk"))
        .values_list("site", "n")
    )
    fit.sort(key=lambda s: (load.get(s.pk, 0), s.name))
    return fit, refused


def choose_site(
    needed: list[list[StorageElement]], *, named: Site | None = None, avoid: Iterable[int] = ()
) -> Site:
    """The site for one job: ``named`` if it may take it, else the least busy eligible site,
    preferring those not in ``avoid`` (where the part failed before). NoSite saying why
    every candidate was refused when none may."""
    if named is not None:
        reason = _reason_for(named, needed)
        if reason:
            raise NoSite(f"the chosen site cannot take skim jobs now: {reason}", where="site")
        return named
    fit, refused = eligible_sites(needed)
    if not fit:
        detail = "; ".join(refused) if refused else "no sites are registered"
        raise NoSite(f"no site can take skim jobs now ({detail})", where="site")
    avoid = set(avoid)
    fresh = [s for s in fit if s.pk not in avoid]
    return (fresh or fit)[0]


def check_run_on(run_on: str, site_name: str | None = None) -> Site | None:
    """The site named for a skim request, checked (InvalidInput naming the field)."""
    from .models import RunOn

    if run_on not in RunOn.values:
        raise InvalidInput(
            f"unknown choice {run_on!r} (known: {', '.join(RunOn.values)})", where="run_on"
        )
    if run_on != RunOn.SITE:
        if site_name:
            raise InvalidInput(
                "a site is named only when the skim runs on a named site", where="site"
            )
        return None
    if not site_name:
        raise InvalidInput("name the site the skim runs on", where="site")
    try:
        return pilot_actions.get_site(site_name)
    except (InvalidInput, NotFound) as e:
        raise InvalidInput(e.message, where="site") from None


def where_to_run(text: str | None) -> tuple[str, str | None]:
    """A request's ``site`` word as (run_on, site name): empty or ``portal`` for the
    portal's workers, ``auto`` for the broker's choice, else the name of a site."""
    from .models import RunOn

    word = (text or "").strip()
    if word in ("", RunOn.PORTAL):
        return RunOn.PORTAL, None
    if word == RunOn.AUTO:
        return RunOn.AUTO, None
    return RunOn.SITE, word
