"""What the catalog needs to know of a ROOT event file, read with uproot (no Django import).

The GUID of a file is the ROOT file's own UUID; the event count is the number of entries of
its event tree. A file that is not ROOT, is truncated, or has no usable tree is a
``BadEventFile`` that names the file and the reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import uproot

from dss.errors import BadEventFile

DEFAULT_TREE = "events"


@dataclass(frozen=True)
class RootFileInfo:
    guid: str
    tree: str
    events: int
    branches: tuple[str, ...]


def _trees(root_dir) -> list[str]:
    return sorted(
        {
            k.split(";")[0]
            for k, cls in root_dir.classnames(recursive=True).items()
            if cls in ("TTree", "ROOT::RNTuple")
        }
    )


def inspect_root_file(source: Any, name: str, size: int, tree: str | None = None) -> RootFileInfo:
    """Open ``source`` (a local path or a seekable binary file object) and describe it.

    ``name`` is only used in error messages; ``size`` is the file's real length in bytes,
    checked against the length the ROOT header declares so that a truncated copy is caught
    before anything reads past its end.
    """
    _check_header(source, name, size)
    try:
        f = uproot.open(source)
    except Exception as e:  # uproot raises many types for damaged input
        raise BadEventFile(f"damaged ROOT file ({_short(e)})", where=name) from None
    try:
        guid = str(f.file.uuid)
        try:
            trees = _trees(f)
        except Exception as e:
            raise BadEventFile(
                f"cannot read the file's directory ({_short(e)})", where=name
            ) from None
        chosen = tree or (
            DEFAULT_TREE if DEFAULT_TREE in trees else (trees[0] if len(trees) == 1 else None)
        )
        if chosen is None:
            if not trees:
                raise BadEventFile("holds no event tree (no TTree)", where=name)
            raise BadEventFile(
                f"holds several trees ({', '.join(trees)}); say which one with --tree", where=name
            )
        if chosen not in trees:
            raise BadEventFile(
                f"has no tree {chosen!r} (trees: {', '.join(trees) or 'none'})", where=name
            )
        try:
            t = f[chosen]
            events = int(t.num_entries)
            branches = tuple(t.keys(recursive=False)) if hasattr(t, "keys") else ()
        except Exception as e:
            raise BadEventFile(f"cannot read tree {chosen!r} ({_short(e)})", where=name) from None
        return RootFileInfo(guid=guid, tree=chosen, events=events, branches=branches)
    finally:
        f.close()


def _check_header(source: Any, name: str, size: int) -> None:
    """Reject non-ROOT and truncated files from the header alone, with a precise reason.

    The header starts with ``root``, a version, then fBEGIN and fEND (32-bit, or 64-bit for
    version >= 1000000): a file shorter than fEND was cut short.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        with open(source, "rb") as fh:
            head = fh.read(32)
    else:
        pos = source.tell()
        head = source.read(32)
        source.seek(pos)
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


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
