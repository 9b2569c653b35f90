"""Fixtures for the Rucio tests: the real Rucio server that `.ci/rucio.sh start` runs (found
through the DSS_RUCIO_* variables it prints), a fresh scope, and a real XRootD server whose
directory is both a portal storage element and a Rucio RSE."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.services import require
from tests.xrootd import XRootDServer, XRootDUnavailable, _give_to_server, start_xrootd

RUCIO_VARS = ("DSS_RUCIO_URL", "DSS_RUCIO_ACCOUNT", "DSS_RUCIO_USERNAME", "DSS_RUCIO_PASSWORD")
# The test server is named by DSS_TEST_RUCIO_* (as .ci/run sets them), so that the rest of the
# suite runs without a Rucio; a developer's own DSS_RUCIO_* variables work too.


def _from_environment(name: str) -> str:
    return os.environ.get(name.replace("DSS_", "DSS_TEST_", 1)) or os.environ.get(name, "")


def _rucio_answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/ping", timeout=3).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def rucio_env() -> dict[str, str]:
    """The Rucio server's address and credentials from the environment."""
    env = {k: _from_environment(k) for k in RUCIO_VARS}
    missing = [k for k, v in env.items() if not v]
    require(
        not missing and _rucio_answers(env["DSS_RUCIO_URL"]),
        "a Rucio server (run `eval \"$(bash .ci/rucio.sh start | grep '^export ')\"`; "
        + (
            f"unset: {', '.join(missing)})"
            if missing
            else f"{env['DSS_RUCIO_URL']} does not answer)"
        ),
    )
    return env


@pytest.fixture
def rucio(rucio_env, settings, db, monkeypatch):
    """The portal configured for the real Rucio; returns a logged-in client of its own."""
    from dmu import catalogs

    for name, value in rucio_env.items():  # for worker processes started by the test
        monkeypatch.setenv(name, value)
    settings.DSS_RUCIO_URL = rucio_env["DSS_RUCIO_URL"]
    settings.DSS_RUCIO_AUTH_URL = ""
    settings.DSS_RUCIO_ACCOUNT = rucio_env["DSS_RUCIO_ACCOUNT"]
    settings.DSS_RUCIO_USERNAME = rucio_env["DSS_RUCIO_USERNAME"]
    settings.DSS_RUCIO_PASSWORD = rucio_env["DSS_RUCIO_PASSWORD"]
    settings.DSS_RUCIO_RETRIES = 3
    settings.DSS_RUCIO_RETRY_SECONDS = 1
    return catalogs.rucio_client()


@pytest.fixture
def scope(rucio) -> str:
    """A new Rucio scope, also the scope of the portal datasets the test makes."""
    name = f"t{uuid.uuid4().hex[:10]}"
    rucio.add_scope(account=rucio.account, scope=name)
    return name


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    try:
        server = start_xrootd()
    except XRootDUnavailable as exc:
        require(False, f"XRootD server ({exc})")
        raise
    yield server
    server.close()


class Site:
    """A directory on the XRootD server, as the portal SE ``se`` and the Rucio RSE ``rse``."""

    def __init__(self, server: XRootDServer, se, rse: str, root: Path):
        self.server, self.se, self.rse, self.root = server, se, rse, root

    def put(self, source: Path, rel: str) -> str:
        """Place a file in the directory, owned by the server's user; returns ``rel``."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o644)
        _give_to_server(target, self.server.root)
        return rel


@pytest.fixture
def site(rucio, xrootd_server, settings) -> Site:
    """A storage element on the XRootD server, mapped to a new non-deterministic RSE whose
    root:// protocol points at the same directory."""
    from dmu import actions

    sub = f"r-{uuid.uuid4().hex[:8]}"
    url = xrootd_server.se_url(sub)
    root = xrootd_server.root / sub
    se = actions.do_add_storage_element(
        f"XRD-{sub[2:]}", url, "XRootD on loopback", user_writable=True
    )
    rse = f"XRD_{sub[2:].upper()}"
    rucio.add_rse(rse, deterministic=False, rse_type="DISK")
    rucio.add_protocol(
        rse,
        {
            "scheme": "root",
            "hostname": "127.0.0.1",
            "port": xrootd_server.port,
            "prefix": f"/{root}/",
            "impl": "rucio.rse.protocols.xrootd.Default",
            "domains": {
                "lan": {"read": 1, "write": 1, "delete": 1},
                "wan": {"read": 1, "write": 1, "delete": 1},
            },
        },
    )
    settings.DSS_RUCIO_RSES = {se.name: rse}
    return Site(xrootd_server, se, rse, root)


@pytest.fixture
def in_rucio(rucio, scope, site):
    """A dataset that only Rucio knows: registered, then forgotten by the portal."""
    from dmu import actions, catalogs
    from tests.conftest import ZMUMU

    name = f"{scope}.zmumu"
    rel = site.put(ZMUMU, f"{name}/uproot-Zmumu.root")
    dataset, _ = actions.check_register_dataset(name, site.se, [rel])
    catalogs.RucioCatalog(rucio).register(dataset)
    dataset.delete()
    return scope, name
