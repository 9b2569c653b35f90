"""The one checksum function of DSS: adler32 (and md5 where asked), computed while streaming.

Plain Python, no Django: used by the catalog, the transfer engine and the ``dmu`` CLI.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import BinaryIO

CHUNK = 8 * 1024 * 1024


class Adler32:
    """Running adler32 over chunks, formatted the way the data-management systems write it."""

    def __init__(self) -> None:
        self.value = 1
        self.nbytes = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self.value = zlib.adler32(chunk, self.value)
        self.nbytes += len(chunk)

    def hexdigest(self) -> str:
        return format_adler32(self.value)


def format_adler32(value: int) -> str:
    """Eight lower-case hex digits, zero-padded (``0001a2b3``)."""
    return f"{value & 0xFFFFFFFF:08x}"


def normalise_adler32(text: str) -> str:
    """Accept ``1a2b3`` or ``0x0001A2B3`` from other tools; return the canonical form."""
    t = text.strip().lower()
    if t.startswith("0x"):
        t = t[2:]
    if not t or len(t) > 8 or any(c not in "0123456789abcdef" for c in t):
        raise ValueError(f"not an adler32 checksum: {text!r}")
    return t.rjust(8, "0")


def checksum_chunks(chunks: Iterable[bytes], md5: bool = False) -> tuple[str, int, str | None]:
    """adler32 (and md5 when asked) and byte count of a stream of chunks."""
    a = Adler32()
    h = hashlib.md5() if md5 else None
    for chunk in chunks:
        a.update(chunk)
        if h is not None:
            h.update(chunk)
    return a.hexdigest(), a.nbytes, (h.hexdigest() if h is not None else None)


def read_chunks(fh: BinaryIO, size: int = CHUNK) -> Iterable[bytes]:
    while True:
        chunk = fh.read(size)
        if not chunk:
            return
        yield chunk


def file_checksum(fh: BinaryIO, md5: bool = False) -> tuple[str, int, str | None]:
    """Checksum an open binary file from its current position to its end."""
    return checksum_chunks(read_chunks(fh), md5=md5)
