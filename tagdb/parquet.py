"""Where a columnar TAG store keeps its event rows: Parquet files per build, published by
a manifest.

A folder (``TAGDB_URL=parquet:///folder``, or ``parquet_dir`` beside a server's catalog)
holds one sub-folder per collection key::

    c42/manifest.json          the published build: its generation, files and catalog entry
    c42/<token>/stage/…        a build's parts as loaded (removed when it is prepared)
    c42/<token>/data.parquet   the build, sorted by run (then load order), row groups of
                               ROW_GROUP_ROWS rows with min/max statistics per column
    c42/<token>/RETIRED        written when a newer build (or a drop) replaced it

A build writes only under its own token. Publishing writes the new manifest beside the old
one and moves it over in one ``os.replace``, so a reader sees the old build or the new one
whole and never waits for a writer. A retired build's files stay for RETIRE_GRACE_S after
its RETIRED mark (readers read the manifest and open the files within milliseconds; a
query that still finds them gone reads the manifest again and runs once more), and are
removed by the next publish or drop of any build in the folder.

Nothing here comes from user text: keys and tokens are checked by the store, and paths are
built from the folder the site configured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
RETIRED = "RETIRED"
ROW_GROUP_ROWS = 1_000_000
RETIRE_GRACE_S = 600.0
_TOKEN_RE = re.compile(r"[a-z0-9]{1,16}")


@dataclass(frozen=True)
class Manifest:
    """A published build: its token (generation), its files and its catalog entry."""

    key: str
    generation: str
    files: tuple[str, ...]  # absolute paths
    info: dict[str, Any]  # the catalog row (as written to tagdb_catalog)


def sql_string(path: str) -> str:
    """``path`` as an SQL string literal for DuckDB DDL (our own paths only)."""
    if "\x00" in path or "\n" in path:
        raise ValueError(f"refusing unsafe path {path!r}")
    return "'" + path.replace("'", "''") + "'"


class ParquetFolder:
    """The folder of a Parquet TAG store (see the module's docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        # key -> (stat signature, Manifest): a manifest is parsed again only once replaced.
        self._cache: dict[str, tuple[tuple[int, int, int], Manifest]] = {}

    def collection_dir(self, key: str) -> Path:
        return self.root / key

    def build_dir(self, key: str, token: str) -> Path:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"invalid build token {token!r}")
        return self.root / key / token

    def manifest(self, key: str) -> Manifest | None:
        """The published build of ``key``, or None."""
        path = self.collection_dir(key) / MANIFEST
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(key, None)
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        folder = self.build_dir(key, data["generation"])
        manifest = Manifest(
            key=key,
            generation=data["generation"],
            files=tuple(str(folder / name) for name in data["files"]),
            info=data["info"],
        )
        self._cache[key] = (signature, manifest)
        return manifest

    def publish(self, key: str, token: str, files: list[str], info: dict[str, Any]) -> None:
        """Make build ``token`` of ``key`` the published one, in one ``os.replace``; the
        build it replaces is retired."""
        folder = self.collection_dir(key)
        old = self.manifest(key)
        temporary = folder / f"{MANIFEST}.{token}"
        body = {"generation": token, "files": [Path(f).name for f in files], "info": info}
        with open(temporary, "w") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / MANIFEST)
        _sync_dir(folder)
        if old is not None and old.generation != token:
            self.retire(key, old.generation)
        self.sweep()

    def unpublish(self, key: str) -> bool:
        """Remove ``key``'s manifest and retire its build; True if there was one."""
        old = self.manifest(key)
        try:
            os.remove(self.collection_dir(key) / MANIFEST)
        except FileNotFoundError:
            return False
        if old is not None:
            self.retire(key, old.generation)
        self.sweep()
        return True

    def retire(self, key: str, token: str) -> None:
        folder = self.build_dir(key, token)
        if folder.exists():
            (folder / RETIRED).touch()

    def discard(self, key: str, token: str) -> bool:
        """Remove build ``token`` of ``key`` unless it is the published one."""
        published = self.manifest(key)
        if published is not None and published.generation == token:
            return False
        folder = self.build_dir(key, token)
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def unpublished_builds(self) -> list[tuple[str, str]]:
        """(key, token) of every build folder that is neither published nor retired:
        builds under way, or left by dead ones."""
        found = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            published = self.manifest(folder.name)
            for build in sorted(folder.iterdir()):
                if not build.is_dir() or not _TOKEN_RE.fullmatch(build.name):
                    continue
                if published is not None and published.generation == build.name:
                    continue
                if (build / RETIRED).exists():
                    continue
                found.append((folder.name, build.name))
        return found

    def sweep(self, grace: float = RETIRE_GRACE_S) -> int:
        """Remove retired builds whose grace period is over; how many were removed."""
        removed = 0
        now = time.time()
        for mark in self.root.glob(f"*/*/{RETIRED}"):
            try:
                if now - mark.stat().st_mtime < grace:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(mark.parent, ignore_errors=True)
            removed += 1
        return removed


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
