"""The REST edge shared by every app: domain errors become JSON bodies with a fitting
status, and bad request data becomes InvalidInput naming its field; and the API tokens'
own endpoints."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import tokens
from .errors import Conflict, DSSError, Forbidden, InvalidInput, NotFound, StorageError
from .models import ApiToken
from .views import locked_out

STATUS_OF = [
    (NotFound, status.HTTP_404_NOT_FOUND),
    (Forbidden, status.HTTP_403_FORBIDDEN),
    (Conflict, status.HTTP_409_CONFLICT),
    (StorageError, status.HTTP_502_BAD_GATEWAY),
    (DSSError, status.HTTP_400_BAD_REQUEST),
]


def error_response(err: DSSError) -> Response:
    code = next(s for cls, s in STATUS_OF if isinstance(err, cls))
    return Response(err.as_dict(), status=code)


def exception_handler(exc, context):
    if isinstance(exc, DSSError):
        return error_response(exc)
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict | list):
        # a view's own serializer (the token endpoint's, for one): the usual error body
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(invalid_input(errors) if errors else InvalidInput("invalid input"))
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data.setdefault("error", getattr(exc, "default_code", "error"))
    return response


# --------------------------------------------------------------------------- request data


def invalid_input(errors: dict) -> InvalidInput:
    """The first of a serializer's or form's errors as InvalidInput naming its field: the
    one way every REST endpoint reports bad input (a JSON 400)."""
    field, problems = next(iter(errors.items()))
    if isinstance(problems, dict):
        problems = [f"{k}: {v}" for k, v in problems.items()]
    elif not isinstance(problems, list):
        problems = [problems]
    text = " ".join(str(p) for p in problems)
    where = "" if field in ("non_field_errors", "__all__") else field
    return InvalidInput(f"{where}: {text}" if where else text, where=where)


def validated(serializer_class: type[serializers.Serializer], data, **kwargs) -> dict:
    """The request data checked by ``serializer_class``, or InvalidInput (a JSON 400)."""
    s = serializer_class(data=data, **kwargs)
    if not s.is_valid():
        raise invalid_input(s.errors)
    return s.validated_data


# --------------------------------------------------------------------------- API tokens


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "revoked_reason",
        ]


class IssuedTokenSerializer(TokenSerializer):
    token = serializers.CharField(help_text="the key: shown this once, never again")

    class Meta(TokenSerializer.Meta):
        fields = ["token", *TokenSerializer.Meta.fields]


class NewTokenSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, default="command line")
    days = serializers.IntegerField(required=False, help_text="default DSS_TOKEN_DAYS")


class PasswordSerializer(NewTokenSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


def issued_answer(issued: tokens.IssuedToken) -> Response:
    body = TokenSerializer(issued.token).data
    return Response({"token": issued.key, **body}, status=status.HTTP_201_CREATED)


class ObtainToken(APIView):
    """A new named token for a user name and password (what ``dss login`` scripts do).

    Throttled (scope ``token``) and counted by the login lockout: after
    DSS_LOGIN_FAILURE_LIMIT wrong passwords for a user name from one address, 429 until
    the lockout ends.
    """

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_scope = "token"

    @extend_schema(request=PasswordSerializer, responses={201: IssuedTokenSerializer})
    def post(self, request):
        d = validated(PasswordSerializer, request.data)
        # The Django request: the lockout (django-axes) reads and marks it.
        user = authenticate(request._request, username=d["username"], password=d["password"])
        if user is None:
            if getattr(request._request, "axes_locked_out", False):
                return locked_out(request._request)
            # 400, as rest_framework's token view answered: the command lines expect it
            raise InvalidInput("wrong user name or password", where="password")
        return issued_answer(tokens.do_issue_token(user, d["name"], d.get("days")))


class TokenList(APIView):
    """Your tokens (never their keys); POST makes a new one and answers its key once."""

    throttle_scope = "token"

    @extend_schema(responses=TokenSerializer(many=True))
    def get(self, request):
        rows = ApiToken.objects.filter(user=request.user)
        return Response(TokenSerializer(rows, many=True).data)

    @extend_schema(request=NewTokenSerializer, responses={201: IssuedTokenSerializer})
    def post(self, request):
        d = validated(NewTokenSerializer, request.data)
        return issued_answer(tokens.do_issue_token(request.user, d["name"], d.get("days")))


class TokenRotate(APIView):
    """A new key for one of your tokens (same name); the old key stops at once."""

    throttle_scope = "token"

    @extend_schema(request=None, responses={201: IssuedTokenSerializer})
    def post(self, request, pk: int):
        return issued_answer(tokens.do_rotate_token(tokens.get_token_for_user(request.user, pk)))


class TokenRevoke(APIView):
    """Stop one of your tokens at once."""

    @extend_schema(request=None, responses=TokenSerializer)
    def post(self, request, pk: int):
        token = tokens.get_token_for_user(request.user, pk)
        tokens.do_revoke_token(token)
        return Response(TokenSerializer(token).data)


# --------------------------------------------------------------------------- bodies


def read_body(request, limit: int) -> bytes:
    """At most ``limit`` bytes of a request's body, sent with a Content-Length or chunked.

    Django reads a body without Content-Length as empty. Under gunicorn (and other servers
    that mark ``wsgi.input_terminated``) a chunked body arrives decoded and ends by itself,
    so it is read from the WSGI input until it ends or ``limit`` bytes have come.
    """
    request = getattr(request, "_request", request)
    meta = request.META
    if meta.get("CONTENT_LENGTH") or not meta.get("wsgi.input_terminated"):
        return request.read(limit)
    stream, parts, size = meta["wsgi.input"], [], 0
    while size < limit:
        part = stream.read(min(65536, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)
