"""Skims with a good-run list: through the TAG DB and by a scan, from the API, the form and
the dss command line; the list is recorded, shown in provenance, part of the identical-
request hash, and the runs an input lacks are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from django.test import Client
from rest_framework.test import APIClient

from dmu import actions as dmu_actions
from skims import actions
from skims.models import SkimJob
from tagdb.goodruns import parse_good_run_list
from tests.conftest import ROOT, api_token
from tests.skims.test_skim_correctness import outputs, run_skim, submit
from tests.tagdb import goodruns_data as data
from tests.tagdb.goodruns_data import write_lumi_file
from tests.tagdb.portal import lumi  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def expected_keep(events, cut: float = 20.0) -> np.ndarray:
    return data.expected_mask(events["Run"], events["LumiBlock"]) & (events["pt"] > cut)


@pytest.fixture
def lumi_scan(local_se, storage_root):
    """The same events as a dataset without TAGs (skimmed by a scan)."""
    write_lumi_file(storage_root / "data99" / "scan.root")
    dataset, _ = dmu_actions.check_register_dataset(
        "data99.lumi_scan", local_se, ["data99/scan.root"]
    )
    return dataset


def test_a_skim_keeps_only_the_good_runs_through_tags_and_by_scan(
    lumi,  # noqa: F811
    lumi_scan,
    physicist,
):
    events = data.lumi_events()
    keep = expected_keep(events)
    missing = data.missing_runs(events["Run"])
    through_tags = run_skim(
        submit(
            physicist,
            [actions.InputSpec(lumi.dataset, lumi)],
            "pt > 20",
            "user.phys.grl_tags",
            good_runs=data.atlas_xml(),
        )
    )
    by_scan = run_skim(
        submit(
            physicist,
            [actions.InputSpec(lumi_scan, None)],
            "pt > 20",
            "user.phys.grl_scan",
            good_runs=data.cms_json(),
        )
    )
    for skim in (through_tags, by_scan):
        assert skim.state == "succeeded", skim.message
        assert skim.events_selected == skim.events_written == int(keep.sum())
        out = outputs(skim)
        assert out["Event"].tolist() == events["Event"][keep].tolist()
        assert parse_good_run_list(skim.good_runs).runs == parse_good_run_list(data.cms_json()).runs
        warnings = actions.skim_warnings(skim)
        assert warnings == [
            f"{len(missing)} runs of the GRL are not in {skim.inputs.get().dataset.name}: "
            + ", ".join(map(str, missing[:20]))
            + f" and {len(missing) - 20} more"
        ]
        record = skim.provenance
        assert record.options["good_runs"] == skim.good_runs
        assert "good_runs" in json.loads(
            actions.prov_json(record)["activity"][f"dss:skim-{skim.pk}"]["dss:options"]
        )


def test_the_identical_request_hash_includes_the_list(lumi, physicist):  # noqa: F811
    inputs = [actions.InputSpec(lumi.dataset, lumi)]
    xml, cms = parse_good_run_list(data.atlas_xml()), parse_good_run_list(data.cms_json())
    other = parse_good_run_list('{"200250": [[1, 400]]}')
    plain = actions.request_hash(inputs, "pt > 20", [], "root", None)
    assert actions.request_hash(inputs, "pt > 20", [], "root", None, xml) != plain
    assert actions.request_hash(inputs, "pt > 20", [], "root", None, xml) == (
        actions.request_hash(inputs, "pt > 20", [], "root", None, cms)
    )
    assert actions.request_hash(inputs, "pt > 20", [], "root", None, other) != (
        actions.request_hash(inputs, "pt > 20", [], "root", None, xml)
    )
    first = run_skim(submit(physicist, inputs, "pt > 20", "user.phys.g1", good_runs=cms))
    assert first.state == "succeeded", first.message
    with pytest.raises(actions.IdenticalSkim):
        submit(physicist, inputs, "pt > 20", "user.phys.g2", good_runs=data.atlas_xml())
    # Without the list, or with another, it is another request.
    assert submit(physicist, inputs, "pt > 20", "user.phys.g3").good_runs is None
    assert submit(physicist, inputs, "pt > 20", "user.phys.g4", good_runs=other.to_json())
    rerun = actions.do_rerun(first.provenance, physicist)
    assert rerun.good_runs == first.good_runs


def api(user) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return c


def test_the_api_takes_a_list_and_refuses_a_malformed_one(lumi, hzz_tags, physicist):  # noqa: F811
    body = {"collections": [lumi.pk], "selection": "pt > 20", "output_name": "user.phys.api"}
    r = api(physicist).post("/api/skims/", {**body, "good_runs": data.atlas_xml()}, format="json")
    assert r.status_code == 201, r.json()
    created = r.json()
    assert len(created["good_runs"]) == 500
    assert created["warnings"][0].startswith("300 runs of the GRL are not in data99.lumi: ")
    bad = "<LumiRangeCollection>\n<LumiBlockCollection><Run>1</Run>\n</LumiRangeCollection>"
    r = api(physicist).post(
        "/api/skims/", {**body, "output_name": "user.phys.bad", "good_runs": bad}, format="json"
    )
    assert r.status_code == 400 and r.json()["where"] == "line 3"
    assert "mismatched tag" in r.json()["detail"]
    r = api(physicist).post(
        "/api/skims/",
        {
            "collections": [hzz_tags.pk],
            "selection": "n_muon >= 2",
            "output_name": "user.phys.norun",
            "good_runs": {"1": [[1, 2]]},
        },
        format="json",
    )
    assert r.status_code == 400 and "demo.hzz has no run numbers" in r.json()["detail"]
    assert not SkimJob.objects.filter(output_name__in=["user.phys.bad", "user.phys.norun"])


def test_the_form_takes_a_list_file_and_the_pages_show_it(lumi, physicist, operator):  # noqa: F811
    from django.core.files.uploadedfile import SimpleUploadedFile

    c = Client()
    c.force_login(physicist)
    r = c.post(
        "/skims/new/",
        {
            "collections": [lumi.pk],
            "selection": "pt > 20",
            "content": "all",
            "output_format": "root",
            "output_name": "user.phys.form_grl",
            "output_se": "LOCAL",
            "failure_policy": "fail",
            "good_runs_file": SimpleUploadedFile("grl.xml", data.atlas_xml().encode()),
        },
    )
    skim = SkimJob.objects.get(output_name="user.phys.form_grl")
    assert r.status_code == 302
    page = c.get(r.url).content.decode()
    assert "500 runs, 10,000 luminosity-block ranges" in page
    assert "300 runs of the GRL are not in data99.lumi" in page  # a message and the log
    run_skim(skim)
    reader = Client()
    reader.force_login(operator)
    record = reader.get(f"/provenance/{skim.provenance.pk}/").content.decode()
    assert "good-run list" in record and "500 runs, 10,000 luminosity-block ranges" in record
    r = c.post(
        "/skims/new/",
        {
            "collections": [lumi.pk],
            "selection": "pt > 20",
            "content": "all",
            "output_format": "root",
            "output_name": "user.phys.form_bad",
            "output_se": "LOCAL",
            "failure_policy": "fail",
            "good_runs": '{"200200": [[5, 1]]}',
        },
    )
    html = r.content.decode()
    assert r.status_code == 200 and "run 200200: block [5, 1] ends before it starts" in html


def test_dss_skim_submit_takes_a_list_file(live_server, lumi, physicist, tmp_path):  # noqa: F811
    grl = tmp_path / "grl.xml"
    grl.write_text(data.atlas_xml())
    token = api_token(physicist)
    env = {k: v for k, v in os.environ.items() if k not in ("DSS_URL", "DSS_TOKEN")}
    argv = [sys.executable, "-m", "dss.cli", "--url", live_server.url, "--token", token]
    r = subprocess.run(
        [*argv, "--json", "skim", "submit", "-c", str(lumi.pk), "-s", "pt > 20"]
        + ["-o", "user.phys.cli_grl", "--grl", str(grl)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "dss: warning: 300 runs of the GRL are not in data99.lumi: 200400, 200401" in r.stderr
    skim = SkimJob.objects.get(pk=json.loads(r.stdout)["id"])
    assert len(skim.good_runs) == 500
    skim = run_skim(skim)
    assert skim.events_written == int(expected_keep(data.lumi_events()).sum())
    r = subprocess.run(
        [*argv, "skim", "submit", "-c", str(lumi.pk), "-s", "pt > 20", "-o", "user.phys.x"]
        + ["--grl", str(tmp_path / "absent.xml")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 2 and "cannot read the good-run list" in r.stderr
