"""Event data with run, luminosity-block and event numbers, and good-run lists of real size
for it, in both formats (ATLAS XML and CMS JSON).

The events span runs 200000..200399 with blocks 1..400; the lists certify 500 runs,
200200..200699, with 20 ranges each, so half the runs of the data are in the lists and
300 runs of the lists are not in the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import uproot

N_EVENTS = 20_000
DATA_RUNS = (200_000, 200_400)  # first, one past last
LIST_RUNS = (200_200, 200_700)
RANGES_PER_RUN = 20


def lumi_events(seed: int = 7) -> dict[str, np.ndarray]:
    """The events' branches: Run, LumiBlock, Event (int64) and pt, eta (float64)."""
    rng = np.random.default_rng(seed)
    run = rng.integers(*DATA_RUNS, N_EVENTS).astype(np.int64)
    lumi = rng.integers(1, 401, N_EVENTS).astype(np.int64)
    return {
        "Run": run,
        "LumiBlock": lumi,
        "Event": np.arange(1, N_EVENTS + 1, dtype=np.int64) * 7,
        "pt": rng.exponential(30.0, N_EVENTS),
        "eta": rng.normal(0.0, 1.5, N_EVENTS),
    }


def write_lumi_file(path: Path, branches: dict[str, np.ndarray] | None = None) -> Path:
    """A ROOT file with tree ``events`` holding ``branches`` (default :func:`lumi_events`)."""
    branches = branches if branches is not None else lumi_events()
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {name: values.dtype for name, values in branches.items()})
        tree.extend(branches)
    return path


def list_ranges() -> dict[int, list[tuple[int, int]]]:
    """Each listed run's 20 ranges: blocks 1-7, 21-27, …, 381-387, shifted per run."""
    ranges = {}
    for run in range(*LIST_RUNS):
        shift = run % 5
        ranges[run] = [(lo + shift, lo + shift + 6) for lo in range(1, 401, 20)]
    return ranges


def cms_json() -> str:
    """The list as CMS golden JSON."""
    return json.dumps({str(run): [list(r) for r in rs] for run, rs in list_ranges().items()})


def atlas_xml() -> str:
    """The list as an ATLAS LumiRangeCollection, with the DOCTYPE and metadata real lists
    carry."""
    lines = [
        '<?xml version="1.0" ?>',
        '<!DOCTYPE LumiRangeCollection SYSTEM "http://atlas-runquery.cern.ch/LumiRangeCollection.dtd">',
        "<!-- Good-runs-list created for the tests -->",
        "<LumiRangeCollection>",
        "   <NamedLumiRange>",
        "      <Name>data99_13TeV.test_All_Good</Name>",
        "      <Version>2.1</Version>",
        '      <Metadata Name="Query">find run data99_13TeV and ready</Metadata>',
    ]
    for run, rs in list_ranges().items():
        lines.append("      <LumiBlockCollection>")
        lines.append(f'         <Run PrescaleRD0="8" PrescaleRD1="8">{run}</Run>')
        lines += [f'         <LBRange Start="{lo}" End="{hi}"/>' for lo, hi in rs]
        lines.append("      </LumiBlockCollection>")
    lines += ["   </NamedLumiRange>", "</LumiRangeCollection>", ""]
    return "\n".join(lines)


def expected_mask(run: np.ndarray, lumi: np.ndarray | None) -> np.ndarray:
    """Which events the lists keep, event by event in plain Python (the reference)."""
    ranges = list_ranges()
    keep = []
    for i, r in enumerate(run.tolist()):
        blocks = ranges.get(r)
        if blocks is None:
            keep.append(False)
        elif lumi is None:
            keep.append(True)
        else:
            keep.append(any(lo <= lumi[i] <= hi for lo, hi in blocks))
    return np.array(keep, dtype=bool)


def missing_runs(run: np.ndarray) -> list[int]:
    """The listed runs that ``run`` has no event of."""
    return sorted(set(range(*LIST_RUNS)) - set(run.tolist()))
