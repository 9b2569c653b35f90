"""Fixtures for the TAG database: the demo trees, their schemas and TAGs, and a TAG store
on every backend (DuckDB and SQLite files, Parquet files with a SQLite catalog here; PostgreSQL and MariaDB when reachable)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import uproot

from tagdb.schema import Schema, builtin_schemas, compute_tags, schema_from_dict
from tagdb.selection import Node, Unary, truth
from tagdb.store import TagStore
from tests.services import MARIADB_URL, POSTGRES_URL, require_port

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
HZZ_PATH = DEMO / "uproot-HZZ.root"
ZMUMU_PATH = DEMO / "uproot-Zmumu.root"
BACKENDS = ["duckdb", "sqlite", "parquet", "postgresql", "mariadb"]


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
    if name == "parquet":
        return TagStore(f"parquet:///{folder / 'tags'}")
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


ARRAYS_GUID = "5b0c9d2e-3333-4f6a-8b7c-1d2e3f4a5b6c"


def load_arrays(store: TagStore, arrays: dict, key: str | None = None) -> str:
    """A collection in ``store`` holding ``arrays`` (name -> one value per event; masked
    or NaN entries are missing) as one file whose entries are the array indices, so that
    a selection's rows in SQL can be set beside numpy's. ``run`` is the run number."""
    types = {"b": "bool", "i": "int", "f": "float"}
    schema = schema_from_dict(
        {
            "name": "arrays",
            "version": 1,
            "tree": "t",
            **({"run": "run"} if "run" in arrays else {}),
            "attributes": [
                {"name": name, "type": types[np.asarray(values).dtype.kind], "expression": name}
                for name, values in arrays.items()
                if name != "run"
            ],
        }
    )
    key = key or unique_key("a")
    with store.begin_build(key, schema) as builder:
        builder.load(ARRAYS_GUID, arrays)
        builder.publish()
    return key


def sql_truth(store: TagStore, key: str, tree: Node) -> tuple[list[int], list[int]]:
    """The entries where ``tree`` is true in the TAG DB, and those where it is false
    (where its negation is true); the rest are unknown."""

    def rows(t: Node) -> list[int]:
        return store.entries_by_file(key, t).get(ARRAYS_GUID, np.array([], int)).tolist()

    return rows(tree), rows(Unary("!", tree))


def numpy_truth(tree: Node, arrays: dict) -> tuple[list[int], list[int]]:
    """What :func:`sql_truth` should give, from numpy: true and false entries."""
    result = truth(tree, arrays)
    known = ~np.ma.getmaskarray(result)
    values = np.ma.getdata(result)
    return np.flatnonzero(known & values).tolist(), np.flatnonzero(known & ~values).tolist()
