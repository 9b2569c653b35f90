"""TAG operations: the TAG DB connection, schemas, building collections, and queries."""

from __future__ import annotations

import os
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from django.conf import settings
from sqlalchemy.pool import NullPool

from dss.errors import DSSError

from .schema import Schema, load_schema
from .selection import Node, check, normalise, parse
from .store import TagStore

if TYPE_CHECKING:
    from .models import TagCollection

# How long a query waits for another process to release an embedded (DuckDB) TAG DB file.
BUSY_TIMEOUT_S = float(os.environ.get("DSS_TAGDB_BUSY_TIMEOUT", "20"))


class TagDBBusy(DSSError):
    """The embedded TAG DB file stayed locked by another process (a build is loading it)."""

    code = "tagdb_busy"
    exit_code = 8


# --------------------------------------------------------------------------- the TAG DB

_stores: dict[str, TagStore] = {}
_stores_lock = threading.Lock()


def _wait_for_duckdb_lock(engine: sa.Engine, url: str) -> None:
    """Retry opening a DuckDB file that another process holds, for BUSY_TIMEOUT_S.

    DuckDB lets one process at a time open a file read-write; the web process and the
    Celery workers take turns, each closing its connection after every operation.
    """
    import duckdb

    @sa.event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.02
        while True:
            try:
                return dialect.connect(*cargs, **dict(cparams))
            except duckdb.Error as exc:
                if "Could not set lock" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise TagDBBusy(
                        f"the TAG DB is busy: another process (a TAG build) has held it for "
                        f"{BUSY_TIMEOUT_S:.0f} s; try again in a moment",
                        where=sa.engine.make_url(url).database or "",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)


def _open_store(url: str) -> TagStore:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "duckdb":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # No pool: a connection that stays open would keep the file locked for this process.
        engine = sa.create_engine(url, poolclass=NullPool)
        _wait_for_duckdb_lock(engine, url)
        return TagStore(engine)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return TagStore(url, pool_pre_ping=True)


def get_store() -> TagStore:
    """The TAG store at ``settings.TAGDB_URL``: one per process (and URL)."""
    url = settings.TAGDB_URL
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = _open_store(url)
        return store


def _forget_pools_after_fork() -> None:
    # A forked Celery child must not share its parent's pooled sockets.
    for store in _stores.values():
        store.engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_after_fork)


# --------------------------------------------------------------------------- selections


@lru_cache(maxsize=64)
def _parsed_schema(definition: str) -> Schema:
    return load_schema(definition)


def collection_schema(collection: TagCollection) -> Schema:
    """The parsed schema of ``collection`` (cached by its definition text)."""
    return _parsed_schema(collection.schema.definition)


def attribute_types(collection: TagCollection) -> dict[str, str]:
    """Every name a selection on ``collection`` may use (run/lumi/event numbers and the
    schema's attributes), with its type. Needs no TAG DB access."""
    return collection_schema(collection).attribute_types()


def check_selection(collection: TagCollection, text: str) -> tuple[Node, str]:
    """Parse ``text`` and type-check it against ``collection``'s attributes.

    Returns the typed tree and the selection's normal form; raises
    :class:`tagdb.selection.SelectionError` naming the column of the bad token.
    """
    tree = check(parse(text), attribute_types(collection))
    return tree, normalise(tree)
