"""Storage elements by URL: local disk, XRootD and HTTPS, one interface over fsspec.

A storage element (SE) is a root URL:

* ``file:///abs/root`` (or a plain absolute path) for a local or mounted directory;
* ``root://host:port//abs/root`` for an XRootD server (fsspec-xrootd, plus the XRootD client
  for checksums, free space and pipelined bulk reads and writes);
* ``https://host/base`` (or ``http://``), read-only.

Every file on an SE is named by a path relative to that root, and every such path goes
through ``safe_relpath`` first, so that nothing a user or a catalog row supplies can reach
outside the root. Failures come out as ``dss.errors`` exceptions: ``StorageError`` with
``transient=True`` for what a retry may cure (refused connection, timeout, server gone),
``transient=False`` for what it will not (permission denied, no space, read-only), and
``NotFound`` for a missing file, so that command lines exit with the "not found" code.

Plain Python, no Django: the ``dmu`` command line runs this on worker nodes.
"""

from __future__ import annotations

import abc
import errno
import hashlib
import ipaddress
import os
import posixpath
import re
import shutil
import socket
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from stat import S_ISREG
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import fsspec

from dmu.checksum import normalise_adler32
from dss.errors import Conflict, DSSError, InvalidInput, NotFound, StorageError

# Large chunks with a few requests in flight: on loopback XRootD this reaches and passes
# xrdcp's throughput (bench/dmu.py); smaller chunks cost per-request overhead.
CHUNK = 16 * 1024 * 1024
IN_FLIGHT = 4
TEMP_MARK = ".dmu-part-"

_READ_ONLY_SCHEMES = ("https", "http")
_SCHEMES = ("file", "root", "xroot", *_READ_ONLY_SCHEMES)


def safe_relpath(rel: str) -> str:
    """Return ``rel`` if it is a safe path relative to a storage root, else raise InvalidInput.

    The one path-safety check of DSS. Refused: empty paths, absolute paths, ``.`` and ``..``
    components, empty components (``a//b``), backslashes, NUL and other control characters,
    and ``?``/``#`` (XRootD and HTTP would read them as the start of a query or fragment).
    """
    if not isinstance(rel, str):
        raise InvalidInput(f"path must be text, not {type(rel).__name__}", where=repr(rel))
    reason = None
    if not rel:
        reason = "empty path"
    elif rel.startswith("/"):
        reason = "absolute path; give a path relative to the storage element"
    elif "\\" in rel:
        reason = "backslash in path"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        reason = "control character (NUL, newline, ...) in path"
    elif "?" in rel or "#" in rel:
        reason = "'?' or '#' in path"
    else:
        for part in rel.split("/"):
            if part in ("", ".", ".."):
                reason = f"path component {part!r} is not allowed"
                break
    if reason:
        raise InvalidInput(f"unsafe path: {reason}", where=rel)
    return rel


def temp_name(rel: str, tag: str) -> str:
    """The temporary that a write of ``rel`` tagged ``tag`` uses: ``<dir>/.<name>.dmu-part-<tag>``."""
    safe_relpath(rel)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tag):
        raise InvalidInput(f"invalid temporary tag {tag!r}", where=rel)
    head, name = posixpath.split(rel)
    return posixpath.join(head, f".{name}{TEMP_MARK}{tag}")


