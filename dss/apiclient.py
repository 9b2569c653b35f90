"""The small REST client of the DSS portal, shared by the ``dmu`` and ``dss`` command lines.

Plain Python with ``requests`` only (no Django), so it runs on worker nodes and laptops.
Where the portal is and who we are comes from, first to last: ``--url``/``--token``, the
environment (``DSS_URL``, ``DSS_TOKEN``), then ``~/.config/dss/client.ini``::

    [dss]
    url = https://dss.example.org
    token = 0123456789abcdef

Errors the portal reports as ``{"error": code, "detail": message, "where": ...}`` come back
as the matching ``dss.errors`` exception, so a command line shows and exits with them the
same way as with its own errors.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from dss.errors import (
    BadEventFile,
    ChecksumMismatch,
    Conflict,
    DSSError,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
)

# Registration reads and checksums every file on the SE before answering: allow for it.
DEFAULT_TIMEOUT = 600.0

_ERROR_CLASSES: dict[str, type[DSSError]] = {
    "invalid": InvalidInput,
    "not_found": NotFound,
    "conflict": Conflict,
    "bad_event_file": BadEventFile,
    "checksum_mismatch": ChecksumMismatch,
    "storage_error": StorageError,
    "storage_unreachable": StorageError,
    "no_space": StorageError,
    "read_only": StorageError,
    "permission_denied": StorageError,
}
_STATUS_CLASSES: dict[int, type[DSSError]] = {
    400: InvalidInput,
    404: NotFound,
    409: Conflict,
    502: StorageError,
    503: StorageError,
    504: StorageError,
}


class PortalError(DSSError):
    """The portal could not be reached, refused our credentials, or failed by itself."""

    code = "portal_error"
    exit_code = 1


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/dss/client.ini`` (``~/.config/dss/client.ini`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dss" / "client.ini"


@dataclass(frozen=True)
class PortalSettings:
    """Where the portal is and the API token to use (``token`` may be empty)."""

    url: str
    token: str


def resolve_settings(
    url: str | None = None, token: str | None = None, path: Path | None = None
) -> PortalSettings:
    """Portal URL and token from the arguments, else the environment, else the ini file.

    Raises InvalidInput naming all three places when no URL is found anywhere.
    """
    ini = configparser.ConfigParser()
    ini_path = path or config_path()
    try:
        ini.read(ini_path)
    except configparser.Error as exc:
        raise InvalidInput(f"cannot read the client settings: {exc}", where=str(ini_path)) from exc
    section = ini["dss"] if ini.has_section("dss") else {}
    url = url or os.environ.get("DSS_URL") or section.get("url") or ""
    token = token or os.environ.get("DSS_TOKEN") or section.get("token") or ""
    if not url:
        raise InvalidInput(
            f"no portal URL: give --url, set DSS_URL, or write url = ... under [dss] in {ini_path}",
            where="portal URL",
        )
    if not url.startswith(("http://", "https://")):
        raise InvalidInput("the portal URL must start with http:// or https://", where=url)
    return PortalSettings(url=url.rstrip("/"), token=token.strip())


class ApiClient:
    """Calls to the portal's REST API under ``/api/``; every method raises DSSError on failure."""

    def __init__(self, url: str, token: str = "", *, timeout: float = DEFAULT_TIMEOUT):
        """``url`` is the portal's base URL (``https://dss.example.org``)."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    @classmethod
    def from_settings(
        cls, url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> ApiClient:
        """A client configured from arguments, environment or ini file (see the module doc)."""
        settings = resolve_settings(url, token)
        return cls(settings.url, settings.token, timeout=timeout)

    # -- the endpoints the command lines use ------------------------------------------

    def dataset(self, name: str) -> dict:
        """``GET /api/datasets/{name}/``: the dataset with its files and their replicas."""
        return self.request("GET", f"/api/datasets/{quote(name, safe='')}/")

    def storage_elements(self) -> list[dict]:
        """``GET /api/storage-elements/``: ``[{"name", "url", ...}]``."""
        body = self.request("GET", "/api/storage-elements/")
        # A paginated list arrives as {"results": [...]}.
        return body["results"] if isinstance(body, dict) and "results" in body else body

    def register(self, dataset: str, storage_element: str, paths: list[str]) -> dict:
        """``POST /api/datasets/register/``: the portal verifies the files and records them."""
        payload = {"dataset": dataset, "storage_element": storage_element, "paths": paths}
        return self.request("POST", "/api/datasets/register/", json=payload)

    # -- plumbing ---------------------------------------------------------------------

    def error_from_response(self, response: requests.Response) -> DSSError:
        """The error an answer of 400 or more describes (the notebook client, ``dss.client``,
        gives richer classes that keep the status and the whole body)."""
        return error_from_response(response)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; return the decoded JSON body, or raise the error it describes."""
        url = self.url + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise PortalError(
                f"cannot reach the DSS portal ({_reason(exc)})", where=self.url, code="unreachable"
            ) from exc
        except requests.Timeout as exc:
            raise PortalError(
                f"the DSS portal did not answer within {self.timeout:g} s", where=self.url
            ) from exc
        except requests.RequestException as exc:
            raise PortalError(f"request failed: {exc}", where=url) from exc
        if response.status_code >= 400:
            raise self.error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise PortalError(
                f"the portal answered {response.status_code} with something that is not JSON "
                "(is the URL that of the DSS portal?)",
                where=url,
            ) from exc


def error_from_response(response: requests.Response) -> DSSError:
    """The DSSError that an error response of the portal describes."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if not isinstance(body, dict):
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return PortalError(
            f"HTTP {status} {response.reason}" + (f": {text}" if text else ""), where=response.url
        )
    code = str(body.get("error") or "")
    detail = body.get("detail")
    if detail is None:
        # A DRF validation error without our handler: {"field": ["problem", ...]}.
        detail = "; ".join(
            f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items()
        )
    where = str(body.get("where") or "")
    if status == 403 and code == "forbidden":
        # the portal's own refusal, naming what: not a problem with the token
        return Forbidden(str(detail), where=where)
    if status in (401, 403):
        return PortalError(
            f"{detail} (check the API token: --token, DSS_TOKEN or {config_path()})",
            where=where or response.url,
            code=code or "not_authorized",
        )
    cls = _ERROR_CLASSES.get(code) or _STATUS_CLASSES.get(status) or PortalError
    if status >= 500 and cls is PortalError:
        detail = f"portal error (HTTP {status}): {detail}"
    if issubclass(cls, StorageError):
        return cls(str(detail), where=where, code=code or None, transient=status in (503, 504))
    return cls(str(detail), where=where, code=code or None)


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route"):
        if marker in text:
            return marker.lower()
    return text[:200]
