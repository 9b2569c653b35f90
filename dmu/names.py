"""Validation of the names users give to datasets and storage elements (no Django import)."""

from __future__ import annotations

import re

from dss.errors import InvalidInput

# scope.name: a scope (a user or group name), a dot, then letters, digits, _ - and dots.
DATASET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,29}\.[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
SE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it is a valid ``scope.name``; raise InvalidInput saying why not."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("a dataset name is required, as scope.name", where="dataset name")
    if not DATASET_NAME_RE.match(name) or ".." in name or name.endswith("."):
        raise InvalidInput(
            f"{name!r} is not a dataset name: use scope.name with letters, digits, "
            "'_', '-' and '.', starting with a letter (e.g. user.alice.dimuon_2024)",
            where="dataset name",
        )
    return name


def scope_of(name: str) -> str:
    return name.split(".", 1)[0]


def check_se_name(name: str) -> str:
    if not isinstance(name, str) or not SE_NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a storage element name: letters, digits, '_' and '-', "
            "starting with a letter",
            where="storage element",
        )
    return name
