"""The nopayloaddb REST API under /api/cdb_rest/, so that its clients (the C++
nopayloadclient and its CLI) work unchanged: the same routes, bodies and answers.

Reads are open (worker nodes read anonymously); writes need an API token, sent as
``Authorization: Token``, or as HTTP Basic (user name and token) for clients that carry
credentials in their URL, and the admin or conditions-manager role. Every success is a 200,
as the client expects; errors are JSON bodies with a ``detail``.

Answers about a locked global tag carry an ETag and ``Cache-Control: public, max-age`` so
that a proxy (Squid, Frontier) can serve worker nodes; a conditional GET answers 304.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from dss.errors import InvalidInput, NotFound
from dss.tokens import BasicTokenAuthentication, TokenAuthentication

from . import actions, lumi
from .models import GlobalTag, PayloadIOV, PayloadList, PayloadType


class BasicTokenScheme(OpenApiAuthenticationExtension):
    target_class = "dss.tokens.BasicTokenAuthentication"
    name = "basicToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "HTTP Basic: your user name, and an API token as the password",
        }


# --------------------------------------------------------------------------- serializers


class PayloadTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = PayloadType
        fields = ["id", "name", "description", "created"]


class GlobalTagSerializer(serializers.ModelSerializer):
    class Meta:
        model = GlobalTag
        fields = ["id", "name", "author", "description", "status", "created", "updated"]


class GlobalTagListSerializer(GlobalTagSerializer):
    payload_lists_count = serializers.IntegerField(read_only=True)
    payload_iov_count = serializers.IntegerField(read_only=True)

    class Meta(GlobalTagSerializer.Meta):
        fields = [*GlobalTagSerializer.Meta.fields, "payload_lists_count", "payload_iov_count"]


class PayloadIOVSerializer(serializers.ModelSerializer):
    payload_list = serializers.SlugRelatedField(slug_field="name", read_only=True)
    major_iov_end = serializers.SerializerMethodField()
    minor_iov_end = serializers.SerializerMethodField()

    class Meta:
        model = PayloadIOV
        fields = [
            "id",
            "payload_url",
            "checksum",
            "size",
            "major_iov",
            "minor_iov",
            "major_iov_end",
            "minor_iov_end",
            "payload_list",
            "inserted",
        ]

    def get_major_iov_end(self, iov) -> int:
        return actions.OPEN_END if iov.major_iov_end is None else iov.major_iov_end

    def get_minor_iov_end(self, iov) -> int:
        return actions.OPEN_END if iov.minor_iov_end is None else iov.minor_iov_end


class PayloadListSerializer(serializers.ModelSerializer):
    payload_type = serializers.SlugRelatedField(slug_field="name", read_only=True)
    global_tag = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = PayloadList
        fields = ["id", "name", "global_tag", "payload_type", "created"]


class PayloadListWithIOVsSerializer(PayloadListSerializer):
    payload_iov = PayloadIOVSerializer(source="iovs", many=True, read_only=True)

    class Meta(PayloadListSerializer.Meta):
        fields = [*PayloadListSerializer.Meta.fields, "payload_iov"]


class GlobalTagDetailSerializer(GlobalTagSerializer):
    payload_lists = PayloadListWithIOVsSerializer(many=True, read_only=True)

    class Meta(GlobalTagSerializer.Meta):
        fields = [*GlobalTagSerializer.Meta.fields, "payload_lists"]


# --------------------------------------------------------------------------- the edge


class ReadOpenWriteManagers(permissions.BasePermission):
    """Anyone reads; a write needs a signed-in admin or conditions manager (401 for an
    anonymous caller, 403 for another role). The actions check the role again."""

    message = "changing conditions needs the admin or conditions-manager role"

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 with the Basic challenge
        actions.check_may_write(request.user)  # a 403 naming the roles
        return True


class CdbView(APIView):
    # Basic first: its WWW-Authenticate challenge is what libcurl answers.
    authentication_classes = [
        BasicTokenAuthentication,
        TokenAuthentication,
        SessionAuthentication,
    ]
    permission_classes = [ReadOpenWriteManagers]
    # one rate of its own (DSS_API_RATE_CONDITIONS) per caller: worker nodes read
    # anonymously, many behind one address, so the anonymous rate does not apply
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "conditions"

    def body(self) -> dict:
        """The request's JSON object ({} for none: the client sends ``null``)."""
        data = self.request.data
        if data is None or data == "":
            return {}
        if not isinstance(data, dict):
            raise InvalidInput("send a JSON object", where="body")
        return data


def field(data: dict, name: str, required: bool = True):
    if name not in data or data[name] is None:
        if required:
            raise InvalidInput(f"{name} is required", where=name)
        return None
    return data[name]


