"""REST endpoints of the TAG DB: collections, builds, and queries (count, histogram, event
lists, top N, files touched, event picking, good-run lists, saved queries).

Every query takes ``selection`` (blank: every event) and, optionally, ``good_runs`` (a
good-run list object or its JSON text). A bad selection is a 400 whose body names the
column of the bad token; a TAG DB held by a build is a 503 with Retry-After.
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
        help_text='a good-run list {"run": [[first_lb, last_lb], ...]} (object or JSON text)',
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


class TopRequest(QuerySerializer):
    attribute = serializers.CharField()
    n = serializers.IntegerField(required=False, min_value=1, max_value=actions.MAX_TOP, default=20)


class PickRequest(serializers.Serializer):
    events = serializers.JSONField(
        help_text="[[run, event], ...], or text with one 'run event' pair per line"
    )


class GoodRunsRequest(serializers.Serializer):
    good_runs = serializers.JSONField()
    selection = serializers.CharField(required=False, allow_blank=True, default="")


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


class CountResponse(serializers.Serializer):
    collection = serializers.IntegerField()
    selection = serializers.CharField(help_text="the selection's normal form ('' = every event)")
    count = serializers.IntegerField()
    total = serializers.IntegerField()
    files_touched = serializers.IntegerField()
    files_total = serializers.IntegerField()


class HistogramResponse(serializers.Serializer):
    attribute = serializers.CharField()
    unit = serializers.CharField()
    selection = serializers.CharField()
    edges = serializers.ListField(child=serializers.FloatField())
    counts = serializers.ListField(child=serializers.IntegerField())
    underflow = serializers.IntegerField()
    overflow = serializers.IntegerField()
    missing = serializers.IntegerField(help_text="passing events without a value (NULL)")
    total = serializers.IntegerField()


class TagEventSerializer(serializers.Serializer):
    file_guid = serializers.CharField()
    entry = serializers.IntegerField()
    run = serializers.IntegerField(allow_null=True)
    event = serializers.IntegerField(allow_null=True)


class EventsResponse(serializers.Serializer):
    collection = serializers.IntegerField()
    dataset = serializers.CharField()
    selection = serializers.CharField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField(allow_null=True)
    events = TagEventSerializer(many=True)


class TagTopEventSerializer(TagEventSerializer):
    rank = serializers.IntegerField()
    value = serializers.FloatField()


class TopResponse(serializers.Serializer):
    attribute = serializers.CharField()
    selection = serializers.CharField()
    events = TagTopEventSerializer(many=True)


class TouchedFileSerializer(serializers.Serializer):
    guid = serializers.CharField()
    lfn = serializers.CharField()
    events = serializers.IntegerField()


class FilesTouchedResponse(serializers.Serializer):
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


class GoodRunsResponse(serializers.Serializer):
    selection = serializers.CharField()
    count = serializers.IntegerField()
    total = serializers.IntegerField()
    lumi_blocks = serializers.BooleanField(
        help_text="false: the collection has no luminosity blocks, listed runs are kept whole"
    )


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
    """A collection with its attributes (type, description, unit, range) and last build."""

    @extend_schema(responses=CollectionSerializer)
    def get(self, request, pk):
        collection = self.collection(pk)
        body = CollectionSerializer(collection).data
        body["attributes"] = AttributeSerializer(actions.attribute_list(collection), many=True).data
        body["numbering"] = list(actions.collection_schema(collection).numbering())
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
        actions.do_cancel_build(build, request.user)
        return Response(BuildSerializer(actions.get_build(pk)).data)


# --------------------------------------------------------------------------- queries


class Count(TagAPIView):
    """How many events pass the selection, and how many files hold them."""

    @extend_schema(request=QuerySerializer, responses=CountResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(QuerySerializer, request.data)
        r = actions.count(collection, d["selection"], d.get("good_runs"))
        return Response(
            {
                "collection": collection.pk,
                "selection": r.selection,
                "count": r.count,
                "total": r.total,
                "files_touched": r.files_touched,
                "files_total": r.files_total,
            }
        )


class HistogramView(TagAPIView):
    """The distribution of an attribute under the selection, binned in the database."""

    @extend_schema(request=HistogramRequest, responses=HistogramResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(HistogramRequest, request.data)
        h = actions.histogram(
            collection,
            d["attribute"],
            d["selection"],
            bins=d.get("bins"),
            lo=d.get("lo"),
            hi=d.get("hi"),
            good_runs=d.get("good_runs"),
        )
        _, normal = actions.query_selection(collection, d["selection"], d.get("good_runs"))
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
            }
        )


def _event_dict(ev) -> dict:
    return {"file_guid": ev.file_guid, "entry": ev.entry, "run": ev.run, "event": ev.event}


class Events(TagAPIView):
    """The passing events (file GUID, entry, run, event) as JSON pages or a CSV file."""

    @extend_schema(
        request=EventsRequest,
        responses={(200, "application/json"): EventsResponse, (200, "text/csv"): str},
    )
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(EventsRequest, request.data)
        selection, good_runs = d["selection"], d.get("good_runs")
        if d["format"] == "csv":
            if "limit" in d:
                rows = actions.events(collection, selection, d["limit"], d["offset"], good_runs)
            else:
                rows = actions.iter_events(collection, selection, good_runs)

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

            return StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
        limit = d.get("limit", 10_000)
        rows = actions.events(collection, selection, limit + 1, d["offset"], good_runs)
        more = len(rows) > limit
        _, normal = actions.query_selection(collection, selection, good_runs)
        return Response(
            {
                "collection": collection.pk,
                "dataset": collection.dataset.name,
                "selection": normal,
                "offset": d["offset"],
                "next_offset": d["offset"] + limit if more else None,
                "events": [_event_dict(ev) for ev in rows[:limit]],
            }
        )


class Top(TagAPIView):
    """The N passing events with the largest value of an attribute."""

    @extend_schema(request=TopRequest, responses=TopResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(TopRequest, request.data)
        rows = actions.top(collection, d["selection"], d["attribute"], d["n"], d.get("good_runs"))
        _, normal = actions.query_selection(collection, d["selection"], d.get("good_runs"))
        return Response(
            {
                "attribute": d["attribute"].strip(),
                "selection": normal,
                "events": [
                    {"rank": i, "value": ev.value, **_event_dict(ev)}
                    for i, ev in enumerate(rows, start=1)
                ],
            }
        )


class FilesTouched(TagAPIView):
    """How many of the dataset's files hold passing events, and which."""

    @extend_schema(request=QuerySerializer, responses=FilesTouchedResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(QuerySerializer, request.data)
        return Response(actions.files_touched(collection, d["selection"], d.get("good_runs")))


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
    """Turn a good-run list into a selection (and AND it with ``selection``); counts it."""

    @extend_schema(request=GoodRunsRequest, responses=GoodRunsResponse)
    def post(self, request, pk):
        collection = self.collection(pk)
        d = validated(GoodRunsRequest, request.data)
        extra = actions.good_run_selection(collection, d["good_runs"])
        r = actions.count(collection, actions.combine_selections(d["selection"], extra))
        return Response(
            {
                "selection": r.selection,
                "count": r.count,
                "total": r.total,
                "lumi_blocks": "lumi" in actions.collection_schema(collection).numbering(),
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
