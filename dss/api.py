"""REST edge shared by every app: domain errors become JSON bodies with a fitting status."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import Conflict, DSSError, NotFound, StorageError

STATUS_OF = [
    (NotFound, status.HTTP_404_NOT_FOUND),
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