@dataclass(frozen=True)
class UrlPolicy:
    """Which storage URLs a server may reach: its answer to "fetch this URL for me".

    * ``file://`` only under one of ``file_roots`` (symbolic links resolved);
    * ``root://`` and ``https://`` only to ``hosts``; ``http://`` likewise, and only with
      ``allow_http``;
    * ``hosts`` holds names (``xrootd.example.org``), suffixes (``*.example.org``),
      addresses and networks (``10.1.2.3``, ``10.0.0.0/8``), and ``*`` for any host whose
      addresses are all public. A loopback, private, link-local or reserved address is
      reached only when an entry other than ``*`` names it.

    The portal checks a storage element's URL when it is added and again before each use
    (the names may resolve elsewhere by then); the ``dmu`` command line, run by a user on
    their own machine, applies none.
    """

    file_roots: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ("*",)
    allow_http: bool = False

    def check(self, url: str, *, resolve: bool = True) -> None:
        """Raise InvalidInput (``where`` = the URL) unless ``url`` may be reached."""
        parts = urlsplit(url if "://" in url else "file://" + url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            self._check_file(parts.path, url)
        elif scheme in ("root", "xroot", "https") or (scheme == "http" and self.allow_http):
            self._check_host(parts.hostname or "", url, resolve=resolve)
        elif scheme == "http":
            raise InvalidInput(
                "http:// storage is not allowed here (use https://, or allow plain HTTP with "
                "DSS_STORAGE_ALLOW_HTTP=1)",
                where=url,
            )
        else:
            raise InvalidInput(
                f"unsupported storage URL scheme {scheme!r} (use file://, root:// or https://)",
                where=url,
            )

    def _check_file(self, path: str, url: str) -> None:
        real = os.path.realpath(path or "/")
        for root in self.file_roots:
            top = os.path.realpath(root).rstrip("/") + "/"
            if real + "/" == top or real.startswith(top):
                return
        roots = ", ".join(self.file_roots) or "none"
        raise InvalidInput(
            f"a local storage element must lie under an allowed root ({roots}; more with "
            "DSS_STORAGE_ROOTS)",
            where=url,
        )

    def _entry_names(self, host: str, addresses: list[Any]) -> bool:
        """Whether an entry other than ``*`` names ``host`` or one of ``addresses``."""
        for entry in self.hosts:
            entry = entry.strip().lower()
            if not entry or entry == "*":
                continue
            if entry.startswith("*."):
                if host.endswith(entry[1:]):
                    return True
                continue
            try:
                network = ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                if host == entry:
                    return True
                continue
            if addresses and all(a in network for a in addresses):
                return True
        return False

    def _check_host(self, host: str, url: str, *, resolve: bool) -> None:
        host = host.lower().rstrip(".")
        if not host:
            raise InvalidInput("the storage URL names no host", where=url)
        try:
            literal = [ipaddress.ip_address(host)]
        except ValueError:
            literal = []
        if self._entry_names(host, literal):
            return
        if "*" not in self.hosts:
            raise InvalidInput(
                f"host {host} is not among the allowed storage hosts (DSS_STORAGE_HOSTS)",
                where=url,
            )
        addresses = literal or (_resolve(host) if resolve else [])
        inner = [a for a in addresses if not a.is_global]
        if inner:
            if self._entry_names(host, addresses):
                return
            raise InvalidInput(
                f"host {host} is a loopback or private address ({inner[0]}); list it in "
                "DSS_STORAGE_HOSTS to allow it",
                where=url,
            )


def _resolve(host: str) -> list[Any]:
    """Every address ``host`` resolves to now; none when it does not resolve (the connection
    will fail by itself then)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def deterministic_path(scope: str, name: str) -> str:
    """``scope/xx/yy/name`` with xx, yy the first two byte pairs of md5("scope:name").

    The layout Rucio uses for deterministic storage elements, so that a file's place on an
    SE follows from its logical name alone.
    """
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return safe_relpath(f"{scope}/{digest[0:2]}/{digest[2:4]}/{name}")


@dataclass(frozen=True)
class Entry:
    """One item of a directory listing on a storage element."""

    name: str
    size: int
    is_dir: bool


def _xrootd_code(message: str) -> int | None:
    m = re.search(r"\[(3\d\d\d)\]", message)
    return int(m.group(1)) if m else None


# kXR error codes (XProtocol.hh) that a retry can cure: IO error, server error, overloaded,
# request timed out, timer expired, no server available.
_XRD_TRANSIENT = {3007, 3012, 3014, 3024, 3034, 3035}
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
    errno.EAGAIN,
}
_TRANSIENT_WORDS = (
    "connection error",
    "connection refused",
    "connection reset",
    "operation expired",
    "socket error",
    "socket timeout",
    "stream",
    "timed out",
    "timeout",
    "server disconnected",
    "cannot connect",
    "broken pipe",
)


@dataclass(frozen=True)
class FileStat:
    """What a storage element says about one file: its size, and when its content last
    changed (nanoseconds since the epoch; None where the storage does not say, as on
    XRootD and HTTPS here)."""

    size: int
    mtime_ns: int | None


def storage_error(exc: BaseException, where: str, action: str) -> DSSError:
    """Turn an exception from fsspec, the OS or XRootD into the DSS error a user should see.

    ``action`` says what was being done (``open``, ``write``, ``list``); ``where`` is the URL.
    The one place that decides which storage failures are worth a retry.
    """
    if isinstance(exc, DSSError):
        return exc
    # fsspec-xrootd prefixes the server's words with the repr of a bound method: drop it.
    message = re.sub(r"Failed to submit <.*?> request: ", "", str(exc)).strip()
    message = message or type(exc).__name__
    lower = message.lower()
    code = getattr(exc, "errno", None)
    xrd = _xrootd_code(message)

    def fail(what: str, *, transient: bool, kind: str) -> StorageError:
        return StorageError(
            f"{action} failed: {what} ({message})", where=where, code=kind, transient=transient
        )

    if isinstance(exc, FileNotFoundError) or code == errno.ENOENT or xrd == 3011:
        return NotFound(f"{action} failed: no such file or directory", where=where)
    if isinstance(exc, FileExistsError) or code == errno.EEXIST or xrd == 3018:
        return Conflict(f"{action} failed: a file of that name already exists", where=where)
    if code in (errno.ENOSPC, errno.EDQUOT) or xrd in (3009, 3021) or "no space" in lower:
        return fail("no space left on the storage element", transient=False, kind="no_space")
    if code == errno.EROFS or xrd == 3025 or "read/only" in lower or "read-only" in lower:
        return fail("the storage element is read-only", transient=False, kind="read_only")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM) or xrd == 3010:
        return fail("permission denied", transient=False, kind="permission_denied")
    if (
        isinstance(exc, ConnectionError | TimeoutError)
        or code in _TRANSIENT_ERRNOS
        or xrd in _XRD_TRANSIENT
        or "[fatal]" in lower
        or any(word in lower for word in _TRANSIENT_WORDS)
    ):
        return fail(
            "storage element unreachable or not answering",
            transient=True,
            kind="storage_unreachable",
        )
    if exc.__class__.__module__.startswith("aiohttp"):
        # aiohttp's connection errors subclass OSError; its HTTP status errors do not, and
        # only a server-side (5xx) status may go away on a retry.
        status = getattr(exc, "status", None)
        transient = isinstance(exc, OSError) or (isinstance(status, int) and status >= 500)
        return fail("HTTP request failed", transient=transient, kind="storage_error")
    return fail("storage error", transient=False, kind="storage_error")


class _XRootDStatusError(OSError):
    """An XRootD client status that is not ok, carried as an exception to ``storage_error``."""

    def __init__(self, status: Any):
        # Client-side codes (connection, expiry) have no server errno; the message says which.
        super().__init__(status.errno or None, status.message.strip())
        self.status = status

    def __str__(self) -> str:
        return self.strerror or "XRootD error"


def _lost(where: str) -> StorageError:
    # The XRootD client closes a file whose server went away and then refuses further
    # requests on it with ValueError("I/O operation on closed file").
    return StorageError(
        "connection to the XRootD server lost (the client closed the file)",
        where=where,
        code="storage_unreachable",
        transient=True,
    )


_xrootd_ready = threading.Lock()
_xrootd_configured = False


def _xrootd_client() -> Any:
    """Import the XRootD client once, with timeouts suited to a transfer tool with retries.

    The client's defaults (5 connection attempts over 2-minute windows, 30-minute request
    timeout) would make a refused connection take minutes; ``dmu`` retries by itself.
    Values from ``XRD_*`` environment variables win.
    """
    global _xrootd_configured
    try:
        from XRootD import client
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StorageError(
            "root:// needs the XRootD client: pip install xrootd fsspec-xrootd",
            code="unsupported",
        ) from exc
    with _xrootd_ready:
        if not _xrootd_configured:
            for key, value in (
                ("ConnectionRetry", 1),
                ("ConnectionWindow", 10),
                ("RequestTimeout", 300),
                ("StreamTimeout", 60),
            ):
                if f"XRD_{key.upper()}" not in os.environ:
                    client.EnvPutInt(key, value)
            _xrootd_configured = True
    return client


class StorageEndpoint:
    """A storage element given by its root URL; every method takes a path relative to it."""

    def __init__(self, url: str, policy: UrlPolicy | None = None):
        """Parse ``url``; raise InvalidInput for an unknown scheme or a root that is not clean,
        or one that ``policy`` does not allow (a server passes its policy; the command line
        none)."""
        if "://" not in url:
            if not url.startswith("/"):
                raise InvalidInput("a storage element must be a URL or an absolute path", where=url)
            url = "file://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise InvalidInput(
                f"unsupported storage URL scheme {scheme!r} (use file://, root:// or https://)",
                where=url,
            )
        if parts.query or parts.fragment:
            raise InvalidInput("a storage element URL takes no query or fragment", where=url)
        root = "/" + parts.path.lstrip("/")
        if root != "/":
            root = root.rstrip("/")
        if posixpath.normpath(root) != root or "\\" in root or "\x00" in root:
            raise InvalidInput("storage root must be a clean absolute path (no '..')", where=url)
        self.scheme = "root" if scheme == "xroot" else scheme
        self.host = parts.netloc
        self.root = root
        self.read_only = self.scheme in _READ_ONLY_SCHEMES
        if self.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidInput("file:// URLs must be local (file:///path)", where=url)
            self.base_url = f"file://{root}"
        elif self.scheme == "root":
            if not parts.netloc:
                raise InvalidInput("root:// URL needs a host (root://host:port//path)", where=url)
            self.base_url = f"root://{self.host}/{root}"
        else:
            self.base_url = f"{self.scheme}://{self.host}{root}"
        self._fs: Any = None
        if policy is not None:
            policy.check(url)

    def __repr__(self) -> str:
        return f"StorageEndpoint({self.base_url!r})"

    @property
    def has_server_checksum(self) -> bool:
        """Whether the storage element computes checksums itself (XRootD does)."""
        return self.scheme == "root"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem behind this storage element (created on first use)."""
        if self._fs is None:
            if self.scheme == "root":
                _xrootd_client()
                self._fs = fsspec.filesystem("root", hostid=self.host)
            elif self.scheme == "file":
                self._fs = fsspec.filesystem("file")
            else:
                try:
                    # a redirect could lead anywhere, past the hosts the policy allows
                    self._fs = fsspec.filesystem(self.scheme, allow_redirects=False)
                except ImportError as exc:
                    raise StorageError(
                        f"{self.scheme}:// needs aiohttp: pip install aiohttp",
                        where=self.base_url,
                        code="unsupported",
                    ) from exc
        return self._fs

    # -- names ---------------------------------------------------------------------------

    def path(self, rel: str) -> str:
        """The absolute path of ``rel`` on the storage (``""`` is the root itself)."""
        if rel == "":
            return self.root
        return posixpath.join(self.root, safe_relpath(rel))

    def url(self, rel: str = "") -> str:
        """The full URL of ``rel``, as other tools (xrdcp, uproot, a browser) take it."""
        if self.scheme == "file":
            return f"file://{self.path(rel)}"
        if self.scheme == "root":
            return f"root://{self.host}/{self.path(rel)}"
        return f"{self.scheme}://{self.host}{quote(self.path(rel))}"

    def local_path(self, rel: str) -> str | None:
        """The real local path of ``rel`` on a ``file://`` SE (None elsewhere), every symbolic
        link resolved; InvalidInput if it leads outside the root."""
        return self._local(rel) if self.scheme == "file" else None

    def _local(self, rel: str) -> str:
        """The one place a local path is made: ``rel`` under the root with every symbolic
        link resolved, refused unless it stays inside the (itself resolved) root.

        Reading, writing, listing and deleting on a ``file://`` SE all go through here, so
        that a link placed on the storage cannot lead a registration, a transfer or a
        listing to files elsewhere on the machine. The error names the path asked for,
        never where the link points.
        """
        real = os.path.realpath(self.path(rel))
        if not self._inside(real):
            raise InvalidInput(
                "unsafe path: a symbolic link leads outside the storage element",
                where=self._where(rel),
            )
        return real

    def _inside(self, local: str) -> bool:
        """Whether the local path ``local``, symbolic links resolved, is under the root."""
        root = os.path.realpath(self.root).rstrip("/") + "/"
        real = os.path.realpath(local)
        return real + "/" == root or real.startswith(root)

    def _where(self, rel: str) -> str:
        try:
            return self.url(rel)
        except InvalidInput:
            return f"{self.base_url} {rel!r}"

    def _writable(self, rel: str) -> None:
        if self.read_only:
            raise StorageError(
                f"{self.scheme}:// storage elements are read-only here",
                where=self._where(rel),
                code="read_only",
            )

    def _fs_path(self, rel: str) -> str:
        # fsspec's HTTP filesystem takes full URLs; local and XRootD take paths.
        if self.scheme == "file":
            return self._local(rel)
        return self.url(rel) if self.scheme in _READ_ONLY_SCHEMES else self.path(rel)

    # -- queries -------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists (file or directory)."""
        path = self._fs_path(rel)
        try:
            return bool(self.fs.exists(path))
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "stat") from exc

    def size(self, rel: str) -> int:
        """Size of the file ``rel`` in bytes; NotFound when there is none."""
        path = self._fs_path(rel)
        try:
            info = self.fs.info(path)
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "stat") from exc
        if info.get("type") == "directory":
            raise InvalidInput("is a directory, not a file", where=self.url(rel))
        if info.get("size") is None:
            raise StorageError("the server did not report a size", where=self.url(rel))
        return int(info["size"])

    def stat(self, rel: str) -> FileStat:
        """Size and modification time of the file ``rel`` (the time on ``file://`` only);
        NotFound when there is none."""
        if self.scheme != "file":
            return FileStat(self.size(rel), None)
        local = self._local(rel)
        try:
            st = os.stat(local)
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "stat") from exc
        if not S_ISREG(st.st_mode):
            raise InvalidInput("is not a file", where=self.url(rel))
        return FileStat(st.st_size, st.st_mtime_ns)

    def ls(self, rel: str = "") -> list[Entry]:
        """The entries of directory ``rel`` (the root by default), sorted by name."""
        path = self._fs_path(rel)
        try:
            items = self.fs.ls(path, detail=True)
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "list") from exc
        if self.scheme == "file":
            # a link that leads outside the root is not the storage element's content
            items = [item for item in items if self._inside(str(item["name"]))]
        entries = [
            Entry(
                name=posixpath.basename(str(item["name"]).rstrip("/")),
                size=int(item.get("size") or 0),
                is_dir=item.get("type") == "directory",
            )
            for item in items
        ]
        return sorted(entries, key=lambda e: e.name)

    def server_checksum(self, rel: str) -> str | None:
        """The adler32 the storage element computes for ``rel`` itself, or None without one.

        Only XRootD has this (``query checksum``); local disks and HTTPS return None.
        """
        if self.scheme != "root":
            return None
        client = _xrootd_client()
        from XRootD.client.flags import QueryCode

        fs = client.FileSystem(f"root://{self.host}")
        where = self._where(rel)
        try:
            status, response = fs.query(QueryCode.CHECKSUM, self.path(rel))
            if not status.ok:
                raise _XRootDStatusError(status)
        except Exception as exc:
            raise storage_error(exc, where, "checksum") from exc
        text = (response or b"").decode(errors="replace").strip("\x00").strip()
        algorithm, _, value = text.partition(" ")
        if algorithm.lower() != "adler32" or not value:
            raise StorageError(f"server answered checksum query with {text!r}", where=where)
        try:
            return normalise_adler32(value)
        except ValueError as exc:
            raise StorageError(f"server sent a malformed checksum {value!r}", where=where) from exc

    def free_space(self) -> int | None:
        """Free bytes on the storage element where the protocol tells, else None."""
        if self.scheme == "file":
            # The root may not exist yet; the free space is that of its nearest ancestor.
            path = self.root
            while not os.path.exists(path) and path != "/":
                path = os.path.dirname(path)
            try:
                return shutil.disk_usage(path).free
            except OSError as exc:
                raise storage_error(exc, self.base_url, "free space") from exc
        if self.scheme == "root":
            client = _xrootd_client()
            from XRootD.client.flags import QueryCode

            fs = client.FileSystem(f"root://{self.host}")
            try:
                status, response = fs.query(QueryCode.SPACE, self.root)
                if not status.ok:
                    raise _XRootDStatusError(status)
            except Exception as exc:
                raise storage_error(exc, self.base_url, "free space") from exc
            fields = dict(
                item.partition("=")[::2]
                for item in (response or b"").decode(errors="replace").strip("\x00").split("&")
            )
            try:
                return int(fields["oss.free"])
            except (KeyError, ValueError):
                return None
        return None

    # -- reading -------------------------------------------------------------------------

    def open_read(self, rel: str) -> BinaryIO:
        """Open ``rel`` for reading (a binary file object; close it when done)."""
        path = self._fs_path(rel)
        try:
            return self.fs.open(path, "rb")
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "open") from exc

    def read_chunks(self, rel: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The bytes of ``rel`` in chunks of ``chunk_size`` (the last one shorter).

        On XRootD the next few chunks are already requested while the caller handles one.
        """
        if self.scheme == "root":
            yield from self._xrootd_read_chunks(rel, chunk_size)
            return
        where = self._where(rel)
        fh = self.open_read(rel)
        try:
            while True:
                try:
                    chunk = fh.read(chunk_size)
                except Exception as exc:
                    raise storage_error(exc, where, "read") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            fh.close()

    def _xrootd_read_chunks(self, rel: str, chunk_size: int) -> Iterator[bytes]:
        client = _xrootd_client()
        where = self._where(rel)
        fh = client.File()
        try:
            status, _ = fh.open(self.url(rel))
            if not status.ok:
                raise _XRootDStatusError(status)
            status, info = fh.stat()
            if not status.ok:
                raise _XRootDStatusError(status)
            size = int(info.size)
        except Exception as exc:
            raise storage_error(exc, where, "open") from exc
        pending: deque[tuple[threading.Event, dict]] = deque()

        def request(offset: int) -> None:
            done, box = threading.Event(), {}

            def arrived(status: Any, data: Any, _hosts: Any) -> None:
                box["status"], box["data"] = status, data
                done.set()

            try:
                status = fh.read(offset, min(chunk_size, size - offset), callback=arrived)
            except ValueError as exc:
                raise _lost(where) from exc
            if not status.ok:
                raise _XRootDStatusError(status)
            pending.append((done, box))

        next_offset = 0
        try:
            try:
                while next_offset < size and len(pending) < IN_FLIGHT:
                    request(next_offset)
                    next_offset += chunk_size
                while pending:
                    done, box = pending.popleft()
                    done.wait()
                    if not box["status"].ok:
                        raise _XRootDStatusError(box["status"])
                    if next_offset < size:
                        request(next_offset)
                        next_offset += chunk_size
                    data = box["data"]
                    if not data:
                        raise StorageError(
                            "file ended before its size", where=where, transient=True
                        )
                    yield data
            except DSSError:
                raise
            except Exception as exc:
                raise storage_error(exc, where, "read") from exc
        finally:
            # Requests still in flight write into buffers owned by this handle: let them land.
            for done, _ in pending:
                done.wait(timeout=60)
            fh.close(timeout=10)

    # -- writing -------------------------------------------------------------------------

    def open_write_temp(self, rel: str, tag: str | None = None) -> TempFile:
        """Start writing ``rel`` under a temporary name beside it; ``publish`` it when whole.

        The temporary is ``<dir>/.<name>.dmu-part-<tag>`` (:func:`temp_name`), ``tag`` being
        random unless given: a job attempt passes its lease token, so that whoever finds
        the attempt dead can remove what it left. On XRootD it is opened with POSC (persist
        on successful close): should this process or the server die first, the server
        removes it by itself.
        """
        self._writable(rel)
        temp = temp_name(rel, tag or uuid.uuid4().hex[:12])
        if self.scheme == "root":
            return _XRootDTempFile(self, temp)
        return _LocalTempFile(self, temp)

    def publish(self, temp: str, rel: str, *, overwrite: bool = False) -> None:
        """Give the finished temporary ``temp`` its final name ``rel`` in one rename.

        Without ``overwrite``, an existing ``rel`` is left alone and Conflict is raised.
        """
        self._writable(rel)
        src, dst = self._fs_path(temp), self._fs_path(rel)
        where = self._where(rel)
        try:
            if self.scheme == "file":
                if overwrite:
                    os.replace(src, dst)
                else:
                    # link() refuses an existing name, so no other writer is overwritten.
                    os.link(src, dst)
                    os.unlink(src)
                return
            # XRootD's mv replaces an existing file: check first (a narrow race remains).
            if not overwrite and self.fs.exists(dst):
                raise Conflict("a file of that name already exists", where=where)
            client = _xrootd_client()
            status, _ = client.FileSystem(f"root://{self.host}").mv(src, dst)
            if not status.ok:
                raise _XRootDStatusError(status)
        except Exception as exc:
            raise storage_error(exc, where, "rename") from exc

    def delete(self, rel: str, *, missing_ok: bool = False) -> None:
        """Delete the file ``rel``; NotFound if it is absent, unless ``missing_ok``."""
        self._writable(rel)
        path = self._fs_path(rel)
        try:
            self.fs.rm_file(path)
        except Exception as exc:
            err = storage_error(exc, self._where(rel), "delete")
            if missing_ok and isinstance(err, NotFound):
                return
            raise err from exc

    def makedirs(self, rel: str) -> None:
        """Create directory ``rel`` and its parents (no error if it exists)."""
        self._writable(rel)
        path = self._fs_path(rel)
        try:
            if self.scheme == "file":
                os.makedirs(path, exist_ok=True)
            else:
                self.fs.makedirs(path, exist_ok=True)
        except Exception as exc:
            raise storage_error(exc, self._where(rel), "mkdir") from exc


class TempFile(abc.ABC):
    """A file being written under a temporary name; ``close`` it, then ``publish`` or ``discard``.

    Used as a context manager, it is discarded if the block raises.
    """

    def __init__(self, endpoint: StorageEndpoint, temp: str):
        self.endpoint = endpoint
        self.temp = temp
        self.bytes = 0
        self.where = endpoint._where(temp)

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and close; raises if any write failed."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Close and remove the temporary, ignoring errors: it is cleanup after a failure."""

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.discard()


class _LocalTempFile(TempFile):
    def __init__(self, endpoint: StorageEndpoint, temp: str):
        super().__init__(endpoint, temp)
        path = endpoint._local(temp)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._fh: Any = endpoint.fs.open(path, "wb")
        except Exception as exc:
            raise storage_error(exc, self.where, "create") from exc

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except Exception as exc:
            raise storage_error(exc, self.where, "write") from exc
        self.bytes += len(data)

    def close(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.close()
        except Exception as exc:
            raise storage_error(exc, self.where, "close") from exc

    def discard(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except Exception:  # noqa: S110 - the file is removed next anyway
                pass
            self._fh = None
        try:
            os.unlink(self.endpoint._local(self.temp))
        except (OSError, DSSError):
            pass


class _XRootDTempFile(TempFile):
    """Writes with a few asynchronous requests in flight, like xrdcp's parallel chunks."""

    def __init__(self, endpoint: StorageEndpoint, temp: str):
        super().__init__(endpoint, temp)
        client = _xrootd_client()
        from XRootD.client.flags import OpenFlags

        self._fh: Any = client.File()
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._lock = threading.Lock()
        # The client does not keep the buffers of asynchronous writes alive: we must.
        self._in_flight: dict[int, bytes] = {}
        self._failure: Any = None
        flags = OpenFlags.NEW | OpenFlags.MAKEPATH | OpenFlags.POSC
        try:
            status, _ = self._fh.open(endpoint.url(temp), flags, 0o644)
            if not status.ok:
                raise _XRootDStatusError(status)
        except Exception as exc:
            raise storage_error(exc, self.where, "create") from exc
        self._open = True

    def _written(self, offset: int) -> Any:
        def callback(status: Any, _response: Any, _hosts: Any) -> None:
            with self._lock:
                self._in_flight.pop(offset, None)
                if not status.ok and self._failure is None:
                    self._failure = status
            self._slots.release()

        return callback

    def _raise_failure(self, action: str) -> None:
        if self._failure is not None:
            raise storage_error(_XRootDStatusError(self._failure), self.where, action)

    def write(self, data: bytes) -> None:
        self._raise_failure("write")
        self._slots.acquire()
        offset = self.bytes
        with self._lock:
            self._in_flight[offset] = data
        try:
            try:
                status = self._fh.write(data, offset, callback=self._written(offset))
            except ValueError as exc:
                raise _lost(self.where) from exc
            if not status.ok:
                raise _XRootDStatusError(status)
        except Exception as exc:
            with self._lock:
                self._in_flight.pop(offset, None)
            self._slots.release()
            raise storage_error(exc, self.where, "write") from exc
        self.bytes += len(data)

    def _drain(self) -> None:
        for _ in range(IN_FLIGHT):
            self._slots.acquire()
        for _ in range(IN_FLIGHT):
            self._slots.release()

    def close(self) -> None:
        if not self._open:
            return
        self._drain()
        self._raise_failure("write")
        self._open = False
        try:
            status, _ = self._fh.close()
            if not status.ok:
                raise _XRootDStatusError(status)
        except Exception as exc:
            raise storage_error(exc, self.where, "close") from exc

    def discard(self) -> None:
        if self._open:
            self._open = False
            try:
                self._drain()
                self._fh.close(timeout=10)
            except Exception:  # noqa: S110 - the server may be gone; POSC removes the file then
                pass
        try:
            self.endpoint.delete(self.temp, missing_ok=True)
        except DSSError:
            pass


def split_url(url: str) -> tuple[StorageEndpoint, str]:
    """A file URL (or local path) as (endpoint of its directory, file name).

    ``root://h:1094//data/a/f.root`` becomes ``(StorageEndpoint('root://h:1094//data/a'),
    'f.root')``. A URL with ``..`` in it is refused like any unsafe path.
    """
    if "://" not in url and not url.startswith("/"):
        url = os.path.abspath(url)
    parts = urlsplit(url if "://" in url else "file://" + url)
    path = parts.path
    if not path.strip("/"):
        raise InvalidInput("URL names no file", where=url)
    for part in path.split("/"):
        if part in (".", ".."):
            raise InvalidInput(f"unsafe path: path component {part!r} is not allowed", where=url)
    head, name = posixpath.split(path.rstrip("/"))
    scheme_and_host = url[: len(url) - len(path)] if "://" in url else "file://"
    if parts.query or parts.fragment:
        raise InvalidInput("a storage URL takes no query or fragment", where=url)
    endpoint = StorageEndpoint(scheme_and_host + (head or "/"))
    return endpoint, safe_relpath(name)
