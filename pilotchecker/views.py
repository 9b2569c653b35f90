"""PilotChecker pages: sites overview, site form and history, the submit form, a pilot."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from dss.errors import DSSError
from dss.forms import add_domain_error

from . import actions
from .forms import SiteForm, StatusForm, SubmitForm
from .models import PILOT_ACTIVE_STATES, Pilot, Site

# Pages that answer htmx's polling with a fragment of themselves: without this header the
# back button may bring up the cached fragment instead of the page.
htmx_fragment = vary_on_headers("HX-Request")


def site_list(request):
    sites = actions.sites_overview()
    ctx = {
        "sites": sites,
        "taking_skims": [s for s in sites if s.can_take_skims],
        "strip_length": actions.STRIP_LENGTH,
    }
    return render(request, "pilotchecker/site_list.html", ctx)


@permission_required("pilotchecker.add_site", raise_exception=True)
def site_create(request):
    form = SiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            site = actions.do_add_site(
                form.cleaned_data["name"], user=request.user, **form.site_settings()
            )
        except DSSError as e:
            add_domain_error(form, e, e.where)
        else:
            messages.success(request, f"Site {site.name} added, in status {site.status}.")
            return redirect(site)
    return render(request, "pilotchecker/site_form.html", {"form": form, "site": None})


@permission_required("pilotchecker.change_site", raise_exception=True)
def site_edit(request, name: str):
    site = get_object_or_404(Site, name=name)
    form = SiteForm(request.POST or None, site=site)
    if request.method == "POST" and form.is_valid():
        try:
            actions.check_update_site(site, user=request.user, **form.site_settings())
        except DSSError as e:
            add_domain_error(form, e, e.where)
        else:
            messages.success(request, f"Site {site.name} saved.")
            return redirect(site)
    return render(request, "pilotchecker/site_form.html", {"form": form, "site": site})


@htmx_fragment
def site_detail(request, name: str):
    site = get_object_or_404(Site, name=name)
    pilots = site.pilots.select_related("owner").defer("report", "stdout_tail", "stderr_tail")
    page = Paginator(pilots, 20).get_page(request.GET.get("page"))
    site.pilots_open = site.pilots.filter(state__in=PILOT_ACTIVE_STATES).exists()
    ctx = {"site": site, "page": page}
    if request.htmx:
        return render(request, "pilotchecker/_site_pilots.html", ctx)
    recent = actions.recent_outcomes([site]).get(site.pk, [])
    ctx |= {
        "changes": site.status_changes.select_related("pilot")[:50],
        "days": actions.daily_pass_rates(site),
        "recent": recent,
        "pass_rate": actions.pass_rate(recent),
        "strip_length": actions.STRIP_LENGTH,
        "status_form": StatusForm(initial={"status": site.status}),
        "config": site.pilot_config(),
    }
    return render(request, "pilotchecker/site_detail.html", ctx)


@require_POST
@permission_required("pilotchecker.change_site", raise_exception=True)
def site_status(request, name: str):
    site = get_object_or_404(Site, name=name)
    form = StatusForm(request.POST)
    if form.is_valid():
        try:
            actions.do_set_site_status(
                site, form.cleaned_data["status"], form.cleaned_data["reason"], user=request.user
            )
        except DSSError as e:
            messages.error(request, str(e))
        else:
            messages.success(request, f"{site.name} is now {form.cleaned_data['status']}.")
    else:
        problems = "; ".join(f"{f}: {' '.join(e)}" for f, e in form.errors.items())
        messages.error(request, f"The status was not changed: {problems}")
    return redirect(site)


@permission_required("pilotchecker.add_pilot", raise_exception=True)
def submit(request):
    form = SubmitForm(request.POST or None, initial={"site": request.GET.get("site"), "n": 1})
    if request.method == "POST" and form.is_valid():
        site = form.cleaned_data["site"]
        try:
            with transaction.atomic():
                pilots = actions.do_submit_pilots(site, form.cleaned_data["n"], user=request.user)
        except DSSError as e:
            add_domain_error(form, e, "n" if e.where == "n" else "site")
        else:
            if len(pilots) == 1:
                messages.info(request, f"Pilot #{pilots[0].pk} submitted to {site.name}.")
                return redirect(pilots[0])
            messages.info(request, f"{len(pilots)} pilots submitted to {site.name}.")
            return redirect(site)
    return render(request, "pilotchecker/submit.html", {"form": form})


@htmx_fragment
def pilot_detail(request, pk: int):
    pilot = get_object_or_404(Pilot.objects.select_related("site", "owner"), pk=pk)
    template = "pilotchecker/_pilot_live.html" if request.htmx else "pilotchecker/pilot_detail.html"
    ctx = {
        "pilot": pilot,
        "events": pilot.events.all(),
        "may_read_output": pilot.site.may_read_pilot_output(request.user),
    }
    return render(request, template, ctx)


@require_POST
@permission_required("pilotchecker.add_pilot", raise_exception=True)
def pilot_cancel(request, pk: int):
    pilot = get_object_or_404(Pilot.objects.select_related("site"), pk=pk)
    try:
        actions.do_cancel_pilot(pilot, user=request.user)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        messages.info(request, f"Pilot #{pilot.pk} cancelled.")
    return redirect(pilot)
