"""Luminosity and data quality from conditions payloads, and good-run lists made of them.

Payload files are JSON on a storage element, written through the DMU (a deterministic
path, a temporary name published in one step, read back and checked against its adler32
before the IOV that points at it is inserted). Both kinds hold values per run and
luminosity block::

    lumi: {"unit": "pb^-1", "runs": {"358031": {"1": 0.0123, "2": 0.0125, ...}}}
    dq:   {"runs": {"358031": {"1": {"pixel": "good", "muon": "bad"}, ...}}}

A value counts only inside the IOV that points at its file, so a newer IOV over part of a
run shadows the older file there. A good-run list comes out as ``{"run": [[first, last],
...]}`` (inclusive ranges), the JSON format that TAG queries and skims accept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from django.db.models import Q

from dmu.checksum import checksum_chunks
from dmu.models import StorageElement
from dmu.storage import deterministic_path
from dss.errors import ChecksumMismatch, InvalidInput, NotFound

from . import actions
from .models import GlobalTag, PayloadIOV

LUMI = "lumi"
DQ = "dq"
GOOD = "good"


# --------------------------------------------------------------------------- payload files


def do_store_payload(se: StorageElement, type_name: str, content: bytes) -> tuple[str, str, int]:
    """Write ``content`` to ``se`` at a path that follows from the type and the content's
    digest, verify it by reading it back, and return (url, adler32, size). The same
    content is stored once."""
    adler, size, _ = checksum_chunks([content])
    digest = hashlib.sha256(content).hexdigest()
    rel = deterministic_path("conditions", f"{type_name}.{digest[:32]}.json")
    endpoint = se.endpoint()
    if not endpoint.exists(rel):
        temp = endpoint.open_write_temp(rel)
        with temp:
            temp.write(content)
            temp.close()
        try:
            endpoint.publish(temp.temp, rel)
        except Exception:
            if not endpoint.exists(rel):  # another writer of the same content won: fine
                raise
    stored, stored_size, _ = checksum_chunks(endpoint.read_chunks(rel))
    if (stored, stored_size) != (adler, size):
        raise ChecksumMismatch(
            f"stored payload reads back as adler32 {stored} ({stored_size} bytes), "
            f"not {adler} ({size} bytes)",
            where=endpoint.url(rel),
        )
    return endpoint.url(rel), adler, size


def read_payload(iov: PayloadIOV) -> dict:
    """The JSON content of ``iov``'s payload file, checked against its adler32."""
    for se in StorageElement.objects.all():
        base = se.url.rstrip("/") + "/"
        if iov.payload_url.startswith(base):
            endpoint = se.endpoint()
            rel = iov.payload_url[len(base) :].lstrip("/")
            data = b"".join(endpoint.read_chunks(rel))
            adler, _, _ = checksum_chunks([data])
            if adler != iov.checksum:
                raise ChecksumMismatch(
                    f"payload reads as adler32 {adler}, not {iov.checksum}", where=iov.payload_url
                )
            return json.loads(data)
    raise NotFound("no storage element holds this payload", where=iov.payload_url)


def do_put_run_values(
    user, gt: GlobalTag, type_name: str, se: StorageElement, run: int, values: dict
) -> PayloadIOV:
    """Store one run's per-lumiblock values (lumi: a number; dq: {flag: status}) as a
    payload file and insert it into ``gt`` valid for the whole run."""
    actions.check_may_write(user)
    actions.check_iov_number(run, "run")
    clean = {str(actions.check_iov_number(int(lb), "lumiblock")): v for lb, v in values.items()}
    content = {"runs": {str(run): clean}}
    if type_name == LUMI:
        if not all(isinstance(v, int | float) and v >= 0 for v in clean.values()):
            raise InvalidInput("luminosity values are numbers >= 0", where="values")
        content["unit"] = "pb^-1"
    body = json.dumps(content, sort_keys=True).encode()
    url, adler, size = do_store_payload(se, type_name, body)
    return actions.do_insert_iov(user, gt, type_name, url, adler, (run, 0), (run + 1, 0), size)


