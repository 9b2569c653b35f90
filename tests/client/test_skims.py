"""Skims from ``dss.Portal`` on a live portal with a real Celery worker: the output read
back (awkward, pandas, arrow, dask) equals uproot's own filter of the input, from a local
disk and from XRootD; waiting (also with asyncio), cancel, retry, provenance, repr."""

from __future__ import annotations

import asyncio

import awkward as ak
import pytest
import uproot

import dss
from dmu.checksum import file_checksum
from tests.conftest import HZZ
from tests.skims.conftest import same_events

BRANCHES = ["NMuon", "Muon_*"]


def uproot_dimuons() -> ak.Array:
    """What the skim must write: uproot's own reading of the demo file, filtered."""
    events = uproot.open(HZZ)["events"].arrays(filter_name=BRANCHES)
    return events[ak.num(events.Muon_Px) >= 2]


def test_a_skims_arrays_equal_uproots_own_filter_of_the_input(live, celery_worker):
    portal = live.portal()
    tags = portal.tags("demo.hzz")
    job = portal.skim(collections=[tags], selection="n_muon >= 2", branches=BRANCHES)
    assert job.output_name.startswith("user.phys.hzz.skim-") and job.state == "queued"
    assert job.wait() is job
    assert (job.state, job.events_written, job.events_selected) == ("succeeded", 1413, 1413)

    (f,) = job.files()
    assert f.events == 1413 and f.url.startswith("file://")
    path = f.url.removeprefix("file://")
    with open(path, "rb") as fh:
        adler32, nbytes, _ = file_checksum(fh)
    assert (f.checksum, f.bytes) == (f"adler32:{adler32}", nbytes)

    expected = uproot_dimuons()
    events = job.to_awkward()
    assert same_events(events, expected) and sorted(events.fields) == sorted(expected.fields)
    assert job.to_awkward(["Muon_Px"]).fields == ["Muon_Px"]
    with pytest.raises(dss.errors.InvalidInput) as bad:
        job.to_awkward(["Jet_*"])
    assert "no branch matches 'Jet_*'" in str(bad.value)

    frame = job.to_pandas()
    assert len(frame) == 1413 and list(frame["NMuon"]) == list(expected.NMuon)
    assert job.to_arrow(["NMuon"]).column_names == ["NMuon"]
    lazy = job.to_dask(["NMuon", "Muon_Px"])
    computed = lazy.compute()
    assert ak.all(computed.NMuon == expected.NMuon) and ak.all(
        ak.flatten(computed.Muon_Px) == ak.flatten(expected.Muon_Px)
    )

    assert "succeeded" in repr(job) and "1,413 of 1,413 events written" in repr(job)
    html = job._repr_html_()
    assert "succeeded" in html and "<progress value='1413' max='1413'>" in html
    assert "1 succeeded" in html  # the parts

    # provenance: the operator's to read; the physicist is told so
    with pytest.raises(dss.Forbidden) as refused:
        job.provenance()
    assert refused.value.status == 403 and "operator" in refused.value.detail
    seen = live.portal("oper").job(job.id)
    record = seen.provenance()
    assert record["skim"] == job.id and record["selection"] == "n_muon >= 2"
    assert record["outputs"][0]["guid"] == f.guid
    prov = seen.provenance("prov-json")
    assert f"dss:skim-{job.id}" in prov["activity"]
    assert [j.id for j in portal.jobs()] == [job.id]
    assert [t.id for t in portal.tag_collections("demo.hzz")] == [tags.id]

    # the same request again: the portal offers the existing output
    with pytest.raises(dss.IdenticalSkim) as same:
        portal.skim(collections=[tags], selection="n_muon >= 2", branches=BRANCHES)
    e = same.value
    assert (e.code, e.status, e.existing_id) == ("identical_skim", 409, job.id)
    assert e.existing.id == job.id and e.existing.output_dataset == job.output_dataset
    again = portal.skim(
        collections=[tags], selection="n_muon >= 2", branches=BRANCHES, force=True
    ).wait()
    assert again.id != job.id and again.events_written == 1413
    # an operator re-runs it from its provenance record, into the operator's scope
    rerun = seen.rerun().wait()
    assert rerun.output_name.startswith("user.oper.") and rerun.events_written == 1413


