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

    def cached_page(self, request, name: str, key: tuple, count, rows):
        """The response of one page whose count and rows are cached under the generation
        ``name`` (dss.generations) and ``key`` with the normalised limit and offset:
        ``count()`` counts the items, ``rows(offset, limit)`` gives one page's serialised
        rows. The links to the next and previous pages are made for each request."""
        # imported here: DRF imports this module while settings load, before models can be
        from dss.generations import Cached

        cached = Cached(name)
        self.request = request
        self.limit = self.get_limit(request)
        self.count = cached((*key, "count"), count)
        # past the end every offset is the same empty page
        self.offset = min(self.get_offset(request), self.count)
        results = cached((*key, self.offset, self.limit), lambda: rows(self.offset, self.limit))
        return self.get_paginated_response(results)
