"""Catalog pages: datasets, storage elements, registration, transfers."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.http import HttpResponse, QueryDict
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from dss.errors import DSSError
from dss.forms import add_domain_error
from dss.generations import ACCOUNTS, Cached
from dss.jobs import FINAL_STATES, JobState

from . import actions, catalogs
from .forms import RegisterForm, TransferForm
from .models import (
    CATALOG,
    Dataset,
    File,
    RegistrationJob,
    Replica,
    StorageElement,
    Transfer,
    TransferFile,
)

# Pages that answer an htmx request with a fragment of themselves: without this header a
# browser's back button may show the cached fragment instead of the page.
htmx_fragment = vary_on_headers("HX-Request")

SORTS = {
    "name": "name",
    "files": "n_files",
    "events": "n_events",
    "bytes": "n_bytes",
    "created": "created_at",
}


@htmx_fragment
def dataset_list(request):
    """The catalog a page (25 datasets) at a time, searched and sorted.

    The totals and the table are cached under the catalog's generation (dss.generations):
    computed once per change of the catalog, not once per request. What they show depends
    only on the search, the order and the page number, so the links in them carry those
    alone. The whole page is also cached for its user, under the catalog's and the
    accounts' generations (what the header shows of the user: name, roles, permissions)
    and the browser's CSRF secret (the page's forms carry a token of it); never when a
    message waits to be shown, or when the browser has no CSRF cookie yet (the answer
    must set one)."""
    q = request.GET.get("q", "")
    sort = request.GET.get("sort", "name")
    key = sort.lstrip("-")
    if key not in SORTS:
        sort, key = "name", "name"
    order = ("-" if sort.startswith("-") else "") + SORTS[key]
    search = q.strip()
    cached = Cached(CATALOG, ACCOUNTS)
    totals = cached(
        ("dataset-totals", search),
        lambda: actions.dataset_list_totals(actions.search_datasets(search)),
    )
    # the page number made valid against the count alone (no query is built for a page
    # that comes from the cache)
    number = Paginator(range(totals["datasets"]), 25).get_page(request.GET.get("page")).number

    def table() -> str:
        paginator = Paginator(actions.search_datasets(search).order_by(order, "name"), 25)
        paginator.count = totals["datasets"]  # counted once, with the totals
        params = QueryDict(mutable=True)
        params.update({"q": q, "sort": sort} if q else {"sort": sort})
        ctx = {"page": paginator.page(number), "q": q, "totals": totals, "params": params}
        return render_to_string("dmu/_dataset_table.html", ctx)

    def fragment() -> str:
        return cached(("dataset-table", q, sort, number), table)

    def whole() -> str:
        ctx = {"table": mark_safe(fragment()), "q": q, "sort": sort}
        return render_to_string("dmu/dataset_list.html", ctx, request=request)

    if request.htmx:
        return HttpResponse(fragment())
    secret = request.META.get("CSRF_COOKIE", "")
    if secret != request.COOKIES.get(settings.CSRF_COOKIE_NAME) or len(
        messages.get_messages(request)
    ):
        return HttpResponse(whole())
    get_token(request)  # the cookie is sent again, renewing its expiry, as a page drawn does
    csrf = hashlib.sha256(secret.encode()).hexdigest()
    return HttpResponse(cached(("dataset-page", request.user.pk, csrf, q, sort, number), whole))


def dataset_detail(request, name: str):
    dataset = get_object_or_404(actions.datasets_with_totals(), name=name)
    files = dataset.files.prefetch_related("replicas__storage_element").order_by("lfn")
    ses = StorageElement.objects.filter(replicas__file__dataset=dataset).annotate(
        n=Count("replicas"), size=Sum("replicas__file__bytes")
    )
    return render(
        request, "dmu/dataset_detail.html", {"dataset": dataset, "files": files, "ses": ses}
    )


def storage_element_list(request):
    ses = StorageElement.objects.annotate(n=Count("replicas"), size=Sum("replicas__file__bytes"))
    return render(request, "dmu/storage_element_list.html", {"ses": ses})


def storage_element_detail(request, name: str):
    se = get_object_or_404(StorageElement, name=name)
    in_dataset = (
        File.objects.filter(dataset=OuterRef("pk"))
        .order_by()
        .values("dataset")
        .annotate(c=Count("pk"))
        .values("c")
    )
    datasets = (
        Dataset.objects.filter(files__replicas__storage_element=se)
        .annotate(n=Count("files"), size=Sum("files__bytes"), n_files=Subquery(in_dataset))
        .order_by("name")
    )
    # an SE may hold thousands of datasets: a page at a time
    datasets = Paginator(datasets, 50).get_page(request.GET.get("page"))
    held = Replica.objects.filter(storage_element=se).aggregate(
        n=Count("pk"), size=Sum("file__bytes")
    )
    from_here = TransferFile.objects.filter(source=se).values("transfer")
    transfers = (
        actions.transfers_with_totals()
        .filter(Q(destination=se) | Q(source=se) | Q(pk__in=from_here))
        .order_by("-created_at")[:10]
    )
    return render(
        request,
        "dmu/storage_element_detail.html",
        {"se": se, "datasets": datasets, "held": held, "transfers": transfers},
    )


def storage_element_space(request, name: str):
    """The free space of a storage element, asked of it on demand (htmx fragment)."""
    se = get_object_or_404(StorageElement, name=name)
    return render(request, "dmu/_free_space.html", {"space": actions.get_free_space(se)})


@permission_required("dmu.add_dataset", raise_exception=True)
def register(request):
    form = RegisterForm(request.POST or None, initial={"dataset": request.GET.get("dataset", "")})
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            with transaction.atomic():
                job = actions.do_enqueue_registration(
                    d["dataset"],
                    d["storage_element"],
                    d["paths"],
                    user=request.user,
                    tree=d["tree"],
                )
        except DSSError as e:
            add_domain_error(form, e, "paths" if e.where not in ("dataset name",) else "dataset")
        else:
            messages.info(request, f"Registration of {job.dataset_name} queued.")
            return redirect("dmu:registration", job.pk)
    return render(request, "dmu/register.html", {"form": form})


@htmx_fragment
def registration(request, pk: int):
    job = get_object_or_404(
        RegistrationJob.objects.select_related("storage_element", "owner"), pk=pk
    )
    template = "dmu/_registration_status.html" if request.htmx else "dmu/registration.html"
    return render(request, template, {"job": job, "events": job.events.all()})


# --------------------------------------------------------------------------- transfers


@htmx_fragment
def transfer_list(request):
    qs = actions.transfers_with_totals().order_by("-created_at")
    state = request.GET.get("state", "")
    if state in JobState.values:
        qs = qs.filter(state=state)
    page = Paginator(qs, 25).get_page(request.GET.get("page"))
    live = any(t.state not in FINAL_STATES for t in page)
    ctx = {"page": page, "state": state, "states": JobState.choices, "live": live}
    template = "dmu/_transfer_table.html" if request.htmx else "dmu/transfer_list.html"
    return render(request, template, ctx)


@htmx_fragment
def transfer_detail(request, pk: int):
    transfer = get_object_or_404(actions.transfers_with_totals(), pk=pk)
    ctx = {
        "transfer": transfer,
        "files": transfer.files.select_related("file", "source").order_by("file__lfn"),
        "events": transfer.events.all(),
    }
    template = "dmu/_transfer_status.html" if request.htmx else "dmu/transfer_detail.html"
    return render(request, template, ctx)


@permission_required("dmu.add_transfer", raise_exception=True)
def transfer_new(request):
    initial = {k: request.GET.get(k, "") for k in ("dataset", "destination", "source")}
    initial["files"] = request.GET.getlist("files")
    form = TransferForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            transfer = actions.check_request_transfer(
                d["dataset"],
                d["destination"],
                lfns=d["files"] or None,
                source=d["source"],
                user=request.user,
            )
        except DSSError as e:
            add_domain_error(form, e, e.where)
        else:
            messages.info(request, f"Transfer #{transfer.pk} queued.")
            return redirect(transfer)
    return render(request, "dmu/transfer_new.html", {"form": form})


@require_POST
@permission_required("dmu.add_transfer", raise_exception=True)
def transfer_cancel(request, pk: int):
    transfer = get_object_or_404(Transfer, pk=pk)
    try:
        actions.do_cancel_transfer(transfer, request.user)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        messages.info(request, f"Transfer #{transfer.pk} cancelled; copied files stay registered.")
    return redirect(transfer)


# --------------------------------------------------------------------------- Rucio


def rucio_search(request):
    """Find datasets in the experiment's Rucio by scope and name pattern."""
    scope = request.GET.get("scope", "").strip()
    pattern = request.GET.get("name", "").strip() or "*"
    found, error = [], None
    if catalogs.rucio_configured() and scope:
        try:
            found = catalogs.RucioCatalog().search(scope, pattern)
        except DSSError as e:
            error = e
    ctx = {
        "configured": catalogs.rucio_configured(),
        "scope": scope,
        "pattern": pattern,
        "found": found,
        "error": error,
    }
    return render(request, "dmu/rucio_search.html", ctx)


