"""Storage elements: path safety, URLs, and every operation on local disk and a real XRootD."""

from __future__ import annotations

import functools
import os
import threading
import time
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dmu.storage import (
    StorageEndpoint,
    deterministic_path,
    safe_relpath,
    split_url,
)
from dss.errors import Conflict, InvalidInput, NotFound, StorageError


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


# -- path safety ------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["a.root", "user.jdoe/ab/cd/file.root", "dir/with space/f", "x..y"])
def test_safe_relpath_accepts_plain_relative_paths(rel):
    assert safe_relpath(rel) == rel


@pytest.mark.parametrize(
    "rel",
    [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        "..\\..\\x",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a?b=c",
        "a#frag",
    ],
)
def test_safe_relpath_refuses_escapes_and_tricks_naming_the_path(rel):
    with pytest.raises(InvalidInput) as err:
        safe_relpath(rel)
    assert err.value.where == rel
    assert "unsafe path" in err.value.message or "path" in err.value.message


def test_path_never_leaves_the_root(local_se):
    assert local_se.path("a/b.root") == f"{local_se.root}/a/b.root"
    assert local_se.path("") == local_se.root
    for rel in ("../outside", "a/../../outside", "/etc/passwd"):
        with pytest.raises(InvalidInput):
            local_se.path(rel)


def test_deterministic_path_is_rucio_layout():
    # md5("user.jdoe:events.root") = 4cba9312...: the first two byte pairs make the directories
    assert deterministic_path("user.jdoe", "events.root") == "user.jdoe/4c/ba/events.root"
    with pytest.raises(InvalidInput):
        deterministic_path("user.jdoe", "../../etc/passwd")


# -- URLs -------------------------------------------------------------------------------


def test_urls_of_each_protocol():
    xrd = StorageEndpoint("root://se.example.org:1094//data/dss/")
    assert xrd.root == "/data/dss"
    assert xrd.url("a/f.root") == "root://se.example.org:1094//data/dss/a/f.root"
    assert xrd.has_server_checksum
    local = StorageEndpoint("/srv/se")
    assert local.url("f") == "file:///srv/se/f"
    assert local.local_path("f") == "/srv/se/f"
    web = StorageEndpoint("https://data.example.org/pub")
    assert web.url("a b.root") == "https://data.example.org/pub/a%20b.root"
    assert web.read_only


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x", "root://host//data/../etc", "relative/dir", "root:///data", "file://h/x"],
)
def test_bad_storage_urls_are_invalid_input(url):
    with pytest.raises(InvalidInput) as err:
        StorageEndpoint(url)
    assert err.value.where == url


def test_split_url_refuses_dotdot():
    endpoint, rel = split_url("root://h:1094//data/a/f.root")
    assert (endpoint.root, rel) == ("/data/a", "f.root")
    with pytest.raises(InvalidInput):
        split_url("root://h:1094//data/../etc/passwd")


def test_https_is_read_only():
    web = StorageEndpoint("https://data.example.org/pub")
    with pytest.raises(StorageError) as err:
        web.open_write_temp("f.root")
    assert err.value.code == "read_only" and not err.value.transient


# -- local disk -------------------------------------------------------------------------


def test_local_write_publish_read_list_delete(local_se):
    data = os.urandom(100_000)
    with local_se.open_write_temp("d/f.bin") as temp:
        temp.write(data)
        temp.close()
        assert not local_se.exists("d/f.bin")
        local_se.publish(temp.temp, "d/f.bin")
    assert local_se.exists("d/f.bin") and local_se.size("d/f.bin") == len(data)
    assert b"".join(local_se.read_chunks("d/f.bin", 4096)) == data
    with local_se.open_read("d/f.bin") as fh:
        assert fh.read() == data
    assert [e.name for e in local_se.ls("d")] == ["f.bin"]
    assert local_se.server_checksum("d/f.bin") is None
    assert local_se.free_space() > 0
    local_se.delete("d/f.bin")
    assert not local_se.exists("d/f.bin")


def test_local_publish_does_not_replace_an_existing_file(local_se):
    os.makedirs(local_se.path("d"))
    with open(local_se.path("d/f"), "wb") as fh:
        fh.write(b"first")
    with local_se.open_write_temp("d/f") as temp:
        temp.write(b"second")
        temp.close()
        with pytest.raises(Conflict):
            local_se.publish(temp.temp, "d/f")
        temp.discard()
    assert open(local_se.path("d/f"), "rb").read() == b"first"
    assert [e.name for e in local_se.ls("d")] == ["f"]


def test_a_failed_write_leaves_no_temporary(local_se):
    with pytest.raises(RuntimeError), local_se.open_write_temp("f") as temp:
        temp.write(b"partial")
        raise RuntimeError("boom")
    assert local_se.ls("") == []


