"""TAG pages: the collections, building them, and the query page of one collection."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST

from dmu.models import Dataset
from dss.errors import DSSError, Forbidden, NotFound
from dss.forms import add_domain_error

from . import actions
from .forms import BuildForm, PickForm, QueryForm, SaveQueryForm
from .models import CollectionState
from .plots import histogram_svg
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
    the selection with a caret under the bad token (other errors, such as a good-run
    list's, name their place before the message)."""
    ctx = {"error": str(err.message), "error_where": err.where}
    if not isinstance(err, SelectionError) and err.where:
        ctx["error"] = str(err)
    column = getattr(err, "column", None)
    if isinstance(err, SelectionError) and column and text and column <= len(text) + 1:
        start = text.rfind("\n", 0, column - 1) + 1
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)].rstrip("\r")
        ctx["error_line"] = line
        ctx["error_caret"] = " " * (column - 1 - start) + "^"
        ctx["error_column"] = column
    return ctx


# A page URL longer than this is not offered as a link: servers refuse long request lines
# (gunicorn at 4,094 bytes), so the page sends its queries in POST bodies.
SHARE_URL_MAX = 2000


def query_data(request):
    """Where a query's fields are: the POST body (the page sends selections and good-run
    lists there, as they may be long) or, for a link, the query string."""
    if request.method == "POST":
        return request.POST, request.FILES
    return request.GET or None, None


def _good_runs(collection, q: dict, ctx: dict):
    """The query's good-run list, read and checked (None without one); its summary and
    warnings go into ``ctx``."""
    grl = actions.good_runs_for(collection, q["good_runs"])
    if grl is not None:
        note = actions.good_runs_note(collection, grl)
        ctx["grl_note"] = note
        ctx["grl_warnings"] = note.warnings
    return grl


def _luminosity(collection, q: dict, grl, ctx: dict) -> None:
    """With a global tag chosen for luminosity, the integrated luminosity of the passing
    events' lumiblocks (and of the good-run list) goes into ``ctx["lumi"]``; why it could
    not be computed into ``ctx["lumi_error"]`` (the count and the plots stay)."""
    try:
        gt = actions.lumi_global_tag(q.get("lumi_gt"))
        if gt is not None:
            ctx["lumi"] = actions.selection_luminosity(collection, q["selection"], grl, gt)
    except DSSError as e:
        ctx["lumi_error"] = str(e)


def _count_context(collection, q: dict) -> dict:
    """The live count under the selection box: the count (within the good-run list),
    its warnings, and the export and skim buttons; or the error."""
    ctx: dict = {"collection": collection}
    try:
        grl = _good_runs(collection, q, ctx)
        ctx["result"] = actions.count(collection, q["selection"], grl)
        _luminosity(collection, q, grl, ctx)
    except DSSError as e:
        ctx.update(error_context(e, q["selection"]))
    return ctx


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
    try:
        cancelled = actions.check_cancel_build(build, request.user)
    except Forbidden as e:
        raise PermissionDenied(e.message) from None
    if cancelled:
        messages.info(request, f"Build #{build.pk} cancelled; the collection keeps its TAGs.")
    return redirect(build)


# --------------------------------------------------------------------------- a collection


def _results(collection, q: dict) -> dict:
    """Count, histogram and top list for the page; an error stops at the first."""
    ctx: dict = {}
    text = q["selection"]
    try:
        grl = _good_runs(collection, q, ctx)
        result = actions.count(collection, text, grl)
        ctx["result"] = result
        _luminosity(collection, q, grl, ctx)
        hist = actions.histogram(
            collection,
            q["attribute"],
            text,
            bins=q["bins"],
            lo=q["lo"],
            hi=q["hi"],
            good_runs=grl,
        )
        info = {a.name: a for a in actions.attribute_list(collection, ranges=False)}[q["attribute"]]
        integer_bins = info.type != "float" and len(hist.counts) == hist.edges[-1] - hist.edges[0]
        ctx["hist"] = hist
        ctx["hist_info"] = info
        ctx["hist_svg"] = mark_safe(  # noqa: S308 - built from numbers and escaped text
            histogram_svg(
                hist,
                unit=info.unit,
                title=f"{info.name} for {result.selection or 'all events'}"
                + (" within the good-run list" if grl else ""),
                integer_bins=integer_bins,
            )
        )
        top = actions.top(collection, text, q["top_attribute"], q["top_n"], grl)
        ctx["top"], ctx["top_missing"] = top.events, top.missing
        if not q["good_runs"]:
            share = _share_url(collection, q)
            if len(share) <= SHARE_URL_MAX:
                ctx["share_url"] = share
    except DSSError as e:
        ctx.update(error_context(e, text))
    return ctx


def _share_url(collection, q: dict) -> str:
    """The page's GET URL for this query (without a good-run list), to bookmark or share."""
    fields = ("selection", "attribute", "bins", "lo", "hi", "top_attribute", "top_n", "lumi_gt")
    params = {k: q[k] for k in fields if q.get(k) not in (None, "")}
    return collection.get_absolute_url() + "?" + urlencode(params)


