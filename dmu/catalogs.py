"""Where datasets are catalogued: the portal's own tables, and the experiment's Rucio.

``get_catalog()`` answers with the Rucio catalog when ``DSS_RUCIO_URL`` is set, else with the
portal's. Both answer the same three questions (find datasets by scope and name pattern, list
a dataset's files and replicas, register a dataset of the portal), so a page can show either.
Rucio is reached through ``rucio.client.Client``; every error it raises becomes a DSSError
that says what went wrong and where (the scope, the DID, the server).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dss.errors import ChecksumMismatch, DSSError, InvalidInput, NotFound, StorageError

from .models import (
    Dataset,
    File,
    Replica,
    ReplicaState,
    RucioRegistration,
    RucioState,
    StorageElement,
)
from .names import DATASET_NAME_RE, check_dataset_name, scope_of

log = logging.getLogger(__name__)

SCOPE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,25}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9_.*-]{1,250}$")


class RucioError(DSSError):
    """Rucio refused or failed a request (bad credentials, a refused name, a server error)."""

    code = "rucio_error"
    exit_code = 8


class RucioUnavailable(RucioError, StorageError):
    """Rucio did not answer (down, unreachable, too slow): worth trying again later."""

    code = "rucio_unavailable"

    def __init__(self, message: str, *, where: str = ""):
        super().__init__(message, where=where, transient=True)


@dataclass
class CatalogDataset:
    scope: str
    name: str
    bytes: int | None = None
    length: int | None = None
    in_portal: bool = False

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"


@dataclass
class CatalogFile:
    scope: str
    name: str
    bytes: int
    adler32: str
    guid: str = ""
    replicas: dict[str, list[str]] = field(default_factory=dict)  # RSE or SE -> URLs


# --------------------------------------------------------------------------- the portal's own


class PortalCatalog:
    """The portal's tables as a catalog: scope is a dataset name's first part."""

    label = "portal"

    def search(self, scope: str, pattern: str = "*") -> list[CatalogDataset]:
        """Datasets of ``scope`` whose name matches ``pattern`` (``*`` is any text)."""
        scope, pattern = check_search(scope, pattern)
        regex = "^" + re.escape(pattern).replace(r"\*", ".*") + "$"
        qs = Dataset.objects.filter(name__startswith=scope + ".", name__regex=regex)
        return [CatalogDataset(scope, d.name, in_portal=True) for d in qs.order_by("name")]

    def files(self, scope: str, name: str) -> list[CatalogFile]:
        """A dataset's files with the URLs of their replicas, by storage element."""
        dataset = Dataset.objects.filter(name=name).first()
        if dataset is None or dataset.scope != scope:
            raise NotFound(f"no dataset {scope}:{name} in the portal", where=f"{scope}:{name}")
        out = []
        for f in dataset.files.prefetch_related("replicas__storage_element"):
            reps: dict[str, list[str]] = {}
            for r in f.replicas.all():
                reps.setdefault(r.storage_element.name, []).append(r.url)
            out.append(CatalogFile(scope, f.lfn, f.bytes, f.adler32, str(f.guid), reps))
        return out

    def register(self, dataset: Dataset) -> int:
        """The portal's tables already hold every dataset the portal knows: nothing to add."""
        return 0


# --------------------------------------------------------------------------- Rucio


def rucio_configured() -> bool:
    return bool(settings.DSS_RUCIO_URL)


