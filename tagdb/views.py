"""TAG pages: the collections, building them, and the query page of one collection."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from dmu.models import Dataset
from dss.errors import DSSError, NotFound
from dss.forms import add_domain_error

from . import actions
from .forms import BuildForm, GoodRunForm, PickForm, QueryForm, SaveQueryForm
from .models import CollectionState
from .plots import histogram_svg
from .schema import MISSING
from .selection import INT, SelectionError

# rows per page of the collection list (and of the datasets without TAGs)
PAGE_SIZE = 50


def _collection(pk: int):
    try:
        return actions.get_collection(pk)
    except NotFound as e:
        raise Http404(e.message) from None


def _build(pk: int):
    try:
        return actions.get_build(pk)
    except NotFound as e:
        raise Http404(e.message) from None


def error_context(err: DSSError, text: str) -> dict:
    """What the page shows for an error: the message and, for a selection, the line of
    the selection with a caret under the bad token."""
    ctx = {"error": str(err.message), "error_where": err.where}
    column = getattr(err, "column", None)
    if isinstance(err, SelectionError) and column and text and column <= len(text) + 1:
        start = text.rfind("\n", 0, column - 1) + 1
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)].rstrip("\r")
        ctx["error_line"] = line
        ctx["error_caret"] = " " * (column - 1 - start) + "^"
        ctx["error_column"] = column
    return ctx


def skim_url(collection, selection: str) -> str:
    """The skim form, filled in with this collection and selection."""
    return "/skims/new/?" + urlencode(
        {"collection": collection.pk, "selection": selection or "true"}
    )


def _export_urls(collection, selection: str) -> dict:
    query = "?" + urlencode({"selection": selection}) if selection else ""
    return {
        "csv_url": reverse("tagdb:events_csv", args=[collection.pk]) + query,
        "json_url": reverse("tagdb:events_json", args=[collection.pk]) + query,
        "skim_url": skim_url(collection, selection),
    }


# --------------------------------------------------------------------------- lists, builds


def collection_list(request):
    # A site has thousands of datasets: both lists come a page at a time.
    collections = Paginator(actions.list_collections(), PAGE_SIZE).get_page(request.GET.get("page"))
    building = {b.collection_id: b for b in actions.active_builds()}
    for c in collections:
        c.active_build = building.get(c.pk)
    untagged = Dataset.objects.filter(tag_collections__isnull=True).order_by("name")
    untagged = Paginator(untagged, PAGE_SIZE).get_page(request.GET.get("untagged"))
    return render(
        request,
        "tagdb/collection_list.html",
        {"collections": collections, "untagged": untagged},
    )


@permission_required("tagdb.add_tagcollection", raise_exception=True)
def build_new(request):
    form = BuildForm(request.POST or None, initial={"dataset": request.GET.get("dataset", "")})
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            build = actions.do_start_build(d["dataset"], d["schema"], request.user)
        except DSSError as e:
            add_domain_error(form, e)
        else:
            messages.info(request, f"Building the TAGs of {build.collection}.")
            return redirect(build)
    return render(request, "tagdb/build_form.html", {"form": form})


def build_detail(request, pk: int):
    build = _build(pk)
    ctx = {"build": build, "embedded": request.GET.get("embedded") == "1"}
    if request.htmx:
        return render(request, "tagdb/_build_status.html", ctx)
    return render(request, "tagdb/build_detail.html", ctx)


@require_POST
@permission_required("tagdb.add_tagcollection", raise_exception=True)
def build_cancel(request, pk: int):
    build = _build(pk)
    if actions.do_cancel_build(build, request.user):
        messages.info(request, f"Build #{build.pk} cancelled; the collection keeps its TAGs.")
    return redirect(build)


# --------------------------------------------------------------------------- a collection


def _results(collection, q: dict) -> dict:
    """Count, histogram and top list for the page; an error stops at the first."""
    ctx: dict = {}
    text = q["selection"]
    try:
        result = actions.count(collection, text)
        ctx["result"] = result
        ctx.update(_export_urls(collection, result.selection))
        hist = actions.histogram(
            collection, q["attribute"], text, bins=q["bins"], lo=q["lo"], hi=q["hi"]
        )
        info = {a.name: a for a in actions.attribute_list(collection, ranges=False)}[q["attribute"]]
        integer_bins = info.type != "float" and len(hist.counts) == hist.edges[-1] - hist.edges[0]
        ctx["hist"] = hist
        ctx["hist_info"] = info
        if hist.underflow and info.type != "bool":
            # -999 marks "no such object in this event" (schema convention); say so.
            ctx["hist_sentinel"] = actions.count_only(
                collection, actions.combine_selections(text, f"{info.name} == {MISSING}")
            )
        ctx["hist_svg"] = mark_safe(  # noqa: S308 - built from numbers and escaped text
            histogram_svg(
                hist,
                unit=info.unit,
                title=f"{info.name} for {result.selection or 'all events'}",
                integer_bins=integer_bins,
            )
        )
        ctx["hist_svg_url"] = (
            reverse("tagdb:histogram_svg", args=[collection.pk])
            + "?"
            + urlencode(
                {
                    k: v
                    for k, v in {
                        "selection": result.selection,
                        "attribute": q["attribute"],
                        "bins": q["bins"],
                        "lo": q["lo"],
                        "hi": q["hi"],
                    }.items()
                    if v not in (None, "")
                }
            )
        )
        ctx["top"] = actions.top(collection, text, q["top_attribute"], q["top_n"])
    except DSSError as e:
        ctx.update(error_context(e, text))
    return ctx


def collection_page_context(request, collection, **extra) -> dict:
    q = QueryForm(collection, request.GET or None).query()
    ctx = {
        "collection": collection,
        "dataset": collection.dataset,
        # Shows the values in effect, defaults included.
        "form": QueryForm(collection, initial=q),
        "q": q,
        "active_build": actions.active_build(collection),
        "last_build": collection.builds.order_by("-created_at").first(),
        "saved": actions.saved_queries_for_user(request.user, collection),
        "save_form": SaveQueryForm(initial={"selection": q["selection"]}),
        "pick_form": PickForm(),
        "grl_form": GoodRunForm(initial={"selection": q["selection"]}),
        "numbering": actions.collection_schema(collection).numbering(),
    }
    if collection.state == CollectionState.READY:
        try:
            ctx["attributes"] = actions.attribute_list(collection)
        except DSSError as e:
            ctx["attributes"] = actions.attribute_list(collection, ranges=False)
            ctx["ranges_error"] = str(e)
        ctx.update(_results(collection, q))
    else:
        ctx["attributes"] = actions.attribute_list(collection, ranges=False)
    ctx.update(extra)
    return ctx


def collection_detail(request, pk: int):
    collection = _collection(pk)
    return render(
        request, "tagdb/collection_detail.html", collection_page_context(request, collection)
    )


def count_fragment(request, pk: int):
    """The live count under the selection box (htmx, as the user types)."""
    collection = _collection(pk)
    text = request.GET.get("selection", "")
    ctx: dict = {"collection": collection}
    try:
        result = actions.count(collection, text)
        ctx["result"] = result
        ctx.update(_export_urls(collection, result.selection))
    except DSSError as e:
        ctx.update(error_context(e, text))
    return render(request, "tagdb/_count.html", ctx)


def _plain_error(err: DSSError) -> HttpResponse:
    response = HttpResponseBadRequest(str(err), content_type="text/plain; charset=utf-8")
    if isinstance(err, actions.TagDBBusy):
        response.status_code = 503
    return response


def _download_name(collection, ext: str) -> str:
    return f"{collection.dataset.name}.{collection.schema.name}.events.{ext}"


def events_csv(request, pk: int):
    """The passing events as CSV: file GUID, entry, run, event."""
    collection = _collection(pk)
    try:
        rows = actions.iter_events(collection, request.GET.get("selection", ""))
    except DSSError as e:
        return _plain_error(e)

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file_guid", "entry", "run", "event"])
        for i, ev in enumerate(rows):
            writer.writerow([ev.file_guid, ev.entry, ev.run, ev.event])
            if i % 5000 == 4999:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(collection, "csv")}"'
    return response


def events_json(request, pk: int):
    """The passing events as JSON: {"collection", "selection", "events": [...]}."""
    collection = _collection(pk)
    text = request.GET.get("selection", "")
    try:
        _, normal = actions.query_selection(collection, text)
        rows = actions.iter_events(collection, text)
    except DSSError as e:
        return _plain_error(e)

    def generate():
        head = {"collection": collection.pk, "dataset": collection.dataset.name}
        head["schema"] = str(collection.schema)
        head["selection"] = normal
        yield json.dumps(head)[:-1] + ', "events": ['
        for i, ev in enumerate(rows):
            item = {"file_guid": ev.file_guid, "entry": ev.entry, "run": ev.run, "event": ev.event}
            yield ("," if i else "") + json.dumps(item)
        yield "]}\n"

    response = StreamingHttpResponse(generate(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(collection, "json")}"'
    return response


def histogram_image(request, pk: int):
    """The page's histogram as an SVG file."""
    collection = _collection(pk)
    form = QueryForm(collection, request.GET or None)
    q = form.query()
    try:
        hist = actions.histogram(
            collection, q["attribute"], q["selection"], bins=q["bins"], lo=q["lo"], hi=q["hi"]
        )
        _, normal = actions.query_selection(collection, q["selection"])
    except DSSError as e:
        return _plain_error(e)
    info = {a.name: a for a in actions.attribute_list(collection, ranges=False)}[q["attribute"]]
    svg = histogram_svg(
        hist,
        unit=info.unit,
        title=f"{info.name} for {normal or 'all events'}",
        integer_bins=info.type == INT and len(hist.counts) == hist.edges[-1] - hist.edges[0],
    )
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Content-Disposition"] = (
        f'inline; filename="{collection.dataset.name}.{q["attribute"]}.svg"'
    )
    return response


