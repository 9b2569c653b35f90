"""Cached answers that cannot go stale: each is kept under the *generation* of the data it
shows.

A generation is a random token in the portal database (``dss.models.Generation``), replaced
once every transaction that changed the data has committed (``bump``). An answer is cached
under the token read *before* the data it was computed from, so an answer computed from
data older than a change is never found under a token made after it. The token lives in the
database, so every process (web workers, Celery workers, the command line) sees the same
one whatever the cache backend. A request whose own transaction changed the data (a change
not yet committed) neither reads nor fills the cache. Cached entries also expire after
``DSS_PAGE_CACHE_SECONDS``, which bounds how long a change can go unseen if a process dies
between its commit and the token's replacement.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Hashable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction

from .models import Generation

log = logging.getLogger(__name__)
# What pages show of their user: name, roles and permissions (users, groups, permissions).
ACCOUNTS = "accounts"
T = TypeVar("T")


class _Replace:
    """The on-commit callback that replaces one generation's token (one per transaction)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> None:
        replace(self.name)


def _pending(name: str) -> bool:
    """Whether this connection's open transaction changed ``name``'s data (its
    replacement waits for the commit)."""
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        return False
    return any(
        isinstance(entry[1], _Replace) and entry[1].name == name for entry in conn.run_on_commit
    )


def _tokens(names: tuple[str, ...]) -> dict[str, str]:
    """The tokens of ``names`` that exist, in one statement. It is asked on every cached
    request, so it is written once and parameterised rather than compiled by the ORM each
    time (which took longer than running it)."""
    connection = transaction.get_connection()
    table = connection.ops.quote_name(Generation._meta.db_table)
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT name, token FROM {table} WHERE name IN ({marks})", list(names))
        return dict(cursor.fetchall())


def replace(name: str) -> str:
    """Give ``name`` a new token now; return it."""
    token = secrets.token_hex(16)
    if not Generation.objects.filter(name=name).update(token=token):
        try:
            with transaction.atomic():
                Generation.objects.create(name=name, token=token)
        except IntegrityError:  # another process made the row first: replace its token
            Generation.objects.filter(name=name).update(token=token)
    return token


def bump(name: str) -> None:
    """``name``'s data changed: replace its token when the current transaction commits (at
    once outside a transaction), once however many rows it changed."""
    if _pending(name):
        return
    transaction.on_commit(_Replace(name), robust=True)


def accounts_changed(sender, instance=None, update_fields=None, **kwargs) -> None:
    """A ``post_save``/``post_delete``/``m2m_changed`` receiver that replaces the
    ``accounts`` generation: what pages show of a user (name, roles, permissions)."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing a page shows
    if kwargs.get("action", "post_").startswith("post_"):
        bump(ACCOUNTS)


def current(name: str) -> str | None:
    """``name``'s token, or None when this connection's open transaction changed its data
    (then nothing may be cached for it)."""
    if _pending(name):
        return None
    return _tokens((name,)).get(name) or replace(name)


class Cached:
    """Answers cached under the generations ``names``: ``Cached(*names)(key, compute)`` is
    ``compute()``, cached under the names' tokens and ``key`` (a tuple of the request's
    normalised parameters). The tokens are read once, in one query, before the first
    answer's data, so one object serves the answers of one request."""

    def __init__(self, *names: str) -> None:
        self.name = "+".join(names)
        self.names = names
        self._token: str | None = None
        self._read = False

    def token(self) -> str | None:
        if not self._read:
            self._read = True
            if settings.DSS_PAGE_CACHE_SECONDS > 0 and not any(map(_pending, self.names)):
                found = _tokens(self.names)
                self._token = "-".join(found.get(n) or replace(n) for n in self.names)
        return self._token

    def __call__(self, key: Hashable, compute: Callable[[], T]) -> T:
        token = self.token()  # read before the data, see the module's docstring
        if token is None:
            return compute()
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        cache_key = f"dss:gen:{self.name}:{token}:{digest}"
        try:
            value = cache.get(cache_key)
        except Exception:  # a cache that does not answer is no reason to fail the page
            log.warning("cache unavailable for %s", self.name, exc_info=True)
            return compute()
        if value is None:
            value = compute()
            try:
                cache.set(cache_key, value, settings.DSS_PAGE_CACHE_SECONDS)
            except Exception:
                log.warning("cache unavailable for %s", self.name, exc_info=True)
        return value