def test_two_skims_are_awaited_together(live, celery_worker):
    portal = live.portal()
    tags = portal.tags("demo.hzz")

    async def both():
        jobs = [
            portal.skim(collections=[tags], selection=s, branches=["NMuon"], format="parquet")
            for s in ("n_muon >= 2", "n_muon >= 3")
        ]
        return await asyncio.gather(*jobs)

    two, three = asyncio.run(both())
    assert (two.state, two.events_written) == ("succeeded", 1413)
    assert (three.state, three.events_written) == ("succeeded", tags.count("n_muon >= 3"))
    assert two.output_name != three.output_name
    assert list(three.to_awkward().NMuon) == list(
        uproot_dimuons().NMuon[uproot_dimuons().NMuon >= 3]
    )

    async def fails():
        job = portal.skim(collections=[tags], selection="n_muon > 50", output="user.phys.none")
        return await job

    with pytest.raises(dss.SkimFailed) as failed:
        asyncio.run(fails())
    assert failed.value.state == "failed" and "matches no events" in str(failed.value)
    assert failed.value.job.done


def test_a_skim_is_cancelled_waited_for_and_retried(live, request, capsys):
    portal = live.portal()
    job = live.portal().skim(
        collections=[live.tags_id], selection="n_muon >= 2", output="user.phys.again"
    )
    # no worker yet: the skim stays queued
    with pytest.raises(dss.StillRunning) as still:
        job.wait(timeout=0.5, progress=True)
    assert isinstance(still.value, TimeoutError) and "still queued" in str(still.value)
    assert f"skim #{job.id}" in capsys.readouterr().err
    with pytest.raises(dss.NotReady):
        job.files()

    assert job.cancel().state == "cancelled"
    with pytest.raises(dss.SkimFailed) as stopped:
        job.wait()
    assert stopped.value.state == "cancelled" and stopped.value.code == "skim_cancelled"
    with pytest.raises(dss.Conflict) as refused:
        job.cancel()
    assert refused.value.status == 409 and "already cancelled" in refused.value.detail

    request.getfixturevalue("celery_worker")
    assert job.retry().state in ("queued", "running")
    portal.job(job.id).wait()
    assert job.refresh().state == "succeeded" and job.events_written == 1413


def test_parquet_output_on_xrootd_is_streamed_and_downloaded_verified(
    live, xrootd_se, celery_worker, tmp_path, monkeypatch
):
    portal = live.portal()
    job = portal.skim(
        collections=[live.tags_id],
        selection="n_muon >= 2",
        branches=BRANCHES,
        format="parquet",
        storage_element="XRD",
        output="user.phys.xrd",
    ).wait()
    (f,) = job.files()
    assert f.url.startswith("root://") and f.lfn.endswith(".parquet")
    expected = uproot_dimuons()

    # by default, a replica on XRootD is read where it is: nothing is downloaded
    assert same_events(job.to_awkward(), expected)
    assert not (tmp_path / "cache").exists()
    assert same_events(job.to_awkward(via="stream"), expected)

    cache = tmp_path / "mine"
    (local,) = job.download(cache)
    assert local == cache / f.lfn
    with open(local, "rb") as fh:
        assert f"adler32:{file_checksum(fh)[0]}" == f.checksum
    assert same_events(job.to_awkward(via="download", cache=cache), expected)

    # a damaged copy in the cache is noticed by its checksum and fetched again
    data = bytearray(local.read_bytes())
    data[100] ^= 0xFF
    local.write_bytes(bytes(data))
    job.download(cache)
    with open(local, "rb") as fh:
        assert f"adler32:{file_checksum(fh)[0]}" == f.checksum

    # the default cache: under XDG_CACHE_HOME, one folder per dataset
    assert same_events(job.to_awkward(via="download"), expected)
    assert (tmp_path / "cache" / "dss" / "user.phys.xrd" / f.lfn).is_file()
    monkeypatch.setenv("DSS_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert job.download() == [tmp_path / "elsewhere" / "user.phys.xrd" / f.lfn]