def rucio_dataset(request, scope: str, name: str):
    """A Rucio dataset's files and replicas, and the button that imports it."""
    files, error = [], None
    try:
        files = catalogs.RucioCatalog().files(scope, name)
    except DSSError as e:
        error = e
    in_portal = Dataset.objects.filter(name=catalogs.portal_name_for_or_none(scope, name)).first()
    ctx = {
        "scope": scope,
        "name": name,
        "files": files,
        "error": error,
        "in_portal": in_portal,
        "rses": catalogs.storage_elements_by_rse(),
    }
    return render(request, "dmu/rucio_dataset.html", ctx, status=_status_of(error))


def _status_of(error: DSSError | None) -> int:
    if error is None:
        return 200
    return 502 if isinstance(error, catalogs.RucioUnavailable) else 400


@require_POST
@permission_required("dmu.add_dataset", raise_exception=True)
def rucio_import(request, scope: str, name: str):
    try:
        dataset, added = catalogs.check_import_from_rucio(scope, name, user=request.user)
    except DSSError as e:
        messages.error(request, f"Import of {scope}:{name} failed: {e}")
        return redirect("dmu:rucio_dataset", scope, name)
    messages.info(request, f"{added} file(s) of {scope}:{name} imported into {dataset.name}.")
    return redirect(dataset)


@require_POST
@permission_required("dmu.add_dataset", raise_exception=True)
def dataset_rucio_register(request, name: str):
    """Queue (again) a dataset's registration in Rucio."""
    dataset = get_object_or_404(Dataset, name=name)
    with transaction.atomic():
        reg = catalogs.queue_rucio_registration(dataset)
    if reg is None:
        messages.error(request, "No Rucio server is configured (DSS_RUCIO_URL).")
    else:
        messages.info(request, f"Registration of {dataset.name} in Rucio queued.")
    return redirect(dataset)
