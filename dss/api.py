"""The REST edge shared by every app: domain errors become JSON bodies with a fitting
status, and bad request data becomes InvalidInput naming its field."""

from __future__ import annotations

from rest_framework import serializers, status
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
