"""API tokens: several per user, each named, expiring, revocable and rotatable.

The ``dss`` and ``dmu`` command lines send ``Authorization: Token <key>``. A key is 43
random URL-safe characters after ``dss_``; the portal keeps only its SHA-256, so a copy of
the database holds no usable key. Looking a key up by its hash needs no salt: the key
itself is random and long. Expired and revoked tokens answer 401 saying which.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from .errors import InvalidInput, NotFound
from .models import ApiToken

KEY_PREFIX = "dss_"
SHOWN_CHARACTERS = 8
# How often the last use of a token is written (every request would be a write each).
LAST_USED_PRECISION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A token just made, with its key: the only moment the key is known."""

    token: ApiToken
    key: str


def _lifetime(days) -> timedelta:
    limit = settings.DSS_TOKEN_MAX_DAYS
    if days is None:
        days = settings.DSS_TOKEN_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= limit:
        raise InvalidInput(f"a token lasts from 1 to {limit} days", where="days")
    return timedelta(days=days)


def do_issue_token(user, name: str, days: int | None = None) -> IssuedToken:
    """Make a new token for ``user`` named ``name`` that expires after ``days`` (the
    setting DSS_TOKEN_DAYS when None); its key is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("give the token a name of 1 to 100 characters", where="name")
    lifetime = _lifetime(days)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=key[: len(KEY_PREFIX) + SHOWN_CHARACTERS],
        key_hash=hash_key(key),
        created_at=now,
        expires_at=now + lifetime,
    )
    return IssuedToken(token, key)


def get_token_for_user(user, pk) -> ApiToken:
    """One of ``user``'s own tokens; another user's is NotFound, as one that never was."""
    try:
        return ApiToken.objects.get(pk=int(pk), user=user)
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"you have no token #{pk}", where="token") from None


def do_revoke_token(token: ApiToken, reason: str = "revoked by its owner") -> bool:
    """Stop ``token`` at once; False when it was already revoked."""
    now = timezone.now()
    won = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(
        revoked_at=now, revoked_reason=reason[:200]
    )
    if won:
        token.revoked_at, token.revoked_reason = now, reason[:200]
    return bool(won)


def do_rotate_token(token: ApiToken, days: int | None = None) -> IssuedToken:
    """A new token with the same name in place of ``token``, which stops at once. A token
    already revoked cannot be rotated (its replacement would revive it)."""
    with transaction.atomic():
        old = ApiToken.objects.select_for_update().get(pk=token.pk)
        if old.revoked_at is not None:
            raise InvalidInput(
                f"token {old.name!r} was revoked ({old.revoked_reason}); make a new one",
                where="token",
            )
        issued = do_issue_token(old.user, old.name, days)
        do_revoke_token(old, f"rotated: replaced by {issued.token.prefix}…")
        ApiToken.objects.filter(pk=old.pk).update(replaced_by=issued.token)
    token.refresh_from_db()
    return issued


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>`` against the hashed keys; an expired or revoked token
    answers 401 saying so, and when."""

    model = ApiToken

    def authenticate_credentials(self, key: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("invalid token")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"this token ({token.name}) was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC "
                f"({token.revoked_reason}); make a new one on /account/"
            )
        if token.is_expired:
            raise exceptions.AuthenticationFailed(
                f"this token ({token.name}) expired on {token.expires_at:%Y-%m-%d %H:%M} UTC; "
                "make a new one on /account/ or rotate it before it expires"
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("this token's user is inactive")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token


class BasicTokenAuthentication(authentication.BasicAuthentication):
    """HTTP Basic with a user name and one of that user's API tokens as the password, for
    clients that can only put credentials in their URL (the conditions database's C++
    client, through libcurl). A password is never accepted here: only a token."""

    def authenticate_credentials(self, userid, password, request=None):
        user, token = TokenAuthentication().authenticate_credentials(password)
        if user.get_username() != userid:
            raise exceptions.AuthenticationFailed("this token is not that user's")
        return user, token
