"""The portal reaches storage only where the site allows: local storage elements under the
allowed roots, root:// and https:// to the allowed hosts (never loopback or private
addresses unless listed), plain http:// only when allowed. Refused when the storage element
is added (command, action, admin form) and again when it is used."""

from __future__ import annotations

import http.server
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from dmu import actions
from dmu.models import Dataset, StorageElement
from dmu.storage import UrlPolicy
from dss.errors import InvalidInput

pytestmark = pytest.mark.django_db


@pytest.fixture
def production_hosts(settings):
    """The production default: any public host, nothing else."""
    settings.DSS_STORAGE_HOSTS = ["*"]
    settings.DSS_STORAGE_ALLOW_HTTP = False


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://data.example.org/store", "http:// storage is not allowed"),
        ("root://127.0.0.1:1094//data", "loopback or private address"),
        ("https://localhost/store", "loopback or private address"),
        ("root://10.1.2.3:1094//data", "loopback or private address"),
        ("https://169.254.169.254/latest", "loopback or private address"),
        ("https://[::1]/x", "loopback or private address"),
        ("file:///etc", "must lie under an allowed root"),
        ("ftp://data.example.org/x", "unsupported storage URL scheme"),
    ],
)
def test_adding_a_storage_element_the_site_does_not_allow_is_refused(production_hosts, url, why):
    with pytest.raises(InvalidInput) as err:
        actions.do_add_storage_element("BAD", url)
    assert why in err.value.message and err.value.where == "url"
    assert not StorageElement.objects.exists()


def test_the_command_refuses_it_too(production_hosts):
    with pytest.raises(CommandError, match="loopback or private address"):
        call_command("add_storage_element", "BAD", "root://127.0.0.1:1094//data")
    assert not StorageElement.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "root://xrootd.example.org:1094//data",  # a public name (or one that does not resolve)
        "https://8.8.8.8/store",  # a public address
    ],
)
def test_public_hosts_are_allowed_by_the_wildcard(production_hosts, url):
    assert actions.do_add_storage_element("GOOD", url).url == url


def test_listed_private_hosts_networks_and_suffixes_are_allowed(settings):
    settings.DSS_STORAGE_HOSTS = ["10.0.0.0/8", "*.site.internal", "127.0.0.1"]
    actions.do_add_storage_element("A", "root://10.1.2.3:1094//data")
    actions.do_add_storage_element("B", "root://xrd.site.internal:1094//data")
    actions.do_add_storage_element("C", "root://127.0.0.1:1094//data")
    with pytest.raises(InvalidInput, match="not among the allowed storage hosts"):
        actions.do_add_storage_element("D", "root://xrootd.example.org:1094//data")


def test_plain_http_needs_the_setting_and_an_allowed_host(settings):
    settings.DSS_STORAGE_HOSTS = ["web.site.internal"]
    with pytest.raises(InvalidInput, match="DSS_STORAGE_ALLOW_HTTP"):
        actions.do_add_storage_element("WEB", "http://web.site.internal/store")
    settings.DSS_STORAGE_ALLOW_HTTP = True
    assert actions.do_add_storage_element("WEB", "http://web.site.internal/store")


def test_local_storage_must_lie_under_an_allowed_root(settings, tmp_path):
    settings.DSS_STORAGE_ROOT = tmp_path / "storage"
    settings.DSS_STORAGE_ROOTS = [str(tmp_path / "volumes")]
    actions.do_add_storage_element("A", (tmp_path / "storage" / "se").as_uri())
    actions.do_add_storage_element("B", (tmp_path / "volumes" / "v1").as_uri())
    with pytest.raises(InvalidInput, match="must lie under an allowed root"):
        actions.do_add_storage_element("C", (tmp_path / "elsewhere").as_uri())
    with pytest.raises(InvalidInput, match="clean absolute path"):
        actions.do_add_storage_element("D", f"file://{tmp_path}/storage/../elsewhere")


def test_the_admin_form_refuses_a_url_the_site_does_not_allow(production_hosts, django_user_model):
    root = django_user_model.objects.create_superuser("root", "r@example.org", "pw")
    c = Client()
    c.force_login(root)
    r = c.post(
        "/admin/dmu/storageelement/add/",
        {
            "name": "BAD",
            "url": "http://127.0.0.1:8080/x",
            "description": "",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
        },
    )
    assert r.status_code == 200 and "http:// storage is not allowed" in r.content.decode()
    assert not StorageElement.objects.exists()


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server calls
        _Counting.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"root")

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def inner_web_server():
    """An HTTP server on loopback that counts the requests it gets."""
    _Counting.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_storage_element_recorded_before_is_refused_at_use_and_never_fetched(
    production_hosts, inner_web_server, siteadmin, scheme
):
    # a row from before the policy (or made by hand): the portal refuses to use it
    StorageElement.objects.create(name="INNER", url=f"{scheme}://{inner_web_server}/store")
    c = Client()
    c.force_login(siteadmin)
    r = c.post(
        "/api/datasets/register/",
        {"dataset": "data24.inner", "storage_element": "INNER", "paths": ["a.root"]},
        content_type="application/json",
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid", r.content
    assert "not allowed" in r.json()["detail"] or "private" in r.json()["detail"]
    assert _Counting.hits == [] and not Dataset.objects.exists()


def test_a_name_is_judged_by_the_addresses_it_resolves_to():
    policy = UrlPolicy(hosts=("*",))
    with pytest.raises(InvalidInput, match="loopback or private address"):
        policy.check("root://localhost:1094//data")
    UrlPolicy(hosts=("*", "localhost")).check("root://localhost:1094//data")
    UrlPolicy(hosts=("*", "127.0.0.0/8")).check("root://localhost:1094//data")


class _Redirecting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the name http.server calls
        _Redirecting.hits.append(self.path)
        if self.path.startswith("/store/"):
            self.send_response(302)
            self.send_header("Location", "/inner/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"secret")

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


def test_storage_reads_do_not_follow_a_redirect():
    """A storage server that answers with a redirect does not lead the portal elsewhere."""
    from dmu.storage import StorageEndpoint
    from dss.errors import DSSError

    _Redirecting.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        policy = UrlPolicy(hosts=("127.0.0.1",), allow_http=True)
        se = StorageEndpoint(f"http://{host}/store", policy=policy)
        try:
            with se.open_read("a.root") as fh:
                data = fh.read()
        except DSSError:
            data = b""
        assert b"secret" not in data
        assert _Redirecting.hits and all(h.startswith("/store/") for h in _Redirecting.hits)
    finally:
        server.shutdown()
