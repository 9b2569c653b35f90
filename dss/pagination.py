"""The REST API's pagination (``DEFAULT_PAGINATION_CLASS``), apart from ``dss.api`` so that
DRF can import it while it sets up its views."""

from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """Every API list: ``?limit=`` (default ``PAGE_SIZE``, at most ``DSS_API_MAX_LIMIT``)
    and ``?offset=``; a larger limit is cut to the maximum, and ``next`` leads on."""

    @property
    def max_limit(self) -> int:
        return settings.DSS_API_MAX_LIMIT

    @property
    def default_limit(self) -> int:
        return min(settings.REST_FRAMEWORK["PAGE_SIZE"], self.max_limit)
