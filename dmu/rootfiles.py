"""What the ROOT header of an event file says, checked before uproot reads anything.

A ROOT file starts with ``root``, a version, then fBEGIN and fEND (32-bit, or 64-bit for
version >= 1000000): a file shorter than fEND was cut short. Reading the events themselves,
in every format, is :mod:`dmu.eventfiles`.
"""

from __future__ import annotations

import struct

from dss.errors import BadEventFile

DEFAULT_TREE = "events"


def check_root_header(head: bytes, name: str, size: int) -> None:
    """Reject non-ROOT and truncated files from the header's first 32 bytes, with a precise
    reason. ``name`` names the file in errors; ``size`` is its real length in bytes."""
    if len(head) < 4 or head[:4] != b"root":
        # Not its bytes: the message must not show what the file holds.
        raise BadEventFile(
            "not a ROOT file (it does not begin with the ROOT signature)", where=name
        )
    if len(head) < 20:
        raise BadEventFile(f"truncated: only {size} bytes, shorter than a ROOT header", where=name)
    (version,) = struct.unpack(">i", head[4:8])
    if version >= 1000000:
        (end,) = struct.unpack(">q", head[12:20])
    else:
        (end,) = struct.unpack(">i", head[12:16])
    if size < end:
        raise BadEventFile(
            f"truncated: {size} bytes on storage, the ROOT header declares {end}", where=name
        )


def short_reason(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), at most 200
    characters: enough to say what went wrong without a traceback's worth of text."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
