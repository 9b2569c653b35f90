"""REST endpoints of the PilotChecker: sites, pilots, and the two that pilots themselves call
(``ping`` and the report), which take no user authentication."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, permissions, serializers, status, throttling
from rest_framework.response import Response
from rest_framework.views import APIView

from dss.api import read_body, validated
from dss.errors import InvalidInput

from . import actions, batch
from .models import Pilot, PilotState, Site, SiteStatus, SiteStatusChange

# ---------------------------------------------------------------- serializers


class PilotSerializer(serializers.ModelSerializer):
    site = serializers.CharField(source="site.name", read_only=True)
    sent_by = serializers.CharField(read_only=True)
    batch = serializers.SerializerMethodField()
    url = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = Pilot
        fields = [
            "id",
            "site",
            "state",
            "verdict",
            "periodic",
            "sent_by",
            "message",
            "batch_job_id",
            "batch",
            "created_at",
            "submitted_at",
            "started_at",
            "finished_at",
            "url",
        ]

    def get_batch(self, p: Pilot) -> dict:
        """The batch system's own view of the job, as last asked."""
        return {
            "state": p.batch_state,
            "raw_state": p.batch_raw_state,
            "exit_code": p.batch_exit_code,
            "reason": p.batch_reason,
            "checked_at": p.batch_checked_at,
        }


class EventSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    kind = serializers.CharField()
    message = serializers.CharField()


class PilotDetailSerializer(PilotSerializer):
    events = EventSerializer(many=True, read_only=True)
    output_visible = serializers.SerializerMethodField()

    # What the pilot found and printed: for admins and the site's contacts only.
    OUTPUT_FIELDS = ("report", "stdout_tail", "stderr_tail")

    class Meta(PilotSerializer.Meta):
        fields = [
            *PilotSerializer.Meta.fields,
            "requirements",
            "report",
            "report_source",
            "stdout_tail",
            "stderr_tail",
            "events",
            "output_visible",
        ]

    def _visible(self, p: Pilot) -> bool:
        request = self.context.get("request")
        return p.site.may_read_pilot_output(request.user if request else None)

    def get_output_visible(self, p: Pilot) -> bool:
        """False when the report and logs are withheld (null): they are for the site's
        admins and contacts."""
        return self._visible(p)

    def to_representation(self, p: Pilot) -> dict:
        body = super().to_representation(p)
        if not body["output_visible"]:
            for name in self.OUTPUT_FIELDS:
                body[name] = None
        return body


class StatusChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = SiteStatusChange
        fields = ["old_status", "new_status", "reason", "by", "pilot", "at"]


class SiteSerializer(serializers.ModelSerializer):
    can_take_skims = serializers.BooleanField(read_only=True)
    contacts = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)
    latest_outcome = serializers.SerializerMethodField()
    recent_outcomes = serializers.SerializerMethodField()
    pass_rate = serializers.SerializerMethodField()

    class Meta:
        model = Site
        fields = [
            "name",
            "description",
            "batch_system",
            "submit_params",
            "requirements",
            "status",
            "status_reason",
            "status_changed_at",
            "can_take_skims",
            "pilot_interval_minutes",
            "pilot_timeout_minutes",
            "contacts",
            "latest_outcome",
            "recent_outcomes",
            "pass_rate",
            "created_at",
        ]

    def _recent(self, site: Site) -> list[Pilot]:
        if not hasattr(site, "recent"):
            site.recent = actions.recent_outcomes([site]).get(site.pk, [])
        return site.recent

    def get_latest_outcome(self, site: Site) -> str | None:
        recent = self._recent(site)
        return recent[-1].outcome if recent else None

    def get_recent_outcomes(self, site: Site) -> list[str]:
        """The last finished pilots' outcomes, oldest first."""
        return [p.outcome for p in self._recent(site)]

    def get_pass_rate(self, site: Site) -> int | None:
        """Percent of the recent outcomes that passed."""
        return actions.pass_rate(self._recent(site))


class SiteDetailSerializer(SiteSerializer):
    status_changes = serializers.SerializerMethodField()

    class Meta(SiteSerializer.Meta):
        fields = [*SiteSerializer.Meta.fields, "status_changes"]

    @extend_schema_field(StatusChangeSerializer(many=True))
    def get_status_changes(self, site: Site) -> list[dict]:
        return StatusChangeSerializer(site.status_changes.all()[:100], many=True).data


class SiteWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    batch_system = serializers.ChoiceField(choices=batch.adapter_names())
    submit_params = serializers.JSONField(required=False)
    requirements = serializers.JSONField(required=False)
    pilot_interval_minutes = serializers.IntegerField(required=False, allow_null=True)
    pilot_timeout_minutes = serializers.IntegerField(required=False)
    status = serializers.ChoiceField(choices=SiteStatus.choices, required=False)
    contacts = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        help_text="user names who may read the site's pilot reports and logs",
    )


class StatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=SiteStatus.choices)
    reason = serializers.CharField(max_length=500)


class SubmitSerializer(serializers.Serializer):
    site = serializers.CharField(max_length=64)
    n = serializers.IntegerField(default=1)


# ---------------------------------------------------------------- permissions


class ChangesNeedPermission(permissions.BasePermission):
    """Everyone logged in reads; writing needs the view's ``write_permission`` (admin role)."""

    message = "changing sites and sending pilots needs the admin role"

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return True
        return request.user.has_perm(view.write_permission)


WRITE = [permissions.IsAuthenticated, ChangesNeedPermission]


