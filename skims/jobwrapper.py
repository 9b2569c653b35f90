"""The job wrapper: runs one skim part as a batch job on a site's worker node.

Plain Python (the standard library, the ``dmu`` client and :mod:`skims.eventio`; no
Django), started by the batch system with ``--spec job.json``, the description of the part
the portal wrote into the job's work directory. It

1. stages each input in with the DMU (``dmu get``'s :func:`dmu.cli.fetch_file`: the best
   available replica, verified against the catalog's adler32 and size), or, when the site
   reads remotely, opens the input's root:// replica where it is;
2. writes the part's output with :func:`skims.eventio.write_part`, the code the portal's
   workers run;
3. stores the output on the output storage element with the DMU's verified copy (what
   ``dmu put`` runs), as a temporary beside its final name that the portal publishes;
4. posts its outcome once to the portal with the job's one-time token
   (``Authorization: SkimJob <token>``), as pilots do. The portal checks the stored
   output against what the job reports before it accepts it.

A job that cannot reach the portal says so on its error log and exits 3, and the portal,
following the batch system, fails the job with that reason.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmu.cli import fetch_file
from dmu.eventfiles import open_event_file
from dmu.storage import StorageEndpoint
from dmu.transfer import copy
from dss.errors import BadEventFile, DSSError, InvalidInput, StorageError
from skims import eventio

EXIT_REPORT_FAILED = 3
REPORT_TRIES = 4
PREFIX = "dss-skim-job"


def say(message: str) -> None:
    print(f"{PREFIX}: {message}", file=sys.stderr, flush=True)


def entries_of(spec_input: dict) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(spec_input["entries"])), np.int64)


def remote_replica(f: dict) -> str | None:
    """The URL of an available replica read over the network (root://), if any."""
    for r in f.get("replicas") or []:
        if r.get("state", "available") == "available" and str(r.get("url", "")).startswith(
            ("root://", "xroot://")
        ):
            return r["url"]
    return None


def part_inputs(spec: dict, scratch: Path, how: list[dict]) -> Iterator[eventio.PartInput]:
    """Each input of the part, staged in (or opened remotely) when its turn comes, and
    removed from scratch once written."""
    for n, f in enumerate(spec["inputs"]):
        local: Path | None = None
        url = remote_replica(f) if spec.get("read") == "remote" else None
        if url is not None:
            location, where = url, url
            how.append({"lfn": f["lfn"], "read": "remote", "url": url})
        else:
            local = scratch / f"input-{n}{Path(f['lfn']).suffix}"
            result = fetch_file(f, str(local), overwrite=True)
            location, where = str(local), f["lfn"]
            how.append({"lfn": f["lfn"], "read": "copy", "adler32": result.adler32})
            say(f"staged in {f['lfn']} ({result.bytes} bytes, adler32 {result.adler32} verified)")
        handle = open_event_file(location, where)
        try:
            tree = handle.tree(f["tree"])
            yield eventio.PartInput(handle, tree, f["tree"], entries_of(f), where, f["lfn"])
        finally:
            handle.close()
            if local is not None:
                local.unlink(missing_ok=True)


def run_part(spec: dict, scratch: Path) -> dict[str, Any]:
    """Stage in, skim, store: what the job reports when it succeeds."""
    out = spec["output"]
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"output{Path(out['lfn']).suffix}"
    how: list[dict] = []
    limits = eventio.CopyLimits(**spec["limits"])
    try:
        written, copied = eventio.write_part(
            str(tmp),
            part_inputs(spec, scratch, how),
            fmt=out["format"],
            tree_name=out["tree"],
            chunk=int(spec["chunk"]),
            events=int(spec["events"]),
            branches=spec["branches"],
            copy_objects=spec["copy_objects"],
            limits=limits,
        )
        say(f"wrote {written.events} events to {tmp.name} ({written.bytes} bytes)")
        stored = copy(
            "file://" + str(tmp.resolve()),
            (StorageEndpoint(out["url"]), out["path"]),
            expected_bytes=written.bytes,
            overwrite=True,
            temp_tag=out["tag"],
            publish=False,
        )
    except OSError as e:
        raise StorageError(
            f"writing the output failed: {e.strerror or e}", where=out["lfn"]
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    say(f"stored the output on {out['storage_element']} (adler32 {stored.adler32} verified)")
    return {
        "state": "done",
        "guid": written.guid,
        "events": written.events,
        "bytes": stored.bytes,
        "adler32": stored.adler32,
        "copied": copied,
        "inputs": how,
    }


def post_report(spec: dict, report: dict, tries: int = REPORT_TRIES) -> str:
    """Post the report; '' when accepted, else why not (after retrying what may pass)."""
    body = json.dumps(report).encode()
    error = ""
    for attempt in range(tries):
        request = urllib.request.Request(
            spec["report_url"],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"SkimJob {spec['token']}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                say(f"report accepted: HTTP {answer.status}")
                return ""
        except urllib.error.HTTPError as e:
            detail = e.read(2000).decode("utf-8", "replace")
            error = f"the portal refused the report: HTTP {e.code} {detail}"
            if e.code < 500:
                return error
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            error = f"cannot reach the portal at {spec['report_url']}: {reason}"
        if attempt + 1 < tries:
            time.sleep(min(2**attempt, 8))
    return error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PREFIX, description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="the job's description (JSON)")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    node = socket.gethostname()
    say(f"part {spec['part']} of skim #{spec['skim']} (job {spec['job']}) on {node}")
    try:
        # local scratch: the node's temporary directory, or the site's DSS_SKIM_SCRATCH
        scratch = Path(
            tempfile.mkdtemp(
                prefix=f"dss-skim-job-{spec['job']}-", dir=os.environ.get("DSS_SKIM_SCRATCH")
            )
        )
        try:
            report = run_part(spec, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except (BadEventFile, InvalidInput) as e:
        # the same on any node: another site would fail the same way
        report = {"state": "failed", "reason": str(e), "data_error": True}
    except DSSError as e:
        report = {"state": "failed", "reason": str(e)}
    except Exception as e:  # what the portal should read, whatever it was
        report = {"state": "failed", "reason": f"{type(e).__name__}: {e}"}
    report["node"] = node
    if report["state"] == "failed":
        say(f"the part failed: {report['reason']}")
    problem = post_report(spec, report)
    if problem:
        say(problem)
        return EXIT_REPORT_FAILED
    return 0 if report["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