def test_missing_local_file_is_not_found(local_se):
    with pytest.raises(NotFound) as err:
        local_se.size("nope.root")
    assert err.value.where.endswith("/nope.root")


def test_local_readonly_mount_is_a_permanent_storage_error(readonly_fs):
    if readonly_fs is None:
        pytest.skip("mounting a read-only tmpfs is not permitted here")
    se = StorageEndpoint(f"file://{readonly_fs}")
    with pytest.raises(StorageError) as err:
        se.open_write_temp("f.bin")
    assert err.value.code == "read_only" and not err.value.transient


# -- XRootD -----------------------------------------------------------------------------


def test_xrootd_write_publish_checksum_list_delete(xrd_se, xrootd_server):
    data = os.urandom(3_000_000)
    with xrd_se.open_write_temp("a/b/f.bin") as temp:
        temp.write(data[:1_000_000])
        temp.write(data[1_000_000:])
        temp.close()
        assert xrd_se.server_checksum(temp.temp) == adler(data)
        xrd_se.publish(temp.temp, "a/b/f.bin")
    assert xrd_se.exists("a/b/f.bin") and not xrd_se.exists("a/b/g.bin")
    assert xrd_se.size("a/b/f.bin") == len(data)
    assert xrd_se.server_checksum("a/b/f.bin") == adler(data)
    assert b"".join(xrd_se.read_chunks("a/b/f.bin", 256 * 1024)) == data
    with xrd_se.open_read("a/b/f.bin") as fh:
        assert fh.read() == data
    assert xrd_se.ls("a/b") == [type(xrd_se.ls("a/b")[0])("f.bin", len(data), False)]
    assert xrd_se.free_space() > 0
    # what the server wrote is where the URL says
    assert (
        xrootd_server.root / xrd_se.path("a/b/f.bin")[len(str(xrootd_server.root)) + 1 :]
    ).exists()
    xrd_se.delete("a/b/f.bin")
    assert not xrd_se.exists("a/b/f.bin")


def test_xrootd_publish_does_not_replace_an_existing_file(xrd_se):
    for content in (b"first", b"second"):
        temp = xrd_se.open_write_temp("f")
        temp.write(content)
        temp.close()
        if content == b"first":
            xrd_se.publish(temp.temp, "f")
        else:
            with pytest.raises(Conflict):
                xrd_se.publish(temp.temp, "f")
            temp.discard()
    assert b"".join(xrd_se.read_chunks("f")) == b"first"
    assert [e.name for e in xrd_se.ls("")] == ["f"]


def test_xrootd_missing_file_is_not_found(xrd_se):
    with pytest.raises(NotFound):
        xrd_se.size("nope")
    with pytest.raises(NotFound):
        xrd_se.server_checksum("nope")
    with pytest.raises(NotFound):
        list(xrd_se.read_chunks("nope"))


def test_xrootd_readonly_export_is_a_permanent_storage_error(xrootd_readonly):
    se = StorageEndpoint(xrootd_readonly.se_url())
    with pytest.raises(StorageError) as err:
        se.open_write_temp("f.bin")
    assert err.value.code == "read_only" and not err.value.transient
    assert "read-only" in err.value.message


def test_connection_refused_is_transient_and_quick():
    from tests.xrootd import free_port

    se = StorageEndpoint(f"root://127.0.0.1:{free_port()}//data")
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        se.size("f.root")
    assert err.value.transient
    assert "unreachable" in err.value.message
    assert time.monotonic() - started < 10


# -- HTTP(S), read-only -----------------------------------------------------------------


@pytest.fixture
def web_dir(tmp_path):
    """A directory served over HTTP on loopback (the https:// code path, without TLS)."""
    root = tmp_path / "web"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_storage_reads_sizes_and_refuses_writes(web_dir, local_se):
    from dmu.transfer import copy

    root, url = web_dir
    data = os.urandom(300_000)
    (root / "d").mkdir()
    (root / "d" / "f.root").write_bytes(data)
    web = StorageEndpoint(url)
    assert web.exists("d/f.root") and web.size("d/f.root") == len(data)
    assert b"".join(web.read_chunks("d/f.root", 65536)) == data
    assert web.server_checksum("d/f.root") is None and web.free_space() is None
    with pytest.raises(NotFound):
        web.size("d/nope.root")
    result = copy(web.url("d/f.root"), local_se.url("f.root"), expected_adler32=adler(data))
    assert result.adler32 == adler(data)
    with pytest.raises(StorageError) as err:
        copy(local_se.url("f.root"), web.url("d/g.root"))
    assert err.value.code == "read_only"