def cached(request, data, locked: bool) -> Response:
    """``data`` as a 200, or a 304 when the caller holds it already; answers about a locked
    global tag may be kept by browsers and proxies for CONDITIONS_LOCKED_MAX_AGE seconds."""
    if not locked:
        response = Response(data)
        response["Cache-Control"] = "no-cache"
        return response
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={settings.CONDITIONS_LOCKED_MAX_AGE}",
    }
    match = request.headers.get("If-None-Match", "")
    if etag in [t.strip().removeprefix("W/") for t in match.split(",")] or match.strip() == "*":
        return Response(status=304, headers=headers)
    return Response(data, headers=headers)


def number(request, name: str) -> int:
    value = request.query_params.get(name)
    if value is None:
        raise InvalidInput(f"{name} is required", where=name)
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {value!r}", where=name) from None


# --------------------------------------------------------------------------- global tags


class GlobalTags(CdbView):
    """``gt``: every global tag (GET) or a new one (POST {name, status, author})."""

    @extend_schema(responses=GlobalTagSerializer(many=True))
    def get(self, request):
        return Response(GlobalTagSerializer(GlobalTag.objects.all(), many=True).data)

    @extend_schema(request=GlobalTagSerializer, responses=GlobalTagSerializer)
    def post(self, request):
        data = self.body()
        status = data.get("status") or GlobalTag.UNLOCKED
        if status not in (GlobalTag.UNLOCKED, GlobalTag.LOCKED):
            raise InvalidInput(
                f"a global tag status is 'unlocked' or 'locked', not {status!r}", where="status"
            )
        gt = actions.do_create_global_tag(
            request.user,
            field(data, "name"),
            author=str(data.get("author") or ""),
            description=str(data.get("description") or ""),
        )
        if status != GlobalTag.UNLOCKED:
            actions.do_set_status(request.user, gt, status)
        return Response(GlobalTagSerializer(gt).data)


class GlobalTagById(CdbView):
    @extend_schema(responses=GlobalTagDetailSerializer)
    def get(self, request, pk: int):
        gt = GlobalTag.objects.filter(pk=pk).first()
        if gt is None:
            raise NotFound(f"no global tag #{pk}", where="id")
        return Response(GlobalTagDetailSerializer(gt).data)


class GlobalTagByName(CdbView):
    """``globalTag/<name>``: one global tag with its payload lists and their IOVs."""

    @extend_schema(responses=GlobalTagDetailSerializer)
    def get(self, request, name: str):
        gt = actions.get_global_tag(name)
        return cached(request, GlobalTagDetailSerializer(gt).data, gt.is_locked)


class GlobalTagsWithCounts(CdbView):
    """``globalTags``: every global tag with its numbers of payload lists and IOVs."""

    @extend_schema(responses=GlobalTagListSerializer(many=True))
    def get(self, request):
        return Response(GlobalTagListSerializer(actions.global_tags_with_counts(), many=True).data)


class GlobalTagDelete(CdbView):
    @extend_schema(request=None, responses={200: dict})
    def delete(self, request, name: str):
        actions.do_delete_global_tag(request.user, actions.get_global_tag(name))
        return Response({"detail": f"global tag {name} deleted"})


class GlobalTagStatuses(CdbView):
    """``gtstatus``: the statuses a global tag may have. They are fixed; POSTing one that
    exists answers it, as creating it would."""

    def statuses(self):
        return [{"id": n, "name": s} for n, (s, _) in enumerate(GlobalTag.STATUSES, 1)]

    @extend_schema(responses={200: dict})
    def get(self, request):
        return Response(self.statuses())

    @extend_schema(request={"application/json": dict}, responses={200: dict})
    def post(self, request):
        actions.check_may_write(request.user)
        name = field(self.body(), "name")
        for status in self.statuses():
            if status["name"] == name:
                return Response(status)
        raise InvalidInput(
            f"a global tag status is 'unlocked' or 'locked', not {name!r}", where="name"
        )


class GlobalTagPayloadLists(CdbView):
    """``gtPayloadLists/<name>``: {payload type: payload list name} of a global tag."""

    @extend_schema(responses={200: dict})
    def get(self, request, name: str):
        gt = actions.get_global_tag(name)
        return cached(request, actions.payload_lists_of(gt.name), gt.is_locked)


class GlobalTagClone(CdbView):
    @extend_schema(request=None, responses=GlobalTagListSerializer)
    def post(self, request, name: str, clone: str):
        gt = actions.do_clone_global_tag(request.user, actions.get_global_tag(name), clone)
        gt = actions.global_tags_with_counts().get(pk=gt.pk)
        return Response(GlobalTagListSerializer(gt).data)


