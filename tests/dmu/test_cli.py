"""The ``dmu`` command line, run as a subprocess: results, JSON documents, errors, exit codes.

``get`` and ``put`` need a live portal and are tested with it elsewhere; here: ``cp``,
``checksum``, ``ls``, usage, and the REST client's settings and error mapping.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dss.apiclient import ApiClient, PortalError, resolve_settings
from dss.errors import Conflict, InvalidInput, NotFound, StorageError
from tests.xrootd import free_port

REPO = Path(__file__).resolve().parents[2]


def dmu(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dmu.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(2_500_000)
    path = tmp_path / "sample.root"
    path.write_bytes(data)
    return path, data


def test_cp_to_xrootd_prints_one_json_document(sample, xrd_se):
    path, data = sample
    done = dmu("cp", "--json", str(path), xrd_se.url("d/sample.root"))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["adler32"] == adler(data) and doc["bytes"] == len(data)
    assert doc["attempts"] == 1 and doc["already_there"] is False
    assert doc["destination"] == xrd_se.url("d/sample.root")
    assert xrd_se.server_checksum("d/sample.root") == adler(data)

    again = dmu("--json", "cp", str(path), xrd_se.url("d") + "/")
    assert again.returncode == 0 and json.loads(again.stdout)["already_there"] is True


def test_cp_from_xrootd_to_a_local_directory(sample, xrd_se, tmp_path):
    path, data = sample
    assert dmu("-q", "cp", str(path), xrd_se.url("sample.root")).returncode == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = dmu("cp", xrd_se.url("sample.root"), str(out_dir))
    assert done.returncode == 0, done.stderr
    assert "adler32 " + adler(data) in done.stdout
    assert (out_dir / "sample.root").read_bytes() == data


def test_cp_onto_a_different_file_is_exit_4_naming_the_destination(sample, xrd_se, tmp_path):
    path, _ = sample
    other = tmp_path / "other"
    other.write_bytes(b"not the same")
    assert dmu("-q", "cp", str(other), xrd_se.url("f")).returncode == 0
    done = dmu("--json", "cp", str(path), xrd_se.url("f"))
    assert done.returncode == 4
    assert done.stderr.startswith(f"dmu: {xrd_se.url('f')}: destination already holds")
    assert json.loads(done.stdout)["error"] == "conflict"


def test_cp_with_dotdot_is_exit_2(sample, xrd_se):
    path, _ = sample
    done = dmu("cp", str(path), xrd_se.url("a") + "/../../escape")
    assert done.returncode == 2 and "unsafe path" in done.stderr


def test_cp_of_a_missing_file_is_exit_3(tmp_path):
    done = dmu("--json", "cp", str(tmp_path / "nope"), str(tmp_path / "copy"))
    assert done.returncode == 3
    assert json.loads(done.stdout) == {
        "error": "not_found",
        "detail": "stat failed: no such file or directory",
        "where": f"file://{tmp_path}/nope",
        "exit_code": 3,
    }


def test_cp_with_a_wrong_expected_checksum_is_exit_6(sample, tmp_path):
    path, _ = sample
    done = dmu("cp", "--retries", "0", "--adler32", "00000001", str(path), str(tmp_path / "c"))
    assert done.returncode == 6 and "expected 00000001" in done.stderr
    assert not (tmp_path / "c").exists() and sorted(os.listdir(tmp_path)) == ["sample.root"]


def test_cp_to_a_server_that_is_not_there_is_exit_7(sample):
    path, _ = sample
    url = f"root://127.0.0.1:{free_port()}//data/f"
    done = dmu("cp", "--retries", "1", str(path), url)
    assert done.returncode == 7
    assert "unreachable" in done.stderr and "gave up after 2 attempts" in done.stderr


def test_checksum_of_a_local_file_and_of_an_xrootd_url(sample, xrd_se):
    path, data = sample
    done = dmu("checksum", "--md5", "--json", str(path))
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "url": f"file://{path}",
        "bytes": len(data),
        "adler32": adler(data),
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert dmu("-q", "cp", str(path), xrd_se.url("s")).returncode == 0
    remote = dmu("checksum", xrd_se.url("s"))
    assert remote.returncode == 0 and remote.stdout.startswith(f"adler32:{adler(data)}")


def test_ls_lists_an_xrootd_directory(sample, xrd_se):
    path, data = sample
    assert dmu("-q", "cp", str(path), xrd_se.url("sub/a.root")).returncode == 0
    done = dmu("ls", "--json", xrd_se.base_url)
    assert done.returncode == 0
    entries = json.loads(done.stdout)["entries"]
    assert [(e["name"], e["dir"]) for e in entries] == [("sub", True)]
    listing = dmu("ls", xrd_se.url("sub"))
    assert listing.stdout.split() == [str(len(data)), "a.root"]


def test_help_documents_the_exit_codes():
    done = dmu("--help")
    assert done.returncode == 0
    for line in ("2    bad usage", "3    not found", "4    conflict", "6    checksum mismatch"):
        assert line in done.stdout
    assert "130  interrupted" in done.stdout


def test_bad_usage_is_exit_2():
    assert dmu().returncode == 2
    assert dmu("cp", "only-one-argument").returncode == 2


def test_get_without_a_portal_url_says_where_to_set_it(tmp_path):
    env = {"DSS_URL": "", "DSS_TOKEN": "", "XDG_CONFIG_HOME": str(tmp_path)}
    done = dmu("get", "user.alice.sample", str(tmp_path / "dest"), env=env)
    assert done.returncode == 2
    assert "--url" in done.stderr and "DSS_URL" in done.stderr and "client.ini" in done.stderr


# -- the REST client --------------------------------------------------------------------


def test_settings_come_from_arguments_then_environment_then_ini(tmp_path, monkeypatch):
    ini = tmp_path / "dss" / "client.ini"
    ini.parent.mkdir()
    ini.write_text("[dss]\nurl = https://ini.example.org/\ntoken = from-ini\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DSS_URL", raising=False)
    monkeypatch.delenv("DSS_TOKEN", raising=False)
    s = resolve_settings()
    assert (s.url, s.token) == ("https://ini.example.org", "from-ini")
    monkeypatch.setenv("DSS_URL", "http://env.example.org")
    monkeypatch.setenv("DSS_TOKEN", "from-env")
    s = resolve_settings()
    assert (s.url, s.token) == ("http://env.example.org", "from-env")
    s = resolve_settings("https://arg.example.org", "from-arg")
    assert (s.url, s.token) == ("https://arg.example.org", "from-arg")
    with pytest.raises(InvalidInput):
        resolve_settings("ftp://nope")


class _Portal(BaseHTTPRequestHandler):
    """A stand-in portal answering with the error bodies the real one sends."""

    answers = {
        "/api/datasets/user.x.missing/": (
            404,
            {"error": "not_found", "detail": "no dataset", "where": "user.x.missing"},
        ),
        "/api/datasets/register/": (
            409,
            {"error": "conflict", "detail": "other checksum", "where": "f.root"},
        ),
        "/api/storage-elements/": (
            502,
            {"error": "storage_error", "detail": "SE down", "where": "SE1"},
        ),
        "/api/datasets/user.x.ok/": (200, {"name": "user.x.ok", "files": []}),
    }

    def _answer(self) -> None:
        if self.headers.get("Authorization") != "Token secret":
            status, body = 401, {"detail": "Invalid token.", "error": "authentication_failed"}
        else:
            status, body = self.answers.get(self.path, (500, None))
        data = json.dumps(body).encode() if body is not None else b"<h1>Server Error</h1>"
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is not None else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_in_portal():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_portal_errors_become_dss_errors(stand_in_portal):
    client = ApiClient(stand_in_portal, "secret")
    assert client.dataset("user.x.ok")["name"] == "user.x.ok"
    with pytest.raises(NotFound) as err:
        client.dataset("user.x.missing")
    assert (err.value.message, err.value.where) == ("no dataset", "user.x.missing")
    with pytest.raises(Conflict):
        client.register("user.x.ok", "SE1", ["f.root"])
    with pytest.raises(StorageError):
        client.storage_elements()
    with pytest.raises(PortalError) as err:
        client.request("GET", "/api/broken/")
    assert "HTTP 500" in err.value.message
    with pytest.raises(PortalError) as err:
        ApiClient(stand_in_portal, "wrong").dataset("user.x.ok")
    assert "Invalid token." in err.value.message and "DSS_TOKEN" in err.value.message


def test_an_unreachable_portal_is_a_clear_error():
    with pytest.raises(PortalError) as err:
        ApiClient(f"http://127.0.0.1:{free_port()}").dataset("user.x.ok")
    assert "cannot reach the DSS portal (connection refused)" in err.value.message


def test_rucio_dids_and_sizes_read_as_people_write_them():
    from dmu.cli import _did, _size
    from dss.errors import InvalidInput

    assert _did("data24:data24.dimuon") == ("data24", "data24.dimuon")
    for bad in ("data24", ":x", "x:", ""):
        with pytest.raises(InvalidInput, match="a Rucio DID is scope:name"):
            _did(bad)
    assert [_size(n) for n in (0, 999, 1000, 2_500_000, 3 * 10**12, 10**16)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "2.5 MB",
        "3.0 TB",
        "10000.0 TB",
    ]
