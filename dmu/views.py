"""Catalog pages: datasets, storage elements, registration."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render

from dss.errors import DSSError
from dss.forms import add_domain_error

from . import actions
from .forms import RegisterForm
from .models import Dataset, File, RegistrationJob, Replica, StorageElement

SORTS = {
    "name": "name",
    "files": "n_files",
    "events": "n_events",
    "bytes": "n_bytes",
    "created": "created_at",
}


def dataset_list(request):
    q = request.GET.get("q", "")
    sort = request.GET.get("sort", "name")
    key = sort.lstrip("-")
    if key not in SORTS:
        sort, key = "name", "name"
    order = ("-" if sort.startswith("-") else "") + SORTS[key]
    qs = actions.search_datasets(q).order_by(order, "name")
    totals = Dataset.objects.filter(pk__in=qs.values("pk")).aggregate(
        datasets=Count("pk", distinct=True)
    ) | File.objects.filter(dataset__in=qs.values("pk")).aggregate(
        files=Count("pk"), events=Sum("events"), bytes=Sum("bytes")
    )
    page = Paginator(qs, 25).get_page(request.GET.get("page"))
    ctx = {"page": page, "q": q, "sort": sort, "totals": totals}
    template = "dmu/_dataset_table.html" if request.htmx else "dmu/dataset_list.html"
    return render(request, template, ctx)


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
    datasets = (
        Dataset.objects.filter(files__replicas__storage_element=se)
        .annotate(n=Count("files"), size=Sum("files__bytes"))
        .order_by("name")
    )
    replicas = Replica.objects.filter(storage_element=se).count()
    return render(
        request,
        "dmu/storage_element_detail.html",
        {"se": se, "datasets": datasets, "replicas": replicas},
    )


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


def registration(request, pk: int):
    job = get_object_or_404(
        RegistrationJob.objects.select_related("storage_element", "owner"), pk=pk
    )
    template = "dmu/_registration_status.html" if request.htmx else "dmu/registration.html"
    return render(request, template, {"job": job, "events": job.events.all()})
