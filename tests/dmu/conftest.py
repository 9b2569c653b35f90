"""Fixtures for the data movement tests: real XRootD servers on loopback, local SEs, mounts."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmu.storage import StorageEndpoint
from tests.services import require
from tests.xrootd import XRootDServer, XRootDUnavailable, start_xrootd


def _start(**kwargs) -> XRootDServer:
    try:
        return start_xrootd(**kwargs)
    except XRootDUnavailable as exc:
        require(False, f"XRootD server ({exc})")
        raise


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """One read-write XRootD server with adler32 checksums for the whole session."""
    server = _start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def xrootd_readonly() -> Iterator[XRootDServer]:
    """A second server exporting its directory read-only (``all.export ... r/o``)."""
    server = _start(read_only=True)
    yield server
    server.close()


@pytest.fixture
def xrootd_private() -> Iterator[XRootDServer]:
    """A server of the test's own, which the test may stop and start."""
    server = _start()
    yield server
    server.close()


@pytest.fixture
def xrd_se(xrootd_server: XRootDServer) -> StorageEndpoint:
    """A fresh directory on the session XRootD server, as a storage element."""
    return StorageEndpoint(xrootd_server.se_url(f"t-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def local_se(tmp_path: Path) -> StorageEndpoint:
    """A local directory as a storage element."""
    root = tmp_path / "se"
    root.mkdir()
    return StorageEndpoint(f"file://{root}")


def _mount_tmpfs(target: Path, options: str) -> bool:
    """Mount a tmpfs on ``target``; False where this process may not mount."""
    if os.geteuid() != 0:
        return False
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs (a full disk after 1 MiB), or None where mounting is not permitted."""
    target = tmp_path / "tiny"
    if not _mount_tmpfs(target, "size=1m,mode=0755"):
        yield None
        return
    yield target
    _umount(target)


@pytest.fixture
def readonly_fs(tmp_path: Path) -> Iterator[Path | None]:
    """A read-only tmpfs (chmod does not stop root), or None where mounting is not permitted."""
    target = tmp_path / "ro"
    if not _mount_tmpfs(target, "ro,size=1m"):
        yield None
        return
    yield target
    _umount(target)


@pytest.fixture
def xrootd_full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XRootDServer | None]:
    """An XRootD server whose export is a 2 MiB tmpfs: writes beyond that hit ENOSPC."""
    base = Path(f"/tmp/dss-xrootd-full-{uuid.uuid4().hex[:8]}")
    data = base / "data"
    if not _mount_tmpfs(data, "size=2m,mode=0755"):
        yield None
        return
    try:
        server = _start(tmpdir=base)
    except BaseException:
        _umount(data)
        raise
    yield server
    server.stop()
    _umount(data)
    subprocess.run(["rm", "-rf", str(base)], capture_output=True)
