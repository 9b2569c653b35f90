"""Failpoints: named places in long work where the fault suite pauses a real worker, so that
it can kill the worker exactly there (tests/faults/).

Inert unless the worker's environment sets ``DSS_FAILPOINTS``, e.g.
``DSS_FAILPOINTS="skim.part.stored=30"``: on reaching ``skim.part.stored`` the process
writes a marker file ``<DSS_FAILPOINT_DIR>/skim.part.stored.<pid>`` and sleeps 30 seconds
(long enough to be killed). Production workers never set it; a call costs one dictionary
lookup.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _points(spec: str) -> dict[str, float]:
    points = {}
    for item in spec.split(","):
        name, _, seconds = item.strip().partition("=")
        if name:
            points[name] = float(seconds or "60")
    return points


def reach(name: str) -> None:
    """Pause here if the fault suite asked for it (see the module docstring)."""
    spec = os.environ.get("DSS_FAILPOINTS")
    if not spec:
        return
    seconds = _points(spec).get(name)
    if seconds is None:
        return
    folder = Path(os.environ.get("DSS_FAILPOINT_DIR", "."))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{os.getpid()}").touch()
    time.sleep(seconds)
