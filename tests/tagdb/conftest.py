"""Fixtures for the TAG database: the demo trees, their schemas and TAGs, and a TAG store
on every backend (DuckDB and SQLite files here; PostgreSQL and MariaDB when reachable)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import uproot

from tagdb.schema import Schema, builtin_schemas, compute_tags
from tagdb.store import TagStore
from tests.services import MARIADB_URL, POSTGRES_URL, require_port

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
HZZ_PATH = DEMO / "uproot-HZZ.root"
ZMUMU_PATH = DEMO / "uproot-Zmumu.root"
BACKENDS = ["duckdb", "sqlite", "postgresql", "mariadb"]


@pytest.fixture(scope="session")
def hzz_tree():
    with uproot.open(HZZ_PATH) as f:
        yield f["events"]


@pytest.fixture(scope="session")
def zmumu_tree():
    with uproot.open(ZMUMU_PATH) as f:
        yield f["events"]


@pytest.fixture(scope="session")
def hzz_schema() -> Schema:
    return builtin_schemas()["hzz"]


@pytest.fixture(scope="session")
def zmumu_schema() -> Schema:
    return builtin_schemas()["zmumu"]


@pytest.fixture(scope="session")
def hzz_tags(hzz_schema, hzz_tree):
    return compute_tags(hzz_schema, hzz_tree)


@pytest.fixture(scope="session")
def zmumu_tags(zmumu_schema, zmumu_tree):
    return compute_tags(zmumu_schema, zmumu_tree)


def _server(url: str, what: str) -> None:
    parsed = urlparse(url)
    require_port(parsed.hostname or "127.0.0.1", parsed.port or 0, what)


def open_backend(name: str, folder: Path) -> TagStore:
    """A TagStore on backend ``name``; skips (or fails under CI) when its server is absent."""
    if name == "duckdb":
        return TagStore(f"duckdb:///{folder / 'tags.duckdb'}")
    if name == "sqlite":
        return TagStore(f"sqlite:///{folder / 'tags.sqlite'}")
    if name == "postgresql":
        _server(POSTGRES_URL, "PostgreSQL")
        return TagStore(POSTGRES_URL)
    _server(MARIADB_URL, "MariaDB")
    return TagStore(MARIADB_URL)


def unique_key(prefix: str = "t") -> str:
    """A collection key no concurrent test run will also use on a shared server."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory) -> Iterator[TagStore]:
    tag_store = open_backend(request.param, tmp_path_factory.mktemp(request.param))
    yield tag_store
    tag_store.dispose()


@pytest.fixture
def new_key(store) -> Iterator[str]:
    """A fresh key, dropped (with its table) after the test."""
    key = unique_key()
    yield key
    store.drop(key)
