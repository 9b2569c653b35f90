"""REST endpoints of the TAG DB: collections, builds, and queries (count, histogram, event
lists, top N, files touched, event picking, good-run lists, saved queries).

Every query takes ``selection`` (blank: every event) and, optionally, ``good_runs``: a
good-run list as ATLAS XML or JSON text, or as a JSON object ``{"run": [[first, last],
…]}``. It is applied in the TAG DB as data, not as selection text, so it may be of any
size; every answer then carries ``good_runs`` (its size, the runs the collection lacks)
and ``warnings``. A bad selection is a 400 whose body names the column of the bad token,
a bad good-run list one that names its line or run; a TAG DB held by a build is a 503
with Retry-After.
"""

from __future__ import annotations

import csv
import io

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from dmu.actions import get_dataset
from dss.api import validated
from dss.errors import InvalidInput

from . import actions
from .models import SavedQuery, TagBuild, TagCollection, TagSchema
from .selection import SelectionError

# --------------------------------------------------------------------------- serializers


class SchemaSerializer(serializers.ModelSerializer):
    class Meta:
        model = TagSchema
        fields = ["id", "name", "version", "tree", "description", "automatic", "created_at"]


class BuildSerializer(serializers.ModelSerializer):
    collection = serializers.IntegerField(source="collection_id")
    dataset = serializers.CharField(source="collection.dataset.name")
    schema = serializers.CharField(source="collection.schema.__str__")
    phase = serializers.CharField()
    owner = serializers.CharField(source="owner.username", default=None)

    class Meta:
        model = TagBuild
        fields = [
            "id",
            "collection",
            "dataset",
            "schema",
            "state",
            "phase",
            "progress_done",
            "progress_total",
            "n_events",
            "message",
            "owner",
            "created_at",
            "started_at",
            "finished_at",
        ]


class CollectionSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.name")
    schema = serializers.CharField(source="schema.name")
    schema_version = serializers.IntegerField(source="schema.version")
    key = serializers.CharField()
    url = serializers.CharField(source="get_absolute_url")

    class Meta:
        model = TagCollection
        fields = [
            "id",
            "dataset",
            "schema",
            "schema_version",
            "key",
            "state",
            "n_events",
            "n_files",
            "built_at",
            "url",
        ]


class AttributeSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    description = serializers.CharField()
    unit = serializers.CharField()
    min = serializers.JSONField(source="lo")
    max = serializers.JSONField(source="hi")
    numbering = serializers.BooleanField()


class SavedQuerySerializer(serializers.ModelSerializer):
    class Meta:
        model = SavedQuery
        fields = ["id", "collection", "name", "selection", "created_at"]
        read_only_fields = ["id", "collection", "created_at"]


class QuerySerializer(serializers.Serializer):
    selection = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        default="",
        help_text="a TAG selection such as 'n_muon >= 2 && met > 40'; blank: every event",
    )
    good_runs = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="a good-run list: ATLAS XML or JSON text, or the object "
        '{"run": [[first_lb, last_lb], ...]}',
    )


class CountRequest(QuerySerializer):
    lumi_gt = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=80,
        help_text="a conditions global tag: the answer then has the integrated luminosity of "
        "the passing events' luminosity blocks from its lumi payloads",
    )


class HistogramRequest(QuerySerializer):
    attribute = serializers.CharField()
    bins = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
    lo = serializers.FloatField(required=False)
    hi = serializers.FloatField(required=False)


class EventsRequest(QuerySerializer):
    format = serializers.ChoiceField(choices=["json", "csv"], default="json")
    limit = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=1_000_000,
        help_text="JSON: at most this many (default 10000); CSV: every event unless given",
    )
    offset = serializers.IntegerField(required=False, min_value=0, max_value=10**12, default=0)
    attributes = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=actions.MAX_EVENT_ATTRIBUTES,
        help_text="attribute values to add to each event (a missing one is null, or an "
        "empty CSV field)",
    )


class TopRequest(QuerySerializer):
    attribute = serializers.CharField()
    n = serializers.IntegerField(required=False, min_value=1, max_value=actions.MAX_TOP, default=20)


class PickRequest(serializers.Serializer):
    events = serializers.JSONField(
        help_text="[[run, event], ...], or text with one 'run event' pair per line"
    )


