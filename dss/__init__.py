"""DSS, the Dataset Skimming Service: the portal (a Django project) and its clients.

``import dss`` loads nothing of the portal: ``dss.Portal`` and the other names of the
notebook client (:mod:`dss.client`) are imported on first use, so a laptop with only the
client's dependencies (``pip install dss-portal``) can ``from dss import Portal``.
"""

from __future__ import annotations

from typing import Any

_CLIENT_NAMES = frozenset(
    {
        "Portal",
        "Tags",
        "SkimJob",
        "Dataset",
        "Histogram",
        "TagCount",
        "OutputFile",
        "APIError",
        "BadRequest",
        "BadSelection",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "IdenticalSkim",
        "StaleTags",
        "Unavailable",
        "SkimFailed",
        "NotReady",
        "StillRunning",
        "MissingExtra",
        "DSSWarning",
        "StaleTagsWarning",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from dss import client

        return getattr(client, name)
    raise AttributeError(f"module 'dss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_NAMES)
