"""Fixtures for the notebook client (``dss.Portal``): a live portal serving the demo
datasets with TAGs built, a physicist's and an operator's tokens, and an XRootD storage
element open to users' datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ROOT, api_token
from tests.services import require
from tests.xrootd import XRootDServer, XRootDUnavailable, start_xrootd


@dataclass
class LivePortal:
    url: str
    tokens: dict[str, str]
    tags_id: int

    def portal(self, user: str = "phys"):
        """A ``dss.Portal`` for ``user``, polling often (the tests wait for real skims)."""
        import dss

        return dss.Portal(self.url, self.tokens[user], poll_interval=0.2)


@pytest.fixture
def live(live_server, demo_datasets, physicist, operator, monkeypatch, tmp_path) -> LivePortal:
    """The portal on a free port with demo.hzz tagged (schema hzz); settings from the
    environment or a developer's client.ini are kept out of the way."""
    from tests.skims.conftest import build_tags

    for name in ("DSS_URL", "DSS_TOKEN", "DSS_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hzz, _ = demo_datasets
    collection = build_tags(hzz, "hzz")
    tokens = {u.username: api_token(u) for u in (physicist, operator)}
    return LivePortal(live_server.url, tokens, collection.pk)


def dss_cli(live: LivePortal, *args: str, user: str = "phys") -> subprocess.CompletedProcess:
    """The ``dss`` command line, run as a user runs it, against the live portal."""
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "dss.cli", "--url", live.url, "--token", live.tokens[user], *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    try:
        server = start_xrootd()
    except XRootDUnavailable as exc:
        require(False, f"XRootD server ({exc})")
        raise
    yield server
    server.close()


@pytest.fixture
def xrootd_se(db, xrootd_server):
    """An XRootD storage element (``XRD``) open to users' datasets."""
    from dmu import actions

    url = xrootd_server.se_url(f"client-{uuid.uuid4().hex[:8]}")
    return actions.do_add_storage_element("XRD", url, "XRootD on loopback", user_writable=True)