class GoodRunsRequest(serializers.Serializer):
    good_runs = serializers.JSONField(help_text="ATLAS XML or JSON text, or a JSON object")
    selection = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )


class BuildRequest(serializers.Serializer):
    dataset = serializers.CharField(max_length=256)
    schema = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="schema name (its newest version); default: the schema that fits the files",
    )
    schema_version = serializers.IntegerField(required=False, min_value=1)


class SaveQueryRequest(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    selection = serializers.CharField(max_length=4000)


# -- response shapes (for the OpenAPI description)


class GoodRunsNoteSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    ranges = serializers.IntegerField()
    format = serializers.CharField(help_text="ATLAS XML or JSON")
    lumi_blocks = serializers.BooleanField(
        help_text="false: the collection has no luminosity blocks, listed runs are kept whole"
    )
    missing_runs = serializers.ListField(
        child=serializers.IntegerField(), help_text="runs of the list the collection has not"
    )


class WithGoodRuns(serializers.Serializer):
    good_runs = GoodRunsNoteSerializer(allow_null=True, help_text="null without a list")
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="e.g. '3 runs of the GRL are not in this collection: 1, 2, 3'",
    )


class GoodRunListLuminositySerializer(serializers.Serializer):
    luminosity = serializers.FloatField()
    unit = serializers.CharField()
    lumiblocks = serializers.IntegerField(help_text="listed blocks with a luminosity value")
    missing = serializers.IntegerField(help_text="listed blocks without one")


class LuminositySerializer(serializers.Serializer):
    global_tag = serializers.CharField()
    luminosity = serializers.FloatField(help_text="summed over the blocks with a value")
    unit = serializers.CharField(help_text="pb^-1")
    lumiblocks = serializers.IntegerField(help_text="distinct (run, lumiblock) of passing events")
    with_value = serializers.IntegerField()
    missing = serializers.IntegerField(help_text="blocks with events but no luminosity value")
    missing_blocks = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="the first of them, as [run, lumiblock]",
    )
    events_without_numbers = serializers.IntegerField()
    good_run_list = GoodRunListLuminositySerializer(allow_null=True)


class CountResponse(WithGoodRuns):
    collection = serializers.IntegerField()
    selection = serializers.CharField(help_text="the selection's normal form ('' = every event)")
    count = serializers.IntegerField()
    total = serializers.IntegerField()
    files_touched = serializers.IntegerField()
    files_total = serializers.IntegerField()
    luminosity = LuminositySerializer(
        required=False, help_text="only when the request names a lumi_gt"
    )


class HistogramResponse(WithGoodRuns):
    attribute = serializers.CharField()
    unit = serializers.CharField()
    selection = serializers.CharField()
    edges = serializers.ListField(child=serializers.FloatField())
    counts = serializers.ListField(child=serializers.IntegerField())
    underflow = serializers.IntegerField()
    overflow = serializers.IntegerField()
    missing = serializers.IntegerField(
        help_text="passing events where the attribute is missing (in no bin, nor under- or "
        "overflow)"
    )
    total = serializers.IntegerField()


class TagEventSerializer(serializers.Serializer):
    file_guid = serializers.CharField()
    entry = serializers.IntegerField()
    run = serializers.IntegerField(allow_null=True)
    event = serializers.IntegerField(allow_null=True)


class EventsResponse(WithGoodRuns):
    collection = serializers.IntegerField()
    dataset = serializers.CharField()
    selection = serializers.CharField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField(allow_null=True)
    events = TagEventSerializer(many=True)


class TagTopEventSerializer(TagEventSerializer):
    rank = serializers.IntegerField()
    value = serializers.FloatField()


class TopResponse(WithGoodRuns):
    attribute = serializers.CharField()
    selection = serializers.CharField()
    events = TagTopEventSerializer(many=True)
    missing = serializers.IntegerField(
        help_text="passing events without a value of the attribute (not in the list)"
    )


class TouchedFileSerializer(serializers.Serializer):
    guid = serializers.CharField()
    lfn = serializers.CharField()
    events = serializers.IntegerField()


class FilesTouchedResponse(WithGoodRuns):
    selection = serializers.CharField()
    files_touched = serializers.IntegerField()
    files_total = serializers.IntegerField()
    files = TouchedFileSerializer(many=True)


class PickedSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    event = serializers.IntegerField()
    dataset = serializers.CharField()
    lfn = serializers.CharField()
    file_guid = serializers.CharField()
    entry = serializers.IntegerField()


class PickResponse(serializers.Serializer):
    asked = serializers.IntegerField()
    found = PickedSerializer(many=True)
    missing = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    duplicates = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField())
    )


class GoodRunsResponse(WithGoodRuns):
    selection = serializers.CharField(help_text="the selection's normal form, without the list")
    count = serializers.IntegerField()
    total = serializers.IntegerField()


# --------------------------------------------------------------------------- permissions


class CanBuild(permissions.BasePermission):
    message = "building TAGs needs the physicist or admin role"

    def has_permission(self, request, view):
        return request.user.has_perm("tagdb.add_tagcollection")


class CanSaveQueries(permissions.BasePermission):
    message = "saving queries needs the physicist role"

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.has_perm(
            "tagdb.add_savedquery"
        )


class TagAPIView(APIView):
    """Adds the column of a bad selection to the error body, and answers 503 while the
    embedded TAG DB is held by another process."""

    def handle_exception(self, exc):
        if isinstance(exc, actions.TagDBBusy):
            response = Response(exc.as_dict(), status=status.HTTP_503_SERVICE_UNAVAILABLE)
            response["Retry-After"] = "5"
            return response
        response = super().handle_exception(exc)
        if isinstance(exc, SelectionError) and isinstance(response.data, dict):
            response.data["column"] = exc.column
        return response

    def collection(self, pk) -> TagCollection:
        return actions.get_collection(pk)


# --------------------------------------------------------------------------- collections


class SchemaList(TagAPIView):
    """TAG schemas: builtin ones and the automatic ones made for datasets."""

    @extend_schema(responses=SchemaSerializer(many=True))
    def get(self, request):
        return Response(SchemaSerializer(actions.list_schemas(), many=True).data)


