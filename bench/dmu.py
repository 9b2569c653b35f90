"""Benchmark: ``dmu cp`` beside ``xrdcp``, both verifying adler32, local -> XRootD -> local.

Starts a loopback XRootD server (tests/xrootd.py), writes a random file (1 GiB by default)
under bench/work/, then for each round copies it up to the server and back down, once with
the real ``dmu`` command line (a subprocess) and once with ``xrdcp --cksum adler32``; each
tool's time includes its checksum verification; the tools alternate which goes first.
Prints a table of medians and min-max spreads and writes bench/results/dmu.json (or
--out): ``bytes``, ``dmu_mb_s``, ``xrdcp_mb_s``, ``ratio`` (round-trip MB/s, median of the
rounds), the spread of each figure and of the per-round ratio, and the load average
before each round. Work files and the server are removed at the end.

    .venv/bin/python bench/dmu.py [--size-mib 1024] [--rounds 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchutil import load_average, machine, spread, write_results  # noqa: E402

from tests.xrootd import start_xrootd  # noqa: E402

WORK = REPO / "bench" / "work"
RESULTS = REPO / "bench" / "results" / "dmu.json"


def make_file(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible, so no layer can cheat)."""
    block = 16 * 1024 * 1024
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(block, left)
            fh.write(os.urandom(n))
            left -= n


def timed(cmd: list[str]) -> float:
    """Run ``cmd``; its wall-clock seconds. Any failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
    return seconds


def dmu_cmd(src: str, dst: str) -> list[str]:
    return [sys.executable, "-m", "dmu.cli", "-q", "cp", src, dst]


def xrdcp_cmd(src: str, dst: str) -> list[str]:
    # --cksum adler32: xrdcp checksums what it moved and compares it with the other end.
    return ["xrdcp", "-s", "-f", "--cksum", "adler32", src, dst]


def one_round(tool: str, source: Path, server, tag: str) -> tuple[float, float]:
    """Seconds up and down for ``tool``; removes what it wrote."""
    remote_dir = server.root / tag
    remote_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # the server runs as user xrootd and must write there
        shutil.chown(remote_dir, "xrootd", "xrootd")
    remote = f"{server.url}/{remote_dir}/big.bin"
    back = WORK / f"back-{tag}.bin"
    make = dmu_cmd if tool == "dmu" else xrdcp_cmd
    up = timed(make(str(source), remote))
    down = timed(make(remote, str(back)))
    if back.stat().st_size != source.stat().st_size:
        raise SystemExit(f"{tool}: copied back {back.stat().st_size} bytes")
    back.unlink()
    shutil.rmtree(remote_dir)
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    if shutil.which("xrdcp") is None:
        raise SystemExit("xrdcp is needed (.ci/install-xrootd.sh)")
    size = args.size_mib * 1024 * 1024
    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / "dmu-bench-source.bin"
    server = start_xrootd()
    runs: dict[str, list[tuple[float, float]]] = {"dmu": [], "xrdcp": []}
    loads: list[list[float]] = []
    try:
        make_file(source, size)
        for i in range(args.rounds):
            loads.append(load_average())
            # Alternate who goes first so neither always meets a warmer cache.
            order = ("dmu", "xrdcp") if i % 2 == 0 else ("xrdcp", "dmu")
            for tool in order:
                runs[tool].append(one_round(tool, source, server, f"{tool}-{i}"))
    finally:
        source.unlink(missing_ok=True)
        server.close()

    def mb_s(seconds: float, n: int = 1) -> float:
        return n * size / 1e6 / seconds

    summary = {
        tool: {
            "up_mb_s": spread([mb_s(up) for up, _ in rounds], 1),
            "down_mb_s": spread([mb_s(down) for _, down in rounds], 1),
            "round_trip_mb_s": spread([mb_s(up + down, 2) for up, down in rounds], 1),
        }
        for tool, rounds in runs.items()
    }
    median = {tool: s["round_trip_mb_s"]["median"] for tool, s in summary.items()}
    ratio = median["dmu"] / median["xrdcp"]
    # the ratio of each round (the two tools ran back to back, under the same load)
    ratios = [
        (xu + xd) / (du + dd) for (du, dd), (xu, xd) in zip(runs["dmu"], runs["xrdcp"], strict=True)
    ]

    def cell(s: dict) -> str:
        return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"

    print(
        f"{size / 2**30:g} GiB, local -> XRootD (127.0.0.1) -> local, "
        f"MB/s median (min-max) of {args.rounds} rounds"
    )
    print(f"{'tool':<8}{'up MB/s':>16}{'down MB/s':>16}{'round trip MB/s':>18}")
    for tool, s in summary.items():
        print(
            f"{tool:<8}{cell(s['up_mb_s']):>16}{cell(s['down_mb_s']):>16}"
            f"{cell(s['round_trip_mb_s']):>18}"
        )
    print(
        f"ratio dmu/xrdcp (round trip): {ratio:.2f}, per round {min(ratios):.2f}-{max(ratios):.2f}"
        f"  (target >= 0.90); 1-min load before the rounds: "
        f"{', '.join(f'{x[0]:.2f}' for x in loads)}"
    )

    xrdcp_version = subprocess.run(["xrdcp", "--version"], capture_output=True, text=True)
    write_results(
        args.out,
        {
            "bytes": size,
            "dmu_mb_s": median["dmu"],
            "xrdcp_mb_s": median["xrdcp"],
            "ratio": round(ratio, 3),
            "ratio_per_round": spread(ratios),
            "measure": "round trip local->XRootD->local, MB/s = 2*bytes/(t_up+t_down), "
            "median (min, max) of rounds; both tools verify adler32",
            "rounds": args.rounds,
            "load_before_rounds": loads,
            "detail": summary,
            "seconds": {
                tool: [[round(u, 2), round(d, 2)] for u, d in r] for tool, r in runs.items()
            },
            "xrdcp_version": (xrdcp_version.stdout or xrdcp_version.stderr).strip(),
            **machine(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