class GlobalTagChangeStatus(CdbView):
    @extend_schema(request=None, responses=GlobalTagSerializer)
    def put(self, request, name: str, status: str):
        gt = actions.do_set_status(request.user, actions.get_global_tag(name), status)
        return Response(GlobalTagSerializer(gt).data)


# --------------------------------------------------------------------------- types, lists


class PayloadTypes(CdbView):
    """``pt``: every payload type (GET) or a new one (POST {name, description})."""

    @extend_schema(responses=PayloadTypeSerializer(many=True))
    def get(self, request):
        return Response(PayloadTypeSerializer(PayloadType.objects.all(), many=True).data)

    @extend_schema(request=PayloadTypeSerializer, responses=PayloadTypeSerializer)
    def post(self, request):
        data = self.body()
        pt = actions.do_create_payload_type(
            request.user, field(data, "name"), str(data.get("description") or "")
        )
        return Response(PayloadTypeSerializer(pt).data)


class PayloadTypeDelete(CdbView):
    @extend_schema(request=None, responses={200: dict})
    def delete(self, request, name: str):
        actions.do_delete_payload_type(request.user, actions.get_payload_type(name))
        return Response({"detail": f"payload type {name} deleted"})


class PayloadLists(CdbView):
    """``pl``: payload lists (GET, ``?global_tag=`` or ``?payload_type=`` to filter) or a new
    one of a type, attached to no global tag (POST {payload_type})."""

    @extend_schema(
        parameters=[OpenApiParameter("global_tag"), OpenApiParameter("payload_type")],
        responses=PayloadListSerializer(many=True),
    )
    def get(self, request):
        q = PayloadList.objects.select_related("global_tag", "payload_type")
        if "global_tag" in request.query_params:
            q = q.filter(global_tag__name=request.query_params["global_tag"])
        if "payload_type" in request.query_params:
            q = q.filter(payload_type__name=request.query_params["payload_type"])
        return Response(PayloadListSerializer(q, many=True).data)

    @extend_schema(request={"application/json": dict}, responses=PayloadListSerializer)
    def post(self, request):
        pl = actions.do_create_payload_list(request.user, field(self.body(), "payload_type"))
        return Response(PayloadListSerializer(pl).data)


class PayloadListById(CdbView):
    @extend_schema(responses=PayloadListSerializer)
    def get(self, request, pk: int):
        pl = PayloadList.objects.filter(pk=pk).first()
        if pl is None:
            raise NotFound(f"no payload list #{pk}", where="id")
        return Response(PayloadListSerializer(pl).data)


class PayloadListDelete(CdbView):
    @extend_schema(request=None, responses={200: dict})
    def delete(self, request, name: str):
        actions.do_delete_payload_list(request.user, actions.get_payload_list(name))
        return Response({"detail": f"payload list {name} deleted"})


class PayloadListAttach(CdbView):
    """``pl_attach``: PUT {payload_list, global_tag}."""

    @extend_schema(request={"application/json": dict}, responses=PayloadListSerializer)
    def put(self, request):
        data = self.body()
        pl = actions.get_payload_list(str(field(data, "payload_list")))
        gt = actions.get_global_tag(str(field(data, "global_tag")))
        pl = actions.do_attach_payload_list(request.user, pl, gt)
        return Response(PayloadListSerializer(pl).data)


# --------------------------------------------------------------------------- IOVs


class PayloadIOVs(CdbView):
    """``piov``: the IOVs of one payload list (GET ?payload_list=) or a new IOV in no list
    yet (POST {payload_url, checksum, major_iov, minor_iov, [major_iov_end, minor_iov_end,
    size]}; no end is an open end)."""

    @extend_schema(
        parameters=[OpenApiParameter("payload_list", required=True)],
        responses=PayloadIOVSerializer(many=True),
    )
    def get(self, request):
        name = request.query_params.get("payload_list")
        if not name:
            raise InvalidInput("give ?payload_list=NAME", where="payload_list")
        pl = actions.get_payload_list(name)
        return Response(
            PayloadIOVSerializer(pl.iovs.select_related("payload_list"), many=True).data
        )

    @extend_schema(request=PayloadIOVSerializer, responses=PayloadIOVSerializer)
    def post(self, request):
        data = self.body()
        iov = actions.do_create_iov(
            request.user,
            field(data, "payload_url"),
            field(data, "checksum"),
            field(data, "major_iov"),
            field(data, "minor_iov"),
            field(data, "major_iov_end", required=False),
            field(data, "minor_iov_end", required=False),
            size=field(data, "size", required=False),
        )
        return Response(PayloadIOVSerializer(iov).data)