class CollectionList(generics.ListAPIView):
    """Every TAG collection, a page at a time (``?limit=``, ``?offset=``); ``?dataset=``
    keeps one dataset's."""

    serializer_class = CollectionSerializer

    @extend_schema(parameters=[OpenApiParameter("dataset", str, description="a dataset name")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        rows = actions.list_collections()
        if self.request.query_params.get("dataset"):
            rows = rows.filter(dataset__name=self.request.query_params["dataset"])
        return rows


class CollectionDetail(TagAPIView):
    """A collection with its attributes (type, description, unit, range), its last build and
    whether its published TAGs still cover its dataset's files (``coverage``: ``stale``,
    ``covered`` of ``total`` files, and the files ``added``, ``changed`` or ``removed``
    since)."""

    @extend_schema(responses=CollectionSerializer)
    def get(self, request, pk):
        collection = self.collection(pk)
        body = CollectionSerializer(collection).data
        body["attributes"] = AttributeSerializer(actions.attribute_list(collection), many=True).data
        body["numbering"] = list(actions.collection_schema(collection).numbering())
        body["coverage"] = actions.coverage(collection).as_dict()
        last = collection.builds.select_related(
            "collection__dataset", "collection__schema", "owner"
        )
        last = last.order_by("-created_at").first()
        body["last_build"] = BuildSerializer(last).data if last else None
        return Response(body)


class StartBuild(TagAPIView):
    """Queue a (re)build of a dataset's TAGs; follow it at /api/tags/builds/<id>."""

    permission_classes = [permissions.IsAuthenticated, CanBuild]

    @extend_schema(request=BuildRequest, responses={202: BuildSerializer})
    def post(self, request):
        d = validated(BuildRequest, request.data)
        dataset = get_dataset(d["dataset"])
        schema = (
            actions.get_schema(d["schema"], d.get("schema_version")) if d.get("schema") else None
        )
        build = actions.do_start_build(dataset, schema, request.user)
        build = actions.get_build(build.pk)
        return Response(BuildSerializer(build).data, status=status.HTTP_202_ACCEPTED)


class BuildDetail(TagAPIView):
    @extend_schema(responses=BuildSerializer)
    def get(self, request, pk):
        return Response(BuildSerializer(actions.get_build(pk)).data)


class CancelBuild(TagAPIView):
    permission_classes = [permissions.IsAuthenticated, CanBuild]

    @extend_schema(request=None, responses=BuildSerializer)
    def post(self, request, pk):
        build = actions.get_build(pk)
        actions.check_cancel_build(build, request.user)
        return Response(BuildSerializer(actions.get_build(pk)).data)


# --------------------------------------------------------------------------- queries


def good_runs_fields(collection, grl) -> dict:
    """What every query answer says beside its numbers: its good-run list (``good_runs``,
    null without one), whether the TAGs still cover the dataset (``stale``, null when they
    do), and ``warnings`` in words for both."""
    note = actions.good_runs_note(collection, grl)
    found = actions.coverage(collection)
    warnings = list(note.warnings) if note else []
    if found.stale:
        warnings.insert(0, found.message)
    return {
        "good_runs": note.as_dict() if note else None,
        "stale": found.as_dict() if found.stale else None,
        "warnings": warnings,
    }


class Count(TagAPIView):
    """How many events pass the selection, and how many files hold them."""

    @extend_schema(request=CountRequest, responses=CountResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(CountRequest, request.data)
        grl = actions.good_runs_for(collection, d.get("good_runs"))
        gt = actions.lumi_global_tag(d.get("lumi_gt"))
        r = actions.count(collection, d["selection"], grl)
        answer = {
            "collection": collection.pk,
            "selection": r.selection,
            "count": r.count,
            "total": r.total,
            "files_touched": r.files_touched,
            "files_total": r.files_total,
            **good_runs_fields(collection, grl),
        }
        if gt is not None:
            answer["luminosity"] = actions.selection_luminosity(collection, d["selection"], grl, gt)
        return Response(answer)


class HistogramView(TagAPIView):
    """The distribution of an attribute under the selection, binned in the database."""

    @extend_schema(request=HistogramRequest, responses=HistogramResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(HistogramRequest, request.data)
        grl = actions.good_runs_for(collection, d.get("good_runs"))
        h = actions.histogram(
            collection,
            d["attribute"],
            d["selection"],
            bins=d.get("bins"),
            lo=d.get("lo"),
            hi=d.get("hi"),
            good_runs=grl,
        )
        _, normal = actions.query_selection(collection, d["selection"])
        unit = next(
            (
                a.unit
                for a in actions.attribute_list(collection, ranges=False)
                if a.name == h.attribute
            ),
            "",
        )
        return Response(
            {
                "attribute": h.attribute,
                "unit": unit,
                "selection": normal,
                "edges": [float(e) for e in h.edges],
                "counts": [int(c) for c in h.counts],
                "underflow": h.underflow,
                "overflow": h.overflow,
                "missing": h.missing,
                "total": h.total,
                **good_runs_fields(collection, grl),
            }
        )


def _event_dict(ev) -> dict:
    # Attribute values (None: missing, null in JSON) follow the event's own columns.
    return {
        "file_guid": ev.file_guid,
        "entry": ev.entry,
        "run": ev.run,
        "event": ev.event,
        **ev.values,
    }


class Events(TagAPIView):
    """The passing events (file GUID, entry, run, event, and any attributes asked for)
    as JSON pages or a CSV file (whose ``DSS-Warnings`` header carries the warnings); a
    missing attribute value is null, or an empty field."""

    @extend_schema(
        request=EventsRequest,
        responses={(200, "application/json"): EventsResponse, (200, "text/csv"): str},
    )
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(EventsRequest, request.data)
        selection = d["selection"]
        grl = actions.good_runs_for(collection, d.get("good_runs"))
        names = actions.event_attributes(collection, d["attributes"])
        if d["format"] == "csv":
            if "limit" in d:
                rows = actions.events(collection, selection, d["limit"], d["offset"], grl, names)
            else:
                rows = actions.iter_events(collection, selection, grl, names)

            def generate():
                buffer = io.StringIO()
                writer = csv.writer(buffer)  # None (a missing value) is an empty field
                writer.writerow(["file_guid", "entry", "run", "event", *names])
                for i, ev in enumerate(rows):
                    writer.writerow([ev.file_guid, ev.entry, ev.run, ev.event, *ev.values.values()])
                    if i % 5000 == 4999:
                        yield buffer.getvalue()
                        buffer.seek(0)
                        buffer.truncate()
                yield buffer.getvalue()

            response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
            warnings = good_runs_fields(collection, grl)["warnings"]
            if warnings:
                response["DSS-Warnings"] = "; ".join(warnings)
            return response
        limit = d.get("limit", 10_000)
        rows = actions.events(collection, selection, limit + 1, d["offset"], grl, names)
        more = len(rows) > limit
        _, normal = actions.query_selection(collection, selection)
        return Response(
            {
                "collection": collection.pk,
                "dataset": collection.dataset.name,
                "selection": normal,
                "offset": d["offset"],
                "next_offset": d["offset"] + limit if more else None,
                "events": [_event_dict(ev) for ev in rows[:limit]],
                **good_runs_fields(collection, grl),
            }
        )


class Top(TagAPIView):
    """The N passing events with the largest value of an attribute."""

    @extend_schema(request=TopRequest, responses=TopResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(TopRequest, request.data)
        grl = actions.good_runs_for(collection, d.get("good_runs"))
        top = actions.top(collection, d["selection"], d["attribute"], d["n"], grl)
        _, normal = actions.query_selection(collection, d["selection"])
        return Response(
            {
                "attribute": top.attribute,
                "selection": normal,
                "events": [
                    {"rank": i, "value": ev.value, **_event_dict(ev)}
                    for i, ev in enumerate(top.events, start=1)
                ],
                "missing": top.missing,
                **good_runs_fields(collection, grl),
            }
        )


class FilesTouched(TagAPIView):
    """How many of the dataset's files hold passing events, and which."""

    @extend_schema(request=QuerySerializer, responses=FilesTouchedResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(QuerySerializer, request.data)
        grl = actions.good_runs_for(collection, d.get("good_runs"))
        body = actions.files_touched(collection, d["selection"], grl)
        return Response({**body, **good_runs_fields(collection, grl)})


class Pick(TagAPIView):
    """Find events by (run, event): where each lives, which are missing or duplicated."""

    @extend_schema(request=PickRequest, responses=PickResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(PickRequest, request.data)
        given = d["events"]
        pairs = (
            actions.parse_event_pairs(given)
            if isinstance(given, str)
            else actions.pairs_from_json(given)
        )
        report = actions.pick_events(collection, pairs)
        return Response(
            {
                "asked": report.asked,
                "found": [p.__dict__ for p in report.found],
                "missing": [list(p) for p in report.missing],
                "duplicates": [list(p) for p in report.duplicates],
            }
        )


class GoodRuns(TagAPIView):
    """Check a good-run list against a collection: how many events it keeps (with the
    selection, if given), its size, and which of its runs the collection lacks."""

    @extend_schema(request=GoodRunsRequest, responses=GoodRunsResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(GoodRunsRequest, request.data)
        grl = actions.good_runs_for(collection, d["good_runs"])
        if grl is None:
            raise InvalidInput("the good-run list is empty", where="good_runs")
        r = actions.count(collection, d["selection"], grl)
        return Response(
            {
                "selection": r.selection,
                "count": r.count,
                "total": r.total,
                **good_runs_fields(collection, grl),
            }
        )


class SavedQueryList(TagAPIView):
    """Your saved queries on a collection; POST saves one (same name: replaced)."""

    permission_classes = [permissions.IsAuthenticated, CanSaveQueries]

    @extend_schema(responses=SavedQuerySerializer(many=True))
    def get(self, request, pk):
        collection = self.collection(pk)
        rows = actions.saved_queries_for_user(request.user, collection)
        return Response(SavedQuerySerializer(rows, many=True).data)

    @extend_schema(request=SaveQueryRequest, responses={201: SavedQuerySerializer})
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(SaveQueryRequest, request.data)
        query = actions.check_save_query(request.user, collection, d["name"], d["selection"])
        return Response(SavedQuerySerializer(query).data, status=status.HTTP_201_CREATED)


class SavedQueryDetail(TagAPIView):
    @extend_schema(responses=SavedQuerySerializer)
    def get(self, request, pk):
        return Response(
            SavedQuerySerializer(actions.get_saved_query_for_user(request.user, pk)).data
        )

    @extend_schema(responses={204: None})
    def delete(self, request, pk):
        actions.do_delete_query(actions.get_saved_query_for_user(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
