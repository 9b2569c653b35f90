"""Request hygiene for every page and API route, in one place: which proxy headers to
believe, input no part of the portal can store, and domain errors that reach a page.

* ``TrustedProxyMiddleware``: ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are believed
  only from the addresses in ``DSS_TRUSTED_PROXIES``; from anyone else they are removed
  before Django or the portal reads them.
* ``MalformedInputMiddleware``: a NUL character in the path, a query parameter or a form
  field is a 400 (PostgreSQL cannot store NUL in text, and no name, selection or option
  of the portal contains one).
* ``ContentSecurityPolicyMiddleware``: django-csp's, without nonces.
* ``DomainErrorMiddleware``: a ``DSSError`` raised by a page view becomes the page of its
  status (404 for NotFound, 403 for Forbidden, 400 otherwise) instead of a server error.
  The REST API maps them itself (``dss.api.exception_handler``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render

from .errors import DSSError, Forbidden, InvalidInput, NotFound

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str], setting: str) -> list[Network]:
    """Addresses and networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1``) from a setting's list."""
    from django.core.exceptions import ImproperlyConfigured

    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{setting}: {entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
    return networks


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def error_answer(request: HttpRequest, err: DSSError, status: int) -> HttpResponse:
    """``err`` as the API's JSON body, or as an error page naming what was wrong."""
    if is_api(request):
        return JsonResponse(err.as_dict(), status=status)
    return render(request, "error.html", {"error": err, "status": status}, status=status)


class TrustedProxyMiddleware:
    """Believe ``X-Forwarded-Proto``/``-For`` only from ``DSS_TRUSTED_PROXIES``.

    From a trusted proxy, the client's address (the nearest untrusted one in
    ``X-Forwarded-For``) becomes ``REMOTE_ADDR``, so that logs and throttling see the
    client, not the proxy; ``SECURE_PROXY_SSL_HEADER`` then tells HTTPS from HTTP.
    """

    HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST")

    def __init__(self, get_response):
        self.get_response = get_response
        self.proxies = parse_networks(settings.DSS_TRUSTED_PROXIES, "DSS_TRUSTED_PROXIES")

    def trusted(self, address) -> bool:
        return address is not None and any(address in net for net in self.proxies)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        if not self.trusted(_address(meta.get("REMOTE_ADDR", ""))):
            for header in self.HEADERS:
                meta.pop(header, None)
        elif meta.get("HTTP_X_FORWARDED_FOR"):
            hops = [h.strip() for h in meta["HTTP_X_FORWARDED_FOR"].split(",") if h.strip()]
            for hop in reversed(hops):
                address = _address(hop)
                if address is None:
                    break
                meta["REMOTE_ADDR"] = str(address)
                if not self.trusted(address):
                    break
        return self.get_response(request)


def _has_nul(values: Iterable[str]) -> bool:
    return any("\x00" in v for v in values)


class MalformedInputMiddleware:
    """Refuse a NUL anywhere in the path, the query or a form with a 400 naming where."""

    FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")

    def __init__(self, get_response):
        self.get_response = get_response

    def _where(self, request: HttpRequest) -> str | None:
        if "\x00" in request.path_info:
            return "path"
        for key, values in request.GET.lists():
            if _has_nul([key, *values]):
                return f"query parameter {key.replace(chr(0), '?')!r}"
        if request.method == "POST" and request.content_type in self.FORMS:
            try:
                form = request.POST
            except MultiPartParserError:
                return "form body"
            for key, values in form.lists():
                if _has_nul([key, *values]):
                    return f"form field {key.replace(chr(0), '?')!r}"
        return None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = self._where(request)
        if where is not None:
            err = InvalidInput(f"{where}: NUL characters are not allowed", where=where)
            return error_answer(request, err, 400)
        return self.get_response(request)


class DomainErrorMiddleware:
    """A DSSError that escapes a page view is shown as the page of its status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if not isinstance(exception, DSSError) or is_api(request):
            return None
        if isinstance(exception, NotFound):
            status = 404
        elif isinstance(exception, Forbidden):
            status = 403
        else:
            from .api import STATUS_OF

            status = next(s for cls, s in STATUS_OF if isinstance(exception, cls))
        return error_answer(request, exception, status)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware without nonces: no page has an inline script to allow, and
    the lazy ``request.csp_nonce`` it leaves on every request breaks code that inspects
    every live object (the XRootD client does so when a process exits)."""

    def process_request(self, request: HttpRequest) -> None:
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = super().process_response(request, response)
        request.__dict__.pop("csp_nonce", None)
        return response
