"""Pages of the skim service (skims, provenance) and the portal's home page, which shows
the newest datasets and skims."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Sum
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from dmu.models import Dataset, File
from dss.errors import DSSError
from dss.forms import add_domain_error
from dss.jobs import JobState
from dss.roles import may_change

from . import actions, brokerage
from .forms import ProvenanceFilter, SkimForm
from .models import ProvenanceRecord, SkimJob


def home(request):
    stats = File.objects.aggregate(events=Sum("events"), bytes=Sum("bytes"))
    ctx = {
        "n_datasets": Dataset.objects.count(),
        "n_files": File.objects.count(),
        "n_events": stats["events"] or 0,
        "n_bytes": stats["bytes"] or 0,
        "n_running": SkimJob.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING]).count(),
        "recent": Dataset.objects.order_by("-created_at")[:5],
        "skims": SkimJob.objects.select_related("owner").order_by("-created_at")[:5],
    }
    return render(request, "home.html", ctx)


# --------------------------------------------------------------------------- skims


def _skim_inputs_from_form(data) -> list:
    inputs = [actions.InputSpec(c.dataset, c) for c in data["collections"]]
    named = {c.dataset_id for c in data["collections"]}
    inputs += [actions.InputSpec(d, None) for d in data["datasets"] if d.pk not in named]
    return inputs


def _prefill(data, files) -> dict:
    """The skim form's first values, from a link (GET) or from the TAG page's "Skim these
    events" (a POST, as its selection and good-run list may be long)."""
    good_runs = data.get("good_runs", "")
    upload = files.get("good_runs_file") if files else None
    if upload is not None:
        good_runs = upload.read().decode("utf-8", errors="replace")
    return {
        "selection": data.get("selection", ""),
        "collections": data.getlist("collection"),
        "datasets": data.getlist("dataset"),
        "good_runs": good_runs,
        "lumi_gt": data.get("lumi_gt", ""),
        "output_se": settings.DSS_SKIM_OUTPUT_SE,
    }


@permission_required("skims.add_skimjob", raise_exception=True)
def skim_new(request):
    prefill = request.method == "GET" or request.POST.get("prefill") == "1"
    data = request.GET if request.method == "GET" else request.POST
    initial = _prefill(data, request.FILES) if prefill else {}
    form = SkimForm(
        None if prefill else request.POST, None if prefill else request.FILES, initial=initial
    )
    identical = None
    if not prefill and form.is_valid():
        d = form.cleaned_data
        run_on, site = brokerage.where_to_run(d.get("run_on"))
        try:
            skim = actions.check_submit_skim(
                user=request.user,
                inputs=_skim_inputs_from_form(d),
                selection=d["selection"],
                output_name=d["output_name"],
                output_se=d["output_se"],
                branches=form.branch_patterns(),
                preset=d["preset"] if d["content"] == "preset" else None,
                output_format=d["output_format"],
                event_limit=d["event_limit"],
                failure_policy=d["failure_policy"],
                force=d["force"],
                good_runs=form.good_runs_input(),
                lumi_gt=d.get("lumi_gt", ""),
                output_tree=d["output_tree"],
                copy_objects=form.copy_patterns(),
                merge_mb=d["merge_mb"],
                run_on=run_on,
                site=site,
            )
        except actions.IdenticalSkim as e:
            identical = e.existing
        except DSSError as e:
            field = {"dataset name": "output_name"}.get(
                e.where, e.where.split(" ")[0] if e.where else None
            )
            if e.where.startswith("column"):
                field = "selection"
            if e.where == "good-run list" or e.where.startswith("line "):
                field = "good_runs"
            if e.where in ("site", "run_on"):
                field = "run_on"
            add_domain_error(form, e, field)
        else:
            messages.success(request, f"Skim #{skim.pk} submitted.")
            for warning in actions.skim_warnings(skim):
                messages.warning(request, warning)
            return redirect(skim)
    return render(request, "skims/skim_new.html", {"form": form, "identical": identical})


def skim_list(request):
    qs = SkimJob.objects.select_related("owner", "output_dataset").prefetch_related(
        "inputs__dataset"
    )
    mine = request.GET.get("mine") == "1"
    if mine:
        qs = qs.filter(owner=request.user)
    state = request.GET.get("state", "")
    if state in JobState.values:
        qs = qs.filter(state=state)
    page = Paginator(qs.order_by("-created_at"), 25).get_page(request.GET.get("page"))
    return render(
        request,
        "skims/skim_list.html",
        {"page": page, "mine": mine, "state": state, "states": JobState.choices},
    )


@vary_on_headers("HX-Request")
def skim_detail(request, pk: int):
    skim = actions.get_skim_for_user(pk, request.user)
    ctx = {
        "skim": skim,
        "parts": skim.parts.select_related("input_file", "site")
        .prefetch_related("more_inputs__file")
        .order_by("number"),
        "inputs": skim.inputs.select_related("dataset", "collection"),
        "events": skim.events.all(),
        "may_change": may_change(request.user, skim),
    }
    template = "skims/_skim_status.html" if request.htmx else "skims/skim_detail.html"
    return render(request, template, ctx)


@require_POST
def skim_cancel(request, pk: int):
    skim = actions.get_skim_for_user(pk, request.user)
    try:
        actions.do_cancel_skim(skim, request.user)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        messages.info(request, f"Skim #{skim.pk} cancelled; its partial output was removed.")
    return redirect(skim)


@require_POST
def skim_retry(request, pk: int):
    skim = actions.get_skim_for_user(pk, request.user)
    try:
        actions.do_retry_skim(skim, request.user)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        messages.info(request, f"The failed parts of skim #{skim.pk} run again.")
    return redirect(skim)


# --------------------------------------------------------------------------- provenance


@permission_required("skims.view_provenancerecord", raise_exception=True)
def provenance_list(request):
    f = ProvenanceFilter(request.GET or None)
    filters = f.cleaned_data if f.is_valid() else {}
    qs = actions.provenance_queryset(**{k: v for k, v in filters.items() if v})
    page = Paginator(qs, 25).get_page(request.GET.get("page"))
    return render(request, "skims/provenance_list.html", {"page": page, "filter": f})


@permission_required("skims.view_provenancerecord", raise_exception=True)
def provenance_detail(request, pk: int):
    record = get_object_or_404(
        ProvenanceRecord.objects.select_related("skim", "skim__output_dataset"), pk=pk
    )
    if request.GET.get("format") == "prov-json":
        response = JsonResponse(actions.prov_json(record), json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="skim-{record.skim_id}.prov.json"'
        return response
    reruns = record.reruns.select_related("output_dataset").order_by("-created_at")
    rows = actions.provenance_rows(record)
    return render(
        request,
        "skims/provenance_detail.html",
        {"record": record, "reruns": reruns, "rows": rows},
    )


@require_POST
@permission_required("skims.rerun_skimjob", raise_exception=True)
def provenance_rerun(request, pk: int):
    record = get_object_or_404(ProvenanceRecord.objects.select_related("skim"), pk=pk)
    try:
        skim = actions.do_rerun(record, request.user, request.POST.get("output_name") or None)
    except DSSError as e:
        messages.error(request, f"Could not re-run: {e}")
        return redirect(record)
    messages.success(request, f"Skim #{skim.pk} re-runs skim #{record.skim_id}.")
    return redirect(skim)
