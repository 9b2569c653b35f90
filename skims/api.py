"""REST API of the skim service: skims, their parts, provenance records, branch presets."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from dmu import actions as dmu_actions
from dss.api import invalid_input, read_body, validated
from dss.errors import InvalidInput, NotFound
from pilotchecker.api import PILOT_THROTTLES

from . import actions, brokerage, sitejobs
from .forms import ProvenanceFilter
from .models import BranchPreset, FailurePolicy, OutputFormat, ProvenanceRecord, SkimJob, SkimPart


class SkimSubmitSerializer(serializers.Serializer):
    collections = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, max_length=100
    )
    datasets = serializers.ListField(
        child=serializers.CharField(max_length=256), required=False, default=list, max_length=100
    )
    selection = serializers.CharField(max_length=4000, trim_whitespace=False)
    branches = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list, max_length=1000
    )
    preset = serializers.CharField(max_length=64, required=False, allow_blank=True)
    output_format = serializers.ChoiceField(choices=OutputFormat.choices, default=OutputFormat.ROOT)
    output_name = serializers.CharField(max_length=256)
    output_se = serializers.CharField(max_length=64, required=False, allow_blank=True)
    event_limit = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    good_runs = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="a good-run list kept beside the selection: ATLAS XML or JSON text, or "
        'the object {"run": [[first_lb, last_lb], ...]}',
    )
    lumi_gt = serializers.CharField(
        max_length=80,
        required=False,
        allow_blank=True,
        help_text="a conditions global tag: the provenance record then holds the integrated "
        "luminosity of the selected events' luminosity blocks from its lumi payloads",
    )
    failure_policy = serializers.ChoiceField(
        choices=FailurePolicy.choices, default=FailurePolicy.FAIL
    )
    force = serializers.BooleanField(default=False)
    output_tree = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        help_text="the output files' event tree; default: the input files' tree name",
    )
    copy_objects = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=list,
        max_length=100,
        help_text="names or glob patterns of small objects of the input files (metadata "
        "trees, TH1/TH2/TH3 histograms) that each output carries too",
    )
    merge_mb = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="merge the outputs into files of about this many MB (10^6 bytes)",
    )
    site = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="where the parts run: empty or 'portal' (the portal's workers), 'auto' "
        "(sites the broker chooses) or a site's name",
    )


class SkimPartSerializer(serializers.ModelSerializer):
    input_lfn = serializers.CharField(source="input_file.lfn")
    inputs = serializers.SerializerMethodField()
    attempts = serializers.IntegerField(source="lease_attempts")
    worker = serializers.CharField(source="lease_worker")
    site = serializers.CharField(source="site.name", default=None)

    class Meta:
        model = SkimPart
        fields = [
            "number",
            "input_lfn",
            "inputs",
            "copied",
            "n_entries",
            "state",
            "attempts",
            "output_lfn",
            "output_guid",
            "output_bytes",
            "output_adler32",
            "events_written",
            "message",
            "worker",
            "site",
            "batch_job_id",
            "batch_node",
            "job_state",
            "job_attempts",
        ]

    def get_inputs(self, part) -> list[str]:
        """Every input file whose events the part's output holds, in order."""
        return [part.input_file.lfn] + [m.file.lfn for m in part.more_inputs.all()]


class SkimSerializer(serializers.ModelSerializer):
    inputs = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", default=None)
    output_se = serializers.CharField(source="output_se.name")
    output_dataset = serializers.CharField(source="output_dataset.name", default=None)
    preset = serializers.CharField(source="preset.name", default=None)
    percent = serializers.IntegerField()
    provenance = serializers.SerializerMethodField()
    parts = SkimPartSerializer(many=True, read_only=True)
    site = serializers.CharField(source="site.name", default=None)

    class Meta:
        model = SkimJob
        fields = [
            "id",
            "state",
            "percent",
            "progress_done",
            "progress_total",
            "events_selected",
            "events_written",
            "message",
            "inputs",
            "selection",
            "selection_normalised",
            "branches",
            "preset",
            "output_format",
            "output_name",
            "output_se",
            "event_limit",
            "output_tree",
            "copy_objects",
            "merge_mb",
            "good_runs",
            "lumi_gt",
            "failure_policy",
            "run_on",
            "site",
            "output_dataset",
            "owner",
            "created_at",
            "started_at",
            "finished_at",
            "provenance",
            "parts",
        ]

    def get_inputs(self, skim) -> list[dict]:
        return [
            {
                "dataset": i.dataset.name,
                "collection": i.collection_id,
                "schema": i.schema_name or None,
            }
            for i in skim.inputs.all()
        ]

    def get_provenance(self, skim) -> int | None:
        record = getattr(skim, "provenance", None) if hasattr(skim, "provenance") else None
        return record.pk if record else None