@require_POST
@permission_required("tagdb.add_savedquery", raise_exception=True)
def save_query(request, pk: int):
    collection = _collection(pk)
    form = SaveQueryForm(request.POST)
    error = ""
    if form.is_valid():
        d = form.cleaned_data
        try:
            saved = actions.check_save_query(request.user, collection, d["name"], d["selection"])
        except DSSError as e:
            error = str(e)
        else:
            if not request.htmx:
                messages.success(request, f"Saved “{saved.name}”.")
    else:
        error = " ".join(f"{f}: {' '.join(errs)}" for f, errs in form.errors.items())
    if request.htmx:
        return render(
            request,
            "tagdb/_saved_queries.html",
            {
                "collection": collection,
                "saved": actions.saved_queries_for_user(request.user, collection),
                "save_error": error,
                "saved_now": "" if error else form.cleaned_data.get("name", ""),
            },
        )
    if error:
        messages.error(request, error)
    selection = request.POST.get("selection", "")
    return redirect(collection.get_absolute_url() + "?" + urlencode({"selection": selection}))


@require_POST
def delete_query(request, pk: int):
    try:
        query = actions.get_saved_query_for_user(request.user, pk)
    except NotFound as e:
        raise Http404(e.message) from None
    collection = query.collection
    actions.do_delete_query(query)
    if request.htmx:
        return render(
            request,
            "tagdb/_saved_queries.html",
            {
                "collection": collection,
                "saved": actions.saved_queries_for_user(request.user, collection),
            },
        )
    messages.info(request, f"Deleted “{query.name}”.")
    return redirect(collection)


