"""nopayloadclient, the conditions database's C++ client and CLI (built by
.ci/nopayloadclient.sh), runs its own functional test and CLI test, unchanged, against the
portal under gunicorn, writing with HTTP Basic credentials (a user and an API token)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import api_token, make_user
from tests.services import require

pytestmark = pytest.mark.services

BUILD = Path(os.environ.get("NOPAYLOADCLIENT_BUILD", "/nonexistent"))
SRC = Path(os.environ.get("NOPAYLOADCLIENT_SRC", "/work/shared/vendor/nopayloadclient"))


@pytest.fixture
def client_config(gunicorn_portal, tmp_path):
    """A client configuration pointing at the portal's port and API root, with a
    conditions manager's user name and token in its base_url."""
    require(
        (BUILD / "bin" / "test_nopayloadclient").is_file()
        and (BUILD / "bin" / "cli_npc").is_file(),
        f"nopayloadclient built by .ci/nopayloadclient.sh (NOPAYLOADCLIENT_BUILD={BUILD})",
    )
    require((SRC / "tests" / "test_cli.sh").is_file(), f"nopayloadclient sources at {SRC}")
    user = make_user("npc", ["conditions-manager"])
    host = gunicorn_portal.removeprefix("http://")
    store = tmp_path / "payloads"
    store.mkdir()
    config = {
        "base_url": f"{user.username}:{api_token(user)}@{host}",
        "api_res": "/api/cdb_rest/",
        "write_dir": f"{store}/",
        "read_dir_list": [f"{store}/"],
        "n_retries": 2,
        "retry_sleep_mean": 1,
        "cache_life_time": 10,
        "cache_max_mb": 1,
        "print_time_stamps": False,
        "use_fake_backend": False,
        "logger": "terminal",
        "log_level": "INFO",
    }
    path = tmp_path / "npc.json"
    path.write_text(json.dumps(config))
    return path


def run(args, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NOPAYLOADCLIENT_CONF": str(config), "USER": "dss-ci"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def test_the_clients_functional_test_passes(client_config):
    r = run([str(BUILD / "bin" / "test_nopayloadclient")], client_config)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    # it went all the way: locked, unlocked, and deleted its global tag at the end
    assert "successfully locked global tag" in r.stdout
    assert "successfully deleted global tag" in r.stdout
    print(r.stdout)


def test_the_clients_cli_test_passes(client_config):
    cli = BUILD / "bin" / "cli_npc"
    # the script inserts the payload file that the functional test writes
    payload = Path("/tmp/file.dat")
    if not payload.exists():
        payload.write_text("a payload for the CLI test")
    r = run(
        ["bash", str(SRC / "tests" / "test_cli.sh"), str(cli), str(client_config)], client_config
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_a_write_without_credentials_is_refused(client_config):
    config = json.loads(client_config.read_text())
    config["base_url"] = config["base_url"].split("@", 1)[1]
    client_config.write_text(json.dumps(config))
    cli = str(BUILD / "bin" / "cli_npc")
    r = run([cli, "createPayloadType", "anonymous_pt"], client_config)
    assert '"code": 0' not in r.stdout and "credentials" in r.stdout, r.stdout
    r = run([cli, "getPayloadTypes"], client_config)
    assert '"code": 0' in r.stdout and "anonymous_pt" not in r.stdout, r.stdout