def _client_config() -> None:
    """The rucio client insists on a config file; give it one of the portal's own, so that a
    user's ~/.rucio or /opt/rucio/etc never changes what the portal does."""
    import os

    from rucio.common import config as rucio_config

    path = Path(settings.VAR_DIR) / "rucio" / "rucio.cfg"
    if os.environ.get("RUCIO_CONFIG") != str(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[common]\nloglevel = WARNING\n\n[client]\nrequest_retries = 1\n")
        os.environ["RUCIO_CONFIG"] = str(path)
        rucio_config.clean_cached_config()


def rucio_client(
    *,
    url: str | None = None,
    account: str | None = None,
    username: str | None = None,
    password: str | None = None,
):
    """A logged-in ``rucio.client.Client`` for the settings' server and account (or those
    given). Each set of credentials keeps its own token file, so a wrong password is never
    covered by a token that a right one obtained."""
    from rucio.client import Client
    from rucio.common import config as rucio_config

    url = url or settings.DSS_RUCIO_URL
    account = account or settings.DSS_RUCIO_ACCOUNT
    username = settings.DSS_RUCIO_USERNAME if username is None else username
    password = settings.DSS_RUCIO_PASSWORD if password is None else password
    if not url:
        raise RucioError("no Rucio server is configured (DSS_RUCIO_URL)", where="settings")
    _client_config()
    key = hashlib.sha256(f"{url}\0{account}\0{username}\0{password}".encode()).hexdigest()[:16]
    token = Path(settings.VAR_DIR) / "rucio" / "tokens" / key / f"auth_token_for_account_{account}"
    rucio_config.config_set("client", "auth_token_file_path", str(token))
    with rucio_errors(where=url):
        return Client(
            rucio_host=url,
            auth_host=settings.DSS_RUCIO_AUTH_URL or url,
            account=account,
            auth_type=settings.DSS_RUCIO_AUTH_TYPE,
            creds={"username": username, "password": password},
            timeout=settings.DSS_RUCIO_TIMEOUT,
        )


@contextmanager
def rucio_errors(where: str) -> Iterator[None]:
    """Turn what the rucio client raises into DSSErrors that name ``where``."""
    import requests
    from rucio.common import exception as rx

    try:
        yield
    except DSSError:
        raise
    except (rx.CannotAuthenticate, rx.NoAuthInformation) as e:
        raise RucioError(
            f"Rucio refused the credentials of account {settings.DSS_RUCIO_ACCOUNT!r}: "
            f"{_first_line(e)}",
            where=where,
            code="rucio_auth",
        ) from None
    except rx.AccessDenied as e:
        raise RucioError(
            f"Rucio denied this: {_first_line(e)}", where=where, code="rucio_denied"
        ) from None
    except rx.ScopeNotFound:
        raise NotFound(f"Rucio has no scope {where.split(':')[0]!r}", where=where) from None
    except rx.DataIdentifierNotFound:
        raise NotFound(f"Rucio has no data identifier {where}", where=where) from None
    except rx.RSENotFound:
        raise NotFound(f"Rucio has no RSE {where!r}", where=where) from None
    except (rx.InvalidObject, rx.InvalidType, rx.InvalidValueForKey) as e:
        raise InvalidInput(f"Rucio rejected the name: {_first_line(e)}", where=where) from None
    except (
        rx.ServerConnectionException,
        rx.RucioException,
        requests.exceptions.RequestException,
        ConnectionError,
        TimeoutError,
    ) as e:
        text = _first_line(e)
        if isinstance(e, rx.RucioException) and not _unreachable(text):
            raise RucioError(f"Rucio failed: {text}", where=where) from None
        raise RucioUnavailable(
            f"Rucio does not answer at {settings.DSS_RUCIO_URL or where}: {text}", where=where
        ) from None


def _unreachable(text: str) -> bool:
    text = text.lower()
    return any(
        s in text
        for s in ("connect", "timed out", "timeout", "refused", "unreachable", "max retries")
    )


def _first_line(e: Exception) -> str:
    """Rucio's message and its "Details:" line, without the schema dump that may follow."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2])[:400] or type(e).__name__


def check_search(scope: str, pattern: str) -> tuple[str, str]:
    scope, pattern = (scope or "").strip(), (pattern or "*").strip() or "*"
    if not SCOPE_RE.match(scope):
        raise InvalidInput(
            f"{scope!r} is not a scope: 1 to 25 letters, digits, '_', '-' or '.'", where="scope"
        )
    if not PATTERN_RE.match(pattern):
        raise InvalidInput(
            f"{pattern!r} is not a name pattern: letters, digits, '_', '-', '.' and '*'",
            where="name",
        )
    return scope, pattern


def rse_for(se: StorageElement) -> str:
    """The Rucio RSE that a storage element is, by the DSS_RUCIO_RSES mapping or its name."""
    return settings.DSS_RUCIO_RSES.get(se.name, se.name.upper())


def storage_elements_by_rse() -> dict[str, StorageElement]:
    return {rse_for(se): se for se in StorageElement.objects.all()}


class RucioCatalog:
    """The experiment's Rucio server, through ``rucio.client.Client``."""

    label = "Rucio"

    def __init__(self, client=None):
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = rucio_client()
        return self._client

    def check_scope(self, scope: str) -> None:
        """Rucio answers an unknown scope with nothing found; say that it does not exist."""
        if scope not in self.client.list_scopes():
            raise NotFound(f"Rucio has no scope {scope!r}", where="scope")

    def search(self, scope: str, pattern: str = "*") -> list[CatalogDataset]:
        """Datasets of ``scope`` whose name matches ``pattern`` (``*`` is any text)."""
        scope, pattern = check_search(scope, pattern)
        with rucio_errors(where=f"{scope}:{pattern}"):
            self.check_scope(scope)
            found = list(
                self.client.list_dids(
                    scope, filters={"name": pattern}, did_type="dataset", long=True
                )
            )
        names = {d["name"] for d in found}
        portal = set(Dataset.objects.filter(name__in=names).values_list("name", flat=True))
        out = [
            CatalogDataset(scope, d["name"], d.get("bytes"), d.get("length"), d["name"] in portal)
            for d in found
        ]
        return sorted(out, key=lambda d: d.name)

    def files(self, scope: str, name: str) -> list[CatalogFile]:
        """A dataset's files with their replicas' URLs by RSE."""
        check_search(scope, name)
        where = f"{scope}:{name}"
        with rucio_errors(where=where):
            self.check_scope(scope)
            files = {
                f["name"]: CatalogFile(
                    f["scope"], f["name"], f["bytes"], f["adler32"] or "", f.get("guid") or ""
                )
                for f in self.client.list_files(scope, name)
            }
            for r in self.client.list_replicas([{"scope": scope, "name": name}]):
                if r["name"] in files:
                    files[r["name"]].replicas = {
                        rse: sorted(pfns) for rse, pfns in (r.get("rses") or {}).items()
                    }
        return sorted(files.values(), key=lambda f: f.name)

    def register(self, dataset: Dataset) -> int:
        """Register ``dataset`` in Rucio: its file DIDs (GUID, bytes, adler32), the dataset
        DID, the files attached to it, and a replica at the RSE of every storage element that
        holds one. Safe to repeat: what Rucio already has is left alone. Returns the number of
        files attached now."""
        from rucio.common import exception as rx

        scope = scope_of(dataset.name)
        did = f"{scope}:{dataset.name}"
        replicas = list(
            Replica.objects.filter(file__dataset=dataset, state=ReplicaState.AVAILABLE)
            .select_related("file", "storage_element")
            .order_by("file__lfn")
        )
        c = self.client
        with rucio_errors(where=did):
            try:
                c.add_dataset(scope=scope, name=dataset.name)
            except rx.DataIdentifierAlreadyExists:
                pass
            attached = {f["name"] for f in c.list_files(scope, dataset.name)}
            by_rse: dict[str, list[Replica]] = {}
            for r in replicas:
                by_rse.setdefault(rse_for(r.storage_element), []).append(r)
            for rse, reps in by_rse.items():
                dids = [{"scope": scope, "name": r.file.lfn} for r in reps]
                there = {
                    x["name"]
                    for x in c.list_replicas(dids, rse_expression=rse, all_states=True)
                    if x.get("rses")
                }
                new = [
                    {
                        "scope": scope,
                        "name": r.file.lfn,
                        "bytes": r.file.bytes,
                        "adler32": r.file.adler32,
                        "pfn": r.url,
                        "meta": {"guid": str(r.file.guid), "events": r.file.events},
                    }
                    for r in reps
                    if r.file.lfn not in there
                ]
                if new:
                    with rucio_errors(where=rse):
                        c.add_replicas(rse=rse, files=new)
            todo = sorted({r.file.lfn for r in replicas} - attached)
            if todo:
                c.attach_dids(
                    scope=scope, name=dataset.name, dids=[{"scope": scope, "name": n} for n in todo]
                )
        return len(todo)


def get_catalog() -> PortalCatalog | RucioCatalog:
    """Rucio when it is configured, else the portal's own tables."""
    return RucioCatalog() if rucio_configured() else PortalCatalog()


# --------------------------------------------------------------------------- import


def portal_name_for(scope: str, name: str) -> str:
    """The portal's dataset name for a Rucio DID: its name when that is already a valid
    ``scope.name``, else ``scope.name`` glued together."""
    if DATASET_NAME_RE.match(name) and ".." not in name and not name.endswith("."):
        return name
    return check_dataset_name(f"{scope}.{name}")


def _tidy_pfn(se: StorageElement, pfn: str) -> str:
    """A PFN inside ``se`` as a path relative to it: Rucio may join its protocol prefix and
    the path with a doubled slash."""
    base = se.url.rstrip("/")
    if pfn.startswith(base + "/"):
        return re.sub("/+", "/", pfn[len(base) :]).lstrip("/")
    return pfn


def portal_name_for_or_none(scope: str, name: str) -> str | None:
    try:
        return portal_name_for(scope, name)
    except InvalidInput:
        return None


def check_import_from_rucio(
    scope: str, name: str, *, user=None, catalog: RucioCatalog | None = None
) -> tuple[Dataset, int]:
    """Import a Rucio dataset into the portal's catalog: every replica on an RSE that maps to
    one of the portal's storage elements is read and checksummed as ``check_register_dataset``
    does, and must agree with Rucio's size and adler32. Nothing is recorded unless all agree.
    Returns the dataset and the number of files newly recorded."""
    from .actions import check_register_dataset, relative_path

    catalog = catalog or RucioCatalog()
    files = catalog.files(scope, name)
    where = f"{scope}:{name}"
    if not files:
        raise InvalidInput("this Rucio dataset has no files", where=where)
    ses = storage_elements_by_rse()
    paths: dict[StorageElement, list[str]] = {}
    missing = []
    for f in files:
        hits = [(ses[rse], pfns) for rse, pfns in f.replicas.items() if rse in ses and pfns]
        if not hits:
            missing.append(f.name)
            continue
        for se, pfns in hits:
            paths.setdefault(se, []).append(relative_path(se, _tidy_pfn(se, pfns[0])))
    if missing:
        known = ", ".join(sorted(ses)) or "none"
        raise NotFound(
            f"{len(missing)} file(s) have no replica on an RSE of the portal's storage elements "
            f"({known}): {', '.join(missing[:5])}",
            where=where,
        )
    portal_name = portal_name_for(scope, name)
    expected = {f.name: f for f in files}
    added = 0
    with transaction.atomic():
        for se, rels in paths.items():
            dataset, n = check_register_dataset(
                portal_name, se, rels, user=user, description=f"Imported from Rucio {where}"
            )
            added += n
        for f in File.objects.filter(dataset=dataset):
            want = expected.get(f.lfn)
            if want and (want.bytes, want.adler32.lower()) != (f.bytes, f.adler32.lower()):
                raise ChecksumMismatch(
                    f"{f.lfn}: Rucio says {want.bytes} bytes, adler32 {want.adler32}; the "
                    f"replica has {f.bytes} bytes, adler32 {f.adler32}",
                    where=where,
                )
        RucioRegistration.objects.update_or_create(
            dataset=dataset,
            defaults={
                "state": RucioState.REGISTERED,
                "scope": scope,
                "files_registered": len(files),
                "last_error": "",
                "registered_at": timezone.now(),
                "updated_at": timezone.now(),
            },
        )
    return dataset, added


# --------------------------------------------------------------------------- registration


def queue_rucio_registration(dataset: Dataset) -> RucioRegistration | None:
    """Queue ``dataset`` for registration in Rucio after the commit; nothing when Rucio is not
    configured. A dataset registered before is queued again (it may have new files)."""
    if not rucio_configured():
        return None
    from .tasks import register_in_rucio

    now = timezone.now()
    reg, _ = RucioRegistration.objects.update_or_create(
        dataset=dataset,
        defaults={
            "state": RucioState.PENDING,
            "attempts": 0,
            "last_error": "",
            "next_attempt_at": now,
            "updated_at": now,
        },
    )
    transaction.on_commit(lambda: register_in_rucio.delay(dataset.pk))
    return reg


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, at most 1 h."""
    return min(3600, settings.DSS_RUCIO_RETRY_SECONDS * 2 ** max(0, attempts - 1))


def do_register_in_rucio(dataset_id: int, catalog: RucioCatalog | None = None) -> int | None:
    """One attempt to register a dataset in Rucio, recorded on its RucioRegistration.

    Returns the seconds to wait before trying again when Rucio could not be reached and the
    attempts are not used up; None when the attempt ended it (registered, or failed for good).
    A refused name, a missing scope or bad credentials fail at once: retrying cannot help.
    """
    with transaction.atomic():
        reg = (
            RucioRegistration.objects.select_for_update()
            .select_related("dataset")
            .filter(dataset_id=dataset_id, state=RucioState.PENDING)
            .first()
        )
        if reg is None:
            return None
        reg.attempts += 1
        reg.updated_at = timezone.now()
        reg.save(update_fields=["attempts", "updated_at"])
    dataset = reg.dataset
    fields = ["state", "last_error", "next_attempt_at", "updated_at", "scope", "rse"]
    reg.scope = scope_of(dataset.name)
    reg.rse = ", ".join(
        sorted(
            {
                rse_for(se)
                for se in StorageElement.objects.filter(replicas__file__dataset=dataset).distinct()
            }
        )
    )[:255]
    reg.updated_at = timezone.now()
    try:
        n = (catalog or RucioCatalog()).register(dataset)
    except RucioUnavailable as e:
        reg.last_error = str(e)
        if reg.attempts < settings.DSS_RUCIO_RETRIES:
            delay = retry_delay(reg.attempts)
            reg.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            reg.save(update_fields=fields)
            return delay
        reg.state = RucioState.FAILED
        reg.last_error = f"gave up after {reg.attempts} attempt(s): {e}"
        reg.next_attempt_at = None
        reg.save(update_fields=fields)
        return None
    except DSSError as e:
        reg.state, reg.last_error, reg.next_attempt_at = RucioState.FAILED, str(e), None
        reg.save(update_fields=fields)
        return None
    reg.state, reg.last_error, reg.next_attempt_at = RucioState.REGISTERED, "", None
    reg.files_registered = dataset.files.count()
    reg.registered_at = timezone.now()
    reg.save(update_fields=[*fields, "files_registered", "registered_at"])
    log.info("%s registered in Rucio (%d file(s) attached now)", dataset.name, n)
    return None


def get_rucio_registration(dataset: Dataset) -> RucioRegistration | None:
    return RucioRegistration.objects.filter(dataset=dataset).first()