class PayloadIOVById(CdbView):
    @extend_schema(responses=PayloadIOVSerializer)
    def get(self, request, pk: int):
        iov = PayloadIOV.objects.select_related("payload_list").filter(pk=pk).first()
        if iov is None:
            raise NotFound(f"no payload IOV #{pk}", where="id")
        return Response(PayloadIOVSerializer(iov).data)


class PayloadIOVAttach(CdbView):
    """``piov_attach``: PUT {payload_list, piov_id}: the IOV joins the list (see
    ``actions.do_attach_iov`` for overlaps and locked tags)."""

    @extend_schema(request={"application/json": dict}, responses=PayloadIOVSerializer)
    def put(self, request):
        data = self.body()
        pl = actions.get_payload_list(str(field(data, "payload_list")))
        piov_id = field(data, "piov_id")
        if isinstance(piov_id, bool) or not isinstance(piov_id, int):
            raise InvalidInput("piov_id must be an integer", where="piov_id")
        iov = PayloadIOV.objects.filter(pk=piov_id).first()
        if iov is None:
            raise NotFound(f"no payload IOV #{piov_id}", where="piov_id")
        iov = actions.do_attach_iov(request.user, pl, iov)
        return Response(PayloadIOVSerializer(iov).data)


class PayloadIOVBulk(CdbView):
    """``bulk_piov``: POST a list of IOVs, each naming its payload_list; all or none."""

    @extend_schema(request={"application/json": dict}, responses={200: dict})
    def post(self, request):
        n = actions.do_bulk_insert(request.user, request.data)
        return Response({"inserted": n})


class PayloadIOVDelete(CdbView):
    @extend_schema(request=None, responses={200: dict})
    def delete(self, request, gt: str, pt: str, major: int, minor: int, **end):
        start, stop = actions.check_iov(major, minor, end.get("major_end"), end.get("minor_end"))
        actions.do_delete_iov(request.user, actions.get_global_tag(gt), pt, start, stop)
        return Response({"detail": "payload IOV deleted"})


class PayloadIOVRangeDelete(PayloadIOVDelete):
    @extend_schema(
        request=None, responses={200: dict}, operation_id="cdb_rest_deletePayloadIOV_range"
    )
    def delete(self, request, gt: str, pt: str, major: int, minor: int, **end):
        return super().delete(request, gt, pt, major, minor, **end)


class PayloadIOVLookup(CdbView):
    """``payloadiovs/?gtName=&majorIOV=&minorIOV=``: for each payload type of the global
    tag, the IOV valid at (majorIOV, minorIOV) as [type, url, checksum, size, major,
    minor, major_end, minor_end] (an open end is 2^63-1). One indexed query."""

    @extend_schema(
        parameters=[
            OpenApiParameter("gtName", required=True),
            OpenApiParameter("majorIOV", int, required=True),
            OpenApiParameter("minorIOV", int, required=True),
        ],
        responses={200: OpenApiTypes.ANY},
    )
    def get(self, request):
        gt = request.query_params.get("gtName")
        if not gt:
            raise InvalidInput("gtName is required", where="gtName")
        found = actions.lookup(gt, number(request, "majorIOV"), number(request, "minorIOV"))
        return cached(request, [list(r) for r in found.rows], found.locked)


# --------------------------------------------------------------------------- the portal's own


class GoodRunList(CdbView):
    """``/api/conditions/grl/?gt=&flags=pixel,muon``: the runs and lumiblocks where every
    flag is good in the global tag's dq payloads, as ``{"run": [[first, last], ...]}``."""

    throttle_scope = "user"

    @extend_schema(
        parameters=[
            OpenApiParameter("gt", required=True),
            OpenApiParameter("flags", required=True),
        ],
        responses={200: dict},
    )
    def get(self, request):
        name = request.query_params.get("gt")
        if not name:
            raise InvalidInput("gt is required: the global tag to read", where="gt")
        gt = actions.get_global_tag(name)
        flags = [f for f in request.query_params.get("flags", "").split(",") if f]
        return cached(request, lumi.good_run_list(gt, flags), gt.is_locked)


class Luminosity(CdbView):
    """``/api/conditions/luminosity/``: POST {gt, grl}: the integrated luminosity of a
    good-run list from the global tag's lumi payloads."""

    throttle_scope = "user"
    permission_classes = [permissions.AllowAny]  # it only reads

    @extend_schema(request={"application/json": dict}, responses={200: dict})
    def post(self, request):
        data = self.body()
        gt = actions.get_global_tag(str(field(data, "gt")))
        grl = field(data, "grl")
        if not isinstance(grl, dict):
            raise InvalidInput('grl is {"run": [[first, last], ...]}', where="grl")
        return Response(lumi.integrated_luminosity(gt, grl))