@require_POST
def pick(request, pk: int):
    collection = _collection(pk)
    form = PickForm(request.POST, request.FILES)
    report = None
    if form.is_valid():
        try:
            pairs = actions.parse_event_pairs(form.cleaned_data["text"])
            report = actions.pick_events(collection, pairs)
        except DSSError as e:
            add_domain_error(form, e, "events")
    if request.htmx:
        ctx = {
            "collection": collection,
            "pick_form": form,
            "pick": report,
            "numbering": actions.collection_schema(collection).numbering(),
        }
        return render(request, "tagdb/_pick.html", ctx)
    return render(
        request,
        "tagdb/collection_detail.html",
        collection_page_context(request, collection, pick_form=form, pick=report),
    )


@require_POST
def good_runs(request, pk: int):
    collection = _collection(pk)
    form = GoodRunForm(request.POST, request.FILES)
    if form.is_valid():
        current = form.cleaned_data.get("selection", "")
        try:
            extra = actions.good_run_selection(collection, form.cleaned_data["text"])
            _, combined = actions.check_selection(
                collection, actions.combine_selections(current, extra)
            )
        except DSSError as e:
            add_domain_error(form, e, "good_runs")
        else:
            note = ""
            if "lumi" not in actions.collection_schema(collection).numbering():
                note = (
                    " This collection has no luminosity blocks, so the listed runs are kept whole."
                )
            messages.success(request, f"Good-run list applied to the selection.{note}")
            return redirect(
                collection.get_absolute_url() + "?" + urlencode({"selection": combined})
            )
    return render(
        request,
        "tagdb/collection_detail.html",
        collection_page_context(request, collection, grl_form=form),
    )