class SkimSummarySerializer(SkimSerializer):
    class Meta(SkimSerializer.Meta):
        fields = [f for f in SkimSerializer.Meta.fields if f not in ("parts", "good_runs")]


def _skims():
    return SkimJob.objects.select_related(
        "owner", "output_se", "output_dataset", "preset", "provenance"
    ).prefetch_related(
        "inputs__dataset", "parts__input_file", "parts__more_inputs__file", "parts__site"
    )


class CanSkim(permissions.BasePermission):
    message = "submitting skims needs the physicist role"

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.has_perm(
            "skims.add_skimjob"
        )


class SkimList(generics.ListAPIView):
    """Skims, newest first (`?mine=1`, `?state=`); POST submits a new one."""

    serializer_class = SkimSummarySerializer
    permission_classes = [permissions.IsAuthenticated, CanSkim]

    def get_queryset(self):
        qs = _skims().order_by("-created_at")
        if self.request.query_params.get("mine") == "1":
            qs = qs.filter(owner=self.request.user)
        state = self.request.query_params.get("state")
        if state:
            qs = qs.filter(state=state)
        return qs

    @extend_schema(request=SkimSubmitSerializer, responses={201: SkimSerializer})
    def post(self, request):
        d = validated(SkimSubmitSerializer, request.data)
        preset = None
        if d.get("preset"):
            preset = BranchPreset.objects.filter(name=d["preset"]).first()
            if preset is None:
                raise InvalidInput(f"no branch preset named {d['preset']!r}", where="preset")
        se = dmu_actions.get_storage_element(d["output_se"]) if d.get("output_se") else None
        run_on, site = brokerage.where_to_run(d.get("site"))
        with transaction.atomic():
            skim = actions.check_submit_skim(
                user=request.user,
                inputs=actions.resolve_inputs(d["collections"], d["datasets"]),
                selection=d["selection"],
                output_name=d["output_name"],
                output_se=se,
                branches=d["branches"],
                preset=preset,
                output_format=d["output_format"],
                event_limit=d.get("event_limit"),
                failure_policy=d["failure_policy"],
                force=d["force"],
                good_runs=d.get("good_runs"),
                lumi_gt=d.get("lumi_gt", ""),
                output_tree=d.get("output_tree", ""),
                copy_objects=d["copy_objects"],
                merge_mb=d.get("merge_mb"),
                run_on=run_on,
                site=site,
            )
        body = SkimSerializer(_skims().get(pk=skim.pk)).data
        body["warnings"] = actions.skim_warnings(skim)
        return Response(body, status=status.HTTP_201_CREATED)


class SkimDetail(generics.RetrieveAPIView):
    serializer_class = SkimSerializer

    def get_queryset(self):
        return _skims()

    def get_object(self):
        skim = self.get_queryset().filter(pk=self.kwargs["pk"]).first()
        if skim is None:
            raise NotFound(f"no skim #{self.kwargs['pk']}", where="skim")
        return skim


class SkimCancel(APIView):
    @extend_schema(request=None, responses={200: SkimSummarySerializer})
    def post(self, request, pk: int):
        skim = actions.get_skim_for_user(pk, request.user)
        try:
            actions.do_cancel_skim(skim, request.user)
        except PermissionDenied as e:
            return Response(
                {"error": "permission_denied", "detail": str(e)}, status=status.HTTP_403_FORBIDDEN
            )
        return Response(SkimSummarySerializer(_skims().get(pk=pk)).data)