def values_in(
    gt: GlobalTag, type_name: str, runs: set[int] | None = None
) -> Iterable[tuple[int, int, object]]:
    """(run, lumiblock, value) of every value of ``gt``'s ``type_name`` payloads that lies
    inside the IOV pointing at its file; with ``runs``, only payloads whose IOV covers one
    of them are read."""
    iovs = PayloadIOV.objects.filter(
        payload_list__global_tag=gt, payload_list__payload_type__name=type_name
    ).order_by("major_iov", "minor_iov")
    if runs is not None:
        if not runs:
            return
        iovs = iovs.filter(major_iov__lte=max(runs)).filter(
            Q(major_iov_end__isnull=True) | Q(major_iov_end__gte=min(runs))
        )
    for iov in iovs:
        if runs is not None and not any(_covers_run(iov, run) for run in runs):
            continue
        content = read_payload(iov)
        for run_text, by_lb in content.get("runs", {}).items():
            run = int(run_text)
            for lb_text, value in by_lb.items():
                point = (run, int(lb_text))
                if point >= iov.start and (iov.end is None or point < iov.end):
                    yield run, point[1], value


def good_run_list(gt: GlobalTag, flags: list[str]) -> dict[str, list[list[int]]]:
    """The runs and lumiblocks where every one of ``flags`` is "good" in ``gt``'s dq
    payloads, as ``{"run": [[first, last], ...]}``."""
    if not flags or not all(isinstance(f, str) and f for f in flags):
        raise InvalidInput("name at least one data-quality flag", where="flags")
    good: dict[int, list[int]] = {}
    for run, lb, status in values_in(gt, DQ):
        if isinstance(status, dict) and all(status.get(f) == GOOD for f in flags):
            good.setdefault(run, []).append(lb)
    return {str(run): _ranges(sorted(good[run])) for run in sorted(good)}


def _ranges(lbs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for lb in lbs:
        if out and lb == out[-1][1] + 1:
            out[-1][1] = lb
        elif not out or lb > out[-1][1]:
            out.append([lb, lb])
    return out


def integrated_luminosity(gt: GlobalTag, grl: dict) -> dict:
    """The integrated luminosity of the lumiblocks of ``grl`` ({"run": [[first, last]]})
    from ``gt``'s lumi payloads, and the listed blocks that have no luminosity value."""
    wanted: dict[int, list[tuple[int, int]]] = {}
    try:
        for run, ranges in grl.items():
            wanted[int(run)] = [(int(lo), int(hi)) for lo, hi in ranges]
    except (AttributeError, TypeError, ValueError):
        raise InvalidInput(
            'a good-run list is {"run": [[first, last], ...]}', where="grl"
        ) from None
    total, seen = 0.0, 0
    for run, lb, value in values_in(gt, LUMI):
        if any(lo <= lb <= hi for lo, hi in wanted.get(run, ())):
            total += float(value)
            seen += 1
    listed = sum(hi - lo + 1 for ranges in wanted.values() for lo, hi in ranges)
    return {"luminosity": total, "unit": "pb^-1", "lumiblocks": seen, "missing": listed - seen}


def _covers_run(iov: PayloadIOV, run: int) -> bool:
    """Whether some lumiblock of ``run`` lies inside ``iov``."""
    return iov.major_iov <= run and (iov.end is None or iov.end > (run, 0))


# A summary lists at most this many of the blocks without a luminosity value.
MISSING_LISTED = 20


def luminosity_of_blocks(gt: GlobalTag, blocks: Iterable[tuple[int, int]]) -> dict:
    """The integrated luminosity of the distinct (run, lumiblock) pairs ``blocks`` from
    ``gt``'s lumi payloads (what iLumiCalc gives for the blocks a selection's events fall
    in). Blocks with no luminosity value are counted in ``missing`` (the first
    :data:`MISSING_LISTED` of them in ``missing_blocks``), never dropped silently."""
    wanted = {(int(run), int(lb)) for run, lb in blocks}
    total, found = 0.0, set()
    for run, lb, value in values_in(gt, LUMI, {run for run, _ in wanted}):
        point = (run, lb)
        if point in wanted and point not in found:
            total += float(value)
            found.add(point)
    missing = sorted(wanted - found)
    return {
        "global_tag": gt.name,
        "luminosity": total,
        "unit": "pb^-1",
        "lumiblocks": len(wanted),
        "with_value": len(found),
        "missing": len(missing),
        "missing_blocks": [list(p) for p in missing[:MISSING_LISTED]],
    }
