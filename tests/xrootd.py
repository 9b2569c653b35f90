"""A real XRootD data server on loopback for tests: ``start_xrootd(tmpdir)``.

The PyPI ``xrootd`` wheel carries the client and Python bindings but no server, so this
uses an ``xrootd`` executable from the venv when one exists, else Debian's ``/usr/bin/xrootd``
(``.ci/install-xrootd.sh`` installs it). The server:

* listens on a free port of 127.0.0.1 only: xrootd has no listen-address directive, so an
  LD_PRELOAD shim (``.ci/bindlo.c``, built here with gcc and cached) turns its wildcard
  ``bind()`` into a loopback one;
* exports one directory (read-write, or read-only with ``read_only=True``) and computes
  adler32 checksums on ``query checksum``;
* refuses to run as root, so as root it is started with ``-R xrootd`` and its directories
  belong to that user.

Importable from any test directory (``from tests.xrootd import start_xrootd``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIM_SOURCE = REPO / ".ci" / "bindlo.c"
RUN_AS = "xrootd"


class XRootDUnavailable(RuntimeError):
    """No xrootd server binary (or no gcc for the bind shim) on this machine."""


def find_server_binary() -> str | None:
    """The xrootd server executable: one shipped in the venv first, else the system one."""
    venv_bin = Path(sys.prefix) / "bin" / "xrootd"
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    return shutil.which("xrootd", path="/usr/bin:/usr/local/bin:" + os.environ.get("PATH", ""))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_bind_shim() -> str:
    """Build ``.ci/bindlo.c`` once per source version into the temp dir; return the .so path."""
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"dss-bindlo-{digest}.so"
    if target.exists():
        return str(target)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise XRootDUnavailable("gcc is needed to build the loopback bind shim (.ci/bindlo.c)")
    # Build under a private name and rename: parallel test sessions may race here.
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    os.replace(partial, target)
    return str(target)


@dataclass
class XRootDServer:
    """A running xrootd. ``url`` is ``root://127.0.0.1:PORT``; ``root`` the exported directory.

    ``se_url(sub)`` is the storage-element URL of a subdirectory of the export, e.g.
    ``root://127.0.0.1:PORT//tmp/dss-xrootd-x/data/sub``.
    """

    url: str
    port: int
    root: Path
    base: Path
    read_only: bool
    process: subprocess.Popen | None = field(default=None, repr=False)
    owns_base: bool = field(default=False, repr=False)

    def se_url(self, sub: str = "") -> str:
        """URL of the export (or of ``sub`` inside it), creating that directory for the server."""
        path = self.root / sub if sub else self.root
        if sub:
            path.mkdir(parents=True, exist_ok=True)
            _give_to_server(path, self.root)
        return f"{self.url}/{path}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill=True``: the server vanishes mid-request)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.process = None

    def start(self) -> None:
        """(Re)start the server on the same port, export and configuration."""
        if self.running:
            return
        binary = find_server_binary()
        if binary is None:
            raise XRootDUnavailable("no xrootd server binary (run .ci/install-xrootd.sh)")
        shim = build_bind_shim()
        run, log = self.base / "run", self.base / "log"
        config = self.base / "xrootd.cfg"
        export = f"all.export {self.root}" + (" r/o" if self.read_only else "")
        config.write_text(
            "\n".join(
                [
                    "# Written by tests/xrootd.py: a loopback data server for DSS tests.",
                    f"xrd.port {self.port}",
                    "all.role server",
                    export,
                    f"all.adminpath {run}",
                    f"all.pidpath {run}",
                    "xrootd.chksum adler32",
                    # A file opened with POSC (persist on successful close) that is never
                    # closed, because the client or this server died, is removed at once (on
                    # restart, from the POSC log) rather than after the default 10 minutes.
                    f"ofs.persist manual hold 0 logdir {run}",
                    # Access control on top of the loopback bind forced by the shim.
                    "xrd.allow host localhost",
                    "xrd.allow host 127.0.0.1",
                    "",
                ]
            )
        )
        cmd = [binary, "-c", str(config), "-l", str(log / "xrootd.log"), "-n", "dss"]
        if os.geteuid() == 0:
            cmd += ["-R", RUN_AS]
        env = dict(os.environ, LD_PRELOAD=shim)
        out = open(log / "xrootd.out", "ab")  # noqa: SIM115 - handed to the child process
        try:
            # cwd: xrootd creates ./<instance name> there, which its user must be able to write.
            self.process = subprocess.Popen(
                cmd,
                cwd=run,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            if _answers(self.port):
                return
            time.sleep(0.1)
        logs = self.logs()
        self.stop()
        raise XRootDUnavailable(f"xrootd on 127.0.0.1:{self.port} did not start:\n{logs}")

    def logs(self) -> str:
        """The server's stdout and log file, for failure messages."""
        parts = []
        for path in (self.base / "log" / "xrootd.out", *sorted((self.base / "log").rglob("*.log"))):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop the server and remove its directories if this object created them."""
        self.stop()
        if self.owns_base:
            shutil.rmtree(self.base, ignore_errors=True)


def _answers(port: int) -> bool:
    """True once the server answers a protocol request, not merely accepts connections."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", port)) != 0:
            return False
    xrdfs = shutil.which("xrdfs")
    env = dict(os.environ, XRD_CONNECTIONRETRY="1", XRD_REQUESTTIMEOUT="5")
    if xrdfs:
        cmd = [xrdfs, f"127.0.0.1:{port}", "query", "config", "version"]
    else:
        ping = (
            "import sys; from XRootD import client; "
            f"st, _ = client.FileSystem('root://127.0.0.1:{port}').ping(timeout=5); "
            "sys.exit(0 if st.ok else 1)"
        )
        cmd = [sys.executable, "-c", ping]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _give_to_server(path: Path, stop_at: Path) -> None:
    """Make ``path`` (and its parents up to ``stop_at``) writable by the server's user."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(RUN_AS)
    p = path
    while True:
        os.chown(p, user.pw_uid, user.pw_gid)
        if p == stop_at or p == p.parent:
            return
        p = p.parent


def start_xrootd(
    tmpdir: str | os.PathLike | None = None,
    *,
    read_only: bool = False,
    port: int | None = None,
) -> XRootDServer:
    """Start an xrootd on 127.0.0.1 exporting ``<base>/data``; return it once it answers.

    ``tmpdir`` is the base directory (created if needed). When omitted, or when the server's
    user could not reach it (pytest's ``tmp_path`` lives under a root-only ``0700`` parent), a
    fresh directory in the system temp dir is used and removed by ``close()``. Raises
    ``XRootDUnavailable`` when there is no server binary or it does not come up.
    """
    if find_server_binary() is None:
        raise XRootDUnavailable("no xrootd server binary (run .ci/install-xrootd.sh)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError as exc:
            raise XRootDUnavailable(f"user {RUN_AS!r} to run xrootd as does not exist") from exc
    owns = False
    base = Path(tmpdir) if tmpdir is not None else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    if base is None or (os.geteuid() == 0 and not _reachable_by_server(base)):
        base = Path(tempfile.mkdtemp(prefix="dss-xrootd-"))
        owns = True
    base = base.resolve()
    base.chmod(0o755)
    for sub in ("data", "run", "log"):
        (base / sub).mkdir(exist_ok=True)
        _give_to_server(base / sub, base / sub)
    server = XRootDServer(
        url=f"root://127.0.0.1:{port or free_port()}",
        port=0,
        root=base / "data",
        base=base,
        read_only=read_only,
        owns_base=owns,
    )
    server.port = int(server.url.rsplit(":", 1)[1])
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def _reachable_by_server(path: Path) -> bool:
    """Whether every parent of ``path`` lets other users through (mode o+x)."""
    for p in path.resolve().parents:
        if not p.stat().st_mode & 0o001:
            return False
    return True
