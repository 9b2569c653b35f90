"""What the benchmarks under bench/ share: the machine they ran on, the load before a
measurement, the median and spread of repeated timings, and writing a results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: a busy machine makes every figure slower."""
    return [round(x, 2) for x in os.getloadavg()]


def spread(values: Sequence[float], digits: int = 3) -> dict:
    """Median, min and max of repeated measurements, and the values themselves."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def machine() -> dict:
    """Where the figures were taken."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
