"""The REST edge shared by every app: domain errors become JSON bodies with a fitting
status, and bad request data becomes InvalidInput naming its field."""

from __future__ import annotations

from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import Conflict, DSSError, Forbidden, InvalidInput, NotFound, StorageError

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