def collection_page_context(request, collection, **extra) -> dict:
    form = QueryForm(collection, *query_data(request))
    q = form.query()
    shown = dict(q)
    if isinstance(shown["good_runs"], bytes):  # an upload that is not text: see the error
        shown["good_runs"] = ""
    ctx = {
        "collection": collection,
        "dataset": collection.dataset,
        # Shows the values in effect, defaults included.
        "form": QueryForm(collection, initial=shown),
        "q": q,
        "active_build": actions.active_build(collection),
        "last_build": collection.builds.order_by("-created_at").first(),
        "saved": actions.saved_queries_for_user(request.user, collection),
        "save_form": SaveQueryForm(initial={"selection": q["selection"]}),
        "pick_form": PickForm(),
        "numbering": actions.collection_schema(collection).numbering(),
        "coverage": actions.coverage(collection),
        "lumi_tags": actions.lumi_global_tag_names(),
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


@require_http_methods(["GET", "POST"])
def collection_detail(request, pk: int):
    """The query page. A link may carry a short query in its URL; the page itself sends
    every query in a POST body, so selections and good-run lists of any length work."""
    collection = _collection(pk)
    return render(
        request, "tagdb/collection_detail.html", collection_page_context(request, collection)
    )


@require_http_methods(["GET", "POST"])
def count_fragment(request, pk: int):
    """The live count under the selection box (htmx, as the user types)."""
    collection = _collection(pk)
    q = QueryForm(collection, *query_data(request)).query()
    return render(request, "tagdb/_count.html", _count_context(collection, q))


def _plain_error(err: DSSError) -> HttpResponse:
    response = HttpResponseBadRequest(str(err), content_type="text/plain; charset=utf-8")
    if isinstance(err, actions.TagDBBusy):
        response.status_code = 503
    return response


def _download_name(collection, ext: str) -> str:
    return f"{collection.dataset.name}.{collection.schema.name}.events.{ext}"


def _export_query(request, collection):
    """The selection and good-run list of an export (from the page's POST, or a link)."""
    q = QueryForm(collection, *query_data(request)).query()
    return q["selection"], actions.good_runs_for(collection, q["good_runs"])


def _warnings_header(response, collection, grl) -> None:
    note = actions.good_runs_note(collection, grl)
    if note and note.warnings:
        response["DSS-Warnings"] = "; ".join(note.warnings)


@require_http_methods(["GET", "POST"])
def events_csv(request, pk: int):
    """The passing events as CSV: file GUID, entry, run, event, and the value of each
    ``attribute`` asked for (an empty field where the event has none)."""
    collection = _collection(pk)
    try:
        selection, grl = _export_query(request, collection)
        names = actions.event_attributes(
            collection,
            (request.POST if request.method == "POST" else request.GET).getlist("attribute"),
        )
        rows = actions.iter_events(collection, selection, grl, names)
    except DSSError as e:
        return _plain_error(e)

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # writes None (a missing value) as an empty field
        writer.writerow(["file_guid", "entry", "run", "event", *names])
        for i, ev in enumerate(rows):
            writer.writerow([ev.file_guid, ev.entry, ev.run, ev.event, *ev.values.values()])
            if i % 5000 == 4999:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(collection, "csv")}"'
    _warnings_header(response, collection, grl)
    return response


@require_http_methods(["GET", "POST"])
def events_json(request, pk: int):
    """The passing events as JSON: {"collection", "selection", "good_runs", "warnings",
    "events": [...]}, each event with the value of every ``attribute`` asked for (null
    where the event has none)."""
    collection = _collection(pk)
    try:
        text, grl = _export_query(request, collection)
        _, normal = actions.query_selection(collection, text)
        names = actions.event_attributes(
            collection,
            (request.POST if request.method == "POST" else request.GET).getlist("attribute"),
        )
        rows = actions.iter_events(collection, text, grl, names)
        note = actions.good_runs_note(collection, grl)
    except DSSError as e:
        return _plain_error(e)

    def generate():
        head = {"collection": collection.pk, "dataset": collection.dataset.name}
        head["schema"] = str(collection.schema)
        head["selection"] = normal
        head["good_runs"] = note.as_dict() if note else None
        head["warnings"] = note.warnings if note else []
        yield json.dumps(head)[:-1] + ', "events": ['
        for i, ev in enumerate(rows):
            item = {"file_guid": ev.file_guid, "entry": ev.entry, "run": ev.run, "event": ev.event}
            yield ("," if i else "") + json.dumps({**item, **ev.values})
        yield "]}\n"

    response = StreamingHttpResponse(generate(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(collection, "json")}"'
    return response


@require_http_methods(["GET", "POST"])
def histogram_image(request, pk: int):
    """The page's histogram as an SVG file."""
    collection = _collection(pk)
    q = QueryForm(collection, *query_data(request)).query()
    try:
        hist = actions.histogram(
            collection,
            q["attribute"],
            q["selection"],
            bins=q["bins"],
            lo=q["lo"],
            hi=q["hi"],
            good_runs=q["good_runs"],
        )
        _, normal = actions.query_selection(collection, q["selection"])
    except DSSError as e:
        return _plain_error(e)
    info = {a.name: a for a in actions.attribute_list(collection, ranges=False)}[q["attribute"]]
    svg = histogram_svg(
        hist,
        unit=info.unit,
        title=f"{info.name} for {normal or 'all events'}"
        + (" within the good-run list" if q["good_runs"] else ""),
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
    url = (
        collection.get_absolute_url()
        + "?"
        + urlencode({"selection": request.POST.get("selection", "")})
    )
    return redirect(url if len(url) <= SHARE_URL_MAX else collection.get_absolute_url())


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