# ---------------------------------------------------------------- what pilots call


# Pilots of a whole cluster may come from one address (NAT): they have a rate of their own.
PILOT_THROTTLES = [throttling.ScopedRateThrottle]


class Ping(APIView):
    """The portal's clock, for pilots to measure their offset and prove outbound access."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = PILOT_THROTTLES
    throttle_scope = "pilot"

    @extend_schema(
        responses=inline_serializer(
            "Ping", {"time": serializers.DateTimeField(), "service": serializers.CharField()}
        )
    )
    def get(self, request):
        return Response({"time": timezone.now().isoformat(), "service": "dss"})


class PilotReport(APIView):
    """A pilot posts its report here once, with ``Authorization: Pilot <token>``.

    403 for a wrong, expired or used token; 400 for a body that is not a report or is
    larger than ``PILOT_REPORT_MAX_BYTES``. Nothing is stored in either case.
    """

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = PILOT_THROTTLES
    throttle_scope = "pilot"

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={201: PilotSerializer},
    )
    def post(self, request, pk: int):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # At most one byte past the limit is read: enough to know the body is too large.
        body = read_body(request, settings.PILOT_REPORT_MAX_BYTES + 1)
        pilot = actions.check_receive_report(pk, token.strip() if scheme == "Pilot" else "", body)
        # Short: the pilot prints this answer in its error log.
        return Response(
            {"status": "received", "pilot": pilot.pk, "verdict": pilot.verdict},
            status=status.HTTP_201_CREATED,
        )


# ---------------------------------------------------------------- sites


class SiteList(generics.ListAPIView):
    """Every site with its status, latest outcome and pass rate; POST adds a site (admin)."""

    serializer_class = SiteSerializer
    permission_classes = WRITE
    write_permission = "pilotchecker.add_site"
    pagination_class = None

    def get_queryset(self):
        return actions.sites_overview()

    @extend_schema(request=SiteWriteSerializer, responses={201: SiteDetailSerializer})
    def post(self, request):
        d = dict(validated(SiteWriteSerializer, request.data))
        site = actions.do_add_site(d.pop("name"), d.pop("batch_system"), user=request.user, **d)
        return Response(SiteDetailSerializer(site).data, status=status.HTTP_201_CREATED)


class SiteDetail(APIView):
    """A site with its status history; PATCH changes its settings (admin)."""

    permission_classes = WRITE
    write_permission = "pilotchecker.change_site"

    @extend_schema(responses=SiteDetailSerializer)
    def get(self, request, name: str):
        return Response(SiteDetailSerializer(actions.get_site(name)).data)

    @extend_schema(request=SiteWriteSerializer, responses=SiteDetailSerializer)
    def patch(self, request, name: str):
        site = actions.get_site(name)
        d = dict(validated(SiteWriteSerializer, request.data, partial=True))
        if d.pop("name", site.name) != site.name:
            raise InvalidInput("a site cannot be renamed", where="name")
        if "status" in d:
            raise InvalidInput("set the status with POST …/status/ and a reason", where="status")
        actions.check_update_site(site, user=request.user, **d)
        return Response(SiteDetailSerializer(site).data)


class SiteStatusView(APIView):
    """Set a site's status by hand, with a reason that is kept (admin)."""

    permission_classes = WRITE
    write_permission = "pilotchecker.change_site"

    @extend_schema(request=StatusSerializer, responses=StatusChangeSerializer)
    def post(self, request, name: str):
        site = actions.get_site(name)
        d = validated(StatusSerializer, request.data)
        change = actions.do_set_site_status(site, d["status"], d["reason"], user=request.user)
        return Response(StatusChangeSerializer(change).data)


# ---------------------------------------------------------------- pilots


class PilotList(generics.ListAPIView):
    """Pilots, newest first (``?site=``, ``?state=``); POST sends pilots to a site (admin)."""

    serializer_class = PilotSerializer
    permission_classes = WRITE
    write_permission = "pilotchecker.add_pilot"

    @extend_schema(
        parameters=[
            OpenApiParameter("site", str, description="a site name"),
            OpenApiParameter("state", str, enum=PilotState.values),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = Pilot.objects.select_related("site", "owner").defer(
            "report", "stdout_tail", "stderr_tail"
        )
        if site := self.request.query_params.get("site"):
            qs = qs.filter(site__name=site)
        if state := self.request.query_params.get("state"):
            qs = qs.filter(state=state)
        return qs

    @extend_schema(request=SubmitSerializer, responses={202: PilotSerializer(many=True)})
    def post(self, request):
        d = validated(SubmitSerializer, request.data)
        site = actions.get_site(d["site"])
        with transaction.atomic():
            pilots = actions.do_submit_pilots(site, d["n"], user=request.user)
        return Response(PilotSerializer(pilots, many=True).data, status=status.HTTP_202_ACCEPTED)


class PilotDetail(generics.RetrieveAPIView):
    """One pilot: its states, the batch system's view, its report, its logs and events."""

    serializer_class = PilotDetailSerializer
    queryset = Pilot.objects.select_related("site", "owner").prefetch_related("events")


class PilotCancel(APIView):
    """Cancel a pilot through its batch system (admin)."""

    permission_classes = WRITE
    write_permission = "pilotchecker.add_pilot"

    @extend_schema(request=None, responses=PilotSerializer)
    def post(self, request, pk: int):
        pilot = actions.get_pilot(pk)
        actions.do_cancel_pilot(pilot, user=request.user)
        return Response(PilotSerializer(pilot).data)