class SkimRetry(APIView):
    @extend_schema(request=None, responses={200: SkimSummarySerializer})
    def post(self, request, pk: int):
        skim = actions.get_skim_for_user(pk, request.user)
        try:
            actions.do_retry_skim(skim, request.user)
        except PermissionDenied as e:
            return Response(
                {"error": "permission_denied", "detail": str(e)}, status=status.HTTP_403_FORBIDDEN
            )
        return Response(SkimSummarySerializer(_skims().get(pk=pk)).data)


class ProvenanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProvenanceRecord
        fields = [
            "id",
            "skim",
            "created_at",
            "username",
            "state",
            "selection",
            "selection_normalised",
            "selection_tree",
            "options",
            "inputs",
            "outputs",
            "software",
            "workers",
            "timing",
            "output_dataset_name",
            "events_selected",
            "selection_digest",
        ]


class CanReadProvenance(permissions.BasePermission):
    message = "the provenance history needs the operator role"

    def has_permission(self, request, view):
        return request.user.has_perm("skims.view_provenancerecord")


class ProvenanceList(generics.ListAPIView):
    """Provenance records; filter with `user`, `dataset`, `state`, `since`, `until` (YYYY-MM-DD)."""

    serializer_class = ProvenanceSerializer
    permission_classes = [permissions.IsAuthenticated, CanReadProvenance]

    def get_queryset(self):
        f = ProvenanceFilter(self.request.query_params)
        if not f.is_valid():
            raise invalid_input(f.errors)
        return actions.provenance_queryset(**{k: v for k, v in f.cleaned_data.items() if v})


class ProvenanceDetail(APIView):
    """One record; `?export=prov-json` gives it as W3C PROV-JSON."""

    permission_classes = [permissions.IsAuthenticated, CanReadProvenance]

    @extend_schema(
        parameters=[OpenApiParameter("export", str, enum=["json", "prov-json"])],
        responses={200: ProvenanceSerializer},
    )
    def get(self, request, pk: int):
        record = (
            ProvenanceRecord.objects.filter(pk=pk).first()
            # through the skim's own id: a number past its column's range then finds nothing
            or ProvenanceRecord.objects.filter(skim__pk=pk).first()
        )
        if record is None:
            return Response(
                {"error": "not_found", "detail": f"no provenance record #{pk}"}, status=404
            )
        if request.query_params.get("export") == "prov-json":
            return Response(actions.prov_json(record))
        return Response(ProvenanceSerializer(record).data)


class ProvenanceRerun(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=None, responses={201: SkimSummarySerializer})
    def post(self, request, pk: int):
        if not request.user.has_perm("skims.rerun_skimjob"):
            return Response(
                {"error": "permission_denied", "detail": "re-running needs the operator role"},
                status=403,
            )
        record = ProvenanceRecord.objects.select_related("skim").filter(pk=pk).first()
        if record is None:
            return Response(
                {"error": "not_found", "detail": f"no provenance record #{pk}"}, status=404
            )
        with transaction.atomic():
            skim = actions.do_rerun(record, request.user, request.data.get("output_name") or None)
        return Response(
            SkimSummarySerializer(_skims().get(pk=skim.pk)).data, status=status.HTTP_201_CREATED
        )


class BranchPresetSerializer(serializers.ModelSerializer):
    class Meta:
        model = BranchPreset
        fields = ["name", "description", "patterns"]


class BranchPresetList(generics.ListAPIView):
    serializer_class = BranchPresetSerializer
    queryset = BranchPreset.objects.all()
    pagination_class = None


class SkimJobReport(APIView):
    """A skim job's wrapper posts its outcome here once, with ``Authorization: SkimJob
    <token>`` (the one-time token in its job description).

    403 for a wrong, used or expired token or a job that has ended; 400 for a body that is
    not a report; nothing is recorded in either case. 201 with the job's state otherwise
    (``failed`` when the output it stored is not what it reported)."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = PILOT_THROTTLES
    throttle_scope = "pilot"

    @extend_schema(request={"application/json": {"type": "object"}}, responses={201: None})
    def post(self, request, pk: int):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        body = read_body(request, sitejobs.REPORT_MAX_BYTES + 1)
        job = sitejobs.check_receive_job_report(
            pk, token.strip() if scheme == "SkimJob" else "", body
        )
        return Response(
            {"status": "received", "job": job.pk, "state": job.state, "message": job.message},
            status=status.HTTP_201_CREATED,
        )
