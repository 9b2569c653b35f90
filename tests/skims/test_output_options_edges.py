"""The output tree's name, the objects copied along and the merge target at every edge: the
REST API, the skim form and its pages, and the dss command line on a live portal."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from skims.models import SkimJob
from tests.conftest import api_token
from tests.skims.test_skim_correctness import run_skim
from tests.skims.test_skim_live import dss

pytestmark = pytest.mark.django_db(transaction=True)


def api(user) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def request(**options) -> dict:
    return {
        "datasets": ["demo.nano"],
        "selection": "nmuon >= 2",
        "output_name": "user.phys.api_opts",
        **options,
    }


def test_the_api_takes_the_tree_objects_and_merge_target(nano, physicist):
    r = api(physicist).post(
        "/api/skims/",
        request(output_tree="mu", copy_objects=["Runs", "cutflow"], merge_mb=0.2),
        format="json",
    )
    assert r.status_code == 201, r.json()
    body = r.json()
    assert (body["output_tree"], body["copy_objects"], body["merge_mb"]) == (
        "mu",
        ["Runs", "cutflow"],
        0.2,
    )
    skim = run_skim(SkimJob.objects.get(pk=body["id"]))
    assert skim.state == "succeeded", skim.message
    body = api(physicist).get(f"/api/skims/{skim.pk}/").json()
    merged = [p for p in body["parts"] if len(p["inputs"]) > 1]
    assert merged and merged[0]["inputs"][0] == merged[0]["input_lfn"]
    assert sorted(sum((p["inputs"] for p in body["parts"]), [])) == [
        f"nano_{i}.root" for i in range(6)
    ]
    assert all(p["copied"] == ["Runs", "cutflow"] for p in body["parts"])


@pytest.mark.parametrize(
    "options, where, detail",
    [
        ({"output_tree": "my tree"}, "output_tree", "cannot name a tree"),
        ({"copy_objects": ["Lumis"]}, "copy_objects", "no object matches 'Lumis'"),
        ({"copy_objects": ["notes"]}, "copy_objects", "(TObjString) cannot be copied along"),
        (
            {"copy_objects": ["Runs"], "output_format": "parquet"},
            "copy_objects",
            "a Parquet output holds only its event table",
        ),
        ({"merge_mb": 0}, "merge_mb", "the merge target is a size in MB"),
        ({"merge_mb": "lots"}, "merge_mb", "valid number"),
    ],
)
def test_bad_output_options_get_a_json_400_naming_the_field(
    nano, physicist, options, where, detail
):
    r = api(physicist).post("/api/skims/", request(**options), format="json")
    assert r.status_code == 400, r.content
    body = r.json()
    assert detail in body["detail"] and where in (body.get("where") or body["detail"])
    assert not SkimJob.objects.exists()


def form(**fields) -> dict:
    return {
        "datasets": ["demo.nano"],
        "selection": "nmuon >= 2",
        "content": "all",
        "output_format": "root",
        "output_name": "user.phys.form_opts",
        "output_se": "LOCAL",
        "failure_policy": "fail",
        **fields,
    }


def test_the_form_submits_the_options_and_the_pages_show_them(nano, physicist, operator):
    c = Client()
    c.force_login(physicist)
    r = c.post(
        "/skims/new/",
        form(output_tree="mu", copy_objects="Runs, cutflow*", merge_mb="0.2"),
    )
    skim = SkimJob.objects.get()
    assert r.status_code == 302, r.content.decode()[:2000]
    assert (skim.output_tree, skim.copy_objects, skim.merge_mb) == ("mu", ["Runs", "cutflow*"], 0.2)
    skim = run_skim(skim)
    assert skim.state == "succeeded", skim.message
    page = c.get(f"/skims/{skim.pk}/").content.decode()
    assert 'event tree <span class="mono">mu</span>' in page
    assert "Runs, cutflow*" in page and "into files of about 0.2 MB" in page
    assert "more</summary>" in page  # a merged part lists its further inputs

    c.force_login(operator)
    page = c.get(skim.provenance.get_absolute_url()).content.decode()
    assert "tree mu" in page and "copied along: Runs, cutflow*" in page
    assert "(merged from " in page
    assert page.count("nano_") >= 6  # every input file has its row


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"output_tree": "1st"}, "cannot name a tree"),
        ({"copy_objects": "Lumis"}, "no object matches"),
        ({"merge_mb": "-2"}, "the merge target is a size in MB"),
    ],
)
def test_the_form_shows_a_bad_option_beside_its_field(nano, physicist, fields, message):
    c = Client()
    c.force_login(physicist)
    r = c.post("/skims/new/", form(**fields))
    assert r.status_code == 200 and message in r.content.decode()
    (field,) = fields
    assert message in " ".join(r.context["form"].errors[field])  # shown beside its field
    assert not SkimJob.objects.exists()


@pytest.fixture
def live_nano(live_server, nano, physicist, celery_worker):
    return live_server.url, api_token(physicist)


def test_the_cli_names_the_tree_copies_objects_and_merges(live_nano):
    url, token = live_nano
    r = dss(
        url,
        token,
        "--json",
        "skim",
        "submit",
        "-d",
        "demo.nano",
        "-s",
        "nmuon >= 2",
        "-o",
        "user.phys.cli_opts",
        "--tree",
        "mu",
        "--copy",
        "Runs",
        "--copy",
        "cutflow*,hists/*",
        "--merge-mb",
        "100",
        "--watch",
    )
    assert r.returncode == 0, r.stderr
    skim = json.loads(r.stdout)
    assert skim["state"] == "succeeded", skim["message"]
    assert (skim["output_tree"], skim["copy_objects"], skim["merge_mb"]) == (
        "mu",
        ["Runs", "cutflow*", "hists/*"],
        100.0,
    )
    assert len(skim["parts"]) == 1 and len(skim["parts"][0]["inputs"]) == 6
    r = dss(url, token, "skim", "status", str(skim["id"]))
    assert "(root, tree mu)" in r.stdout and "copied     Runs, cutflow*, hists/*" in r.stdout
    assert "merged     into files of about 100 MB" in r.stdout
    assert "nano_0.root and 5 more →" in r.stdout

    r = dss(url, token, "skim", "submit", "-d", "demo.nano", "-s", "nmuon >= 2", "-o",
            "user.phys.cli_bad", "--tree", "a/b")  # fmt: skip
    assert r.returncode == 2 and "output_tree" in r.stderr and "cannot name a tree" in r.stderr
    r = dss(url, token, "skim", "submit", "-d", "demo.nano", "-s", "nmuon >= 2", "-o",
            "user.phys.cli_bad", "--copy", "Lumis")  # fmt: skip
    assert r.returncode == 2 and "no object matches 'Lumis'" in r.stderr
