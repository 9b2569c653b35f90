"""Conditions lookups under load: IOV lookups per second with 10^6 IOVs in 100 global tags,
served by gunicorn, with and without the caching headers honoured.

    .venv/bin/python bench/conditions.py                     # SQLite, 10^6 IOVs, 15 s each
    .venv/bin/python bench/conditions.py --database-url postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/conditions.py --iovs 100000 --seconds 10

The script makes its own state directory and database (SQLite in a temporary folder, or a
fresh PostgreSQL database beside the one named, dropped at the end), migrates, and loads
--tags global tags of --types payload types each, --iovs IOVs in all (each one run long,
minor 0 to run+1), with COPY on PostgreSQL and bulk_create on SQLite. Every tag is locked,
so that its answers carry an ETag and Cache-Control.

Then --clients threads send anonymous lookups (`/api/cdb_rest/payloadiovs/?gtName=…&
majorIOV=…&minorIOV=…`), a new connection each, for --seconds seconds in three ways:

- plain: a random tag and run each time, no validator sent: every answer is a 200 with a
  body, one indexed query on the server;
- revalidated: the lookups a job's worker nodes make (--hot distinct tag/run pairs) through
  a proxy that revalidates every time, sending the ETag it holds in If-None-Match: the
  portal still runs the query but answers 304 with no body;
- proxied: the same hot lookups through a cache that honours Cache-Control max-age (what a
  Squid in front of the portal does): only the first lookup of each URL reaches the portal;
  the figure is lookups answered per second and how many reached the portal.

Prints a table and writes bench/results/conditions.json.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "conditions.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import load_average, machine, write_results  # noqa: E402
from pages import (  # noqa: E402
    HOST,
    bench_database,
    drop_database,
    free_port,
    portal_environment,
    start_gunicorn,
    wait_for,
)

FIRST_RUN = 300_000


def load(n_tags: int, n_types: int, n_iovs: int) -> int:
    """Migrate and load the tags; returns the number of runs per payload list."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections, transaction
    from django.utils import timezone

    from conditions.models import GlobalTag, PayloadIOV, PayloadList, PayloadType

    call_command("migrate", "--noinput", verbosity=0)
    runs = max(n_iovs // (n_tags * n_types), 1)
    started = time.perf_counter()
    with transaction.atomic():
        types = PayloadType.objects.bulk_create(
            PayloadType(name=f"type{t}") for t in range(n_types)
        )
        tags = GlobalTag.objects.bulk_create(
            GlobalTag(name=f"gt{g:03d}", status=GlobalTag.LOCKED) for g in range(n_tags)
        )
        if tags[0].pk is None:
            tags, types = (
                list(GlobalTag.objects.order_by("pk")),
                list(PayloadType.objects.order_by("pk")),
            )
        PayloadList.objects.bulk_create(
            PayloadList(name=f"{t.name}_{g.name}", payload_type=t, global_tag=g)
            for g in tags
            for t in types
        )
        lists = list(PayloadList.objects.values_list("pk", flat=True))
        now = timezone.now()

        def rows():
            for pl in lists:
                for r in range(FIRST_RUN, FIRST_RUN + runs):
                    yield (pl, f"calib/{pl}/{r}.db", "0a1b2c3d", 1024, r, 0, r + 1, 0, now)

        cols = (
            "payload_list_id, payload_url, checksum, size, major_iov, minor_iov, "
            "major_iov_end, minor_iov_end, inserted"
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                table = PayloadIOV._meta.db_table
                with cursor.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in rows():
                        copy.write_row(row)
        else:
            batch = []
            for pl, url, ck, size, a, b, c, d, at in rows():
                batch.append(
                    PayloadIOV(
                        payload_list_id=pl,
                        payload_url=url,
                        checksum=ck,
                        size=size,
                        major_iov=a,
                        minor_iov=b,
                        major_iov_end=c,
                        minor_iov_end=d,
                        inserted=at,
                    )
                )
                if len(batch) == 20_000:
                    PayloadIOV.objects.bulk_create(batch)
                    batch = []
            PayloadIOV.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    total = PayloadIOV.objects.count()
    print(
        f"  loaded {total:,} IOVs in {n_tags} global tags x {n_types} types "
        f"({runs} runs each) in {time.perf_counter() - started:.1f} s"
    )
    connections.close_all()
    return runs


def query_alone(n_tags: int, runs: int, n: int = 3000) -> dict:
    """The lookup's one query alone, in this process, one after another: what the database
    part of a request costs."""
    from django.db import connection

    from conditions.actions import _lookup_sql, lookup

    rng = random.Random(2)
    points = [
        (f"gt{rng.randrange(n_tags):03d}", FIRST_RUN + rng.randrange(runs), rng.randrange(500))
        for _ in range(n)
    ]
    for p in points[:100]:
        lookup(*p)
    t0 = time.perf_counter()
    for p in points:
        lookup(*p)
    elapsed = time.perf_counter() - t0
    gt, run, lb = points[0]
    explain = "EXPLAIN ANALYZE " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN "
    with connection.cursor() as cursor:
        cursor.execute(explain + _lookup_sql(), [run, lb, run, lb, gt])
        plan = [" ".join(map(str, row)) for row in cursor.fetchall()]
    return {
        "lookups": n,
        "seconds": elapsed,
        "lookups_per_s": n / elapsed,
        "mean_ms": elapsed / n * 1e3,
        "plan": plan,
    }


def get(port: int, path: str, headers: dict) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def hammer(port: int, paths: list[str], mode: str, clients: int, seconds: float) -> dict:
    """``clients`` threads looking up random ``paths`` for ``seconds`` in ``mode``."""
    counts = [dict(lookups=0, to_portal=0, s200=0, s304=0, errors=0) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    shared_cache: dict[str, float] = {}  # the proxy: URL -> when it expires
    etags: dict[str, str] = {}  # the revalidating proxy: URL -> the ETag it holds
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        rng = random.Random(i)
        c = counts[i]
        start.wait()
        while time.perf_counter() < deadline[0]:
            path = rng.choice(paths)
            t0 = time.perf_counter()
            if mode == "proxied":
                with lock:
                    fresh = shared_cache.get(path, 0) > time.monotonic()
                if fresh:
                    c["lookups"] += 1
                    latencies[i].append(time.perf_counter() - t0)
                    continue
            headers = {}
            if mode == "revalidated" and path in etags:
                headers["If-None-Match"] = etags[path]
            try:
                status, h, _ = get(port, path, headers)
            except OSError:
                status, h = 0, {}
            latencies[i].append(time.perf_counter() - t0)
            c["lookups"] += 1
            c["to_portal"] += 1
            if status == 200:
                c["s200"] += 1
                if "ETag" in h:
                    etags[path] = h["ETag"]
                if mode == "proxied" and "max-age=" in h.get("Cache-Control", ""):
                    age = int(h["Cache-Control"].split("max-age=")[1].split(",")[0])
                    with lock:
                        shared_cache[path] = time.monotonic() + age
            elif status == 304:
                c["s304"] += 1
            else:
                c["errors"] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    every = sorted(x for per in latencies for x in per)
    p50 = every[len(every) // 2] if every else 0
    p95 = every[int(len(every) * 0.95)] if every else 0
    return {
        **total,
        "seconds": elapsed,
        "lookups_per_s": total["lookups"] / elapsed,
        "portal_requests_per_s": total["to_portal"] / elapsed,
        "p50_ms": p50 * 1e3,
        "p95_ms": p95 * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--types", type=int, default=5)
    parser.add_argument("--iovs", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--hot", type=int, default=200, help="distinct lookups of one job")
    parser.add_argument(
        "--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers"
    )
    parser.add_argument("--database-url", default="", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_at_start = load_average()
    print(
        f"Conditions benchmark: {args.iovs:,} IOVs in {args.tags} global tags, "
        f"{args.clients} clients, {args.seconds:g} s per mode, gunicorn with {args.workers} "
        f"workers (load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    var = Path(tempfile.mkdtemp(prefix="dss-bench-conditions-"))
    database = server = None
    env = portal_environment(var, "conditions", DSS_API_RATE_CONDITIONS="100000000/min")
    try:
        if args.database_url:
            url, name = bench_database(args.database_url)
            database = (args.database_url, name)
            env["DATABASE_URL"] = url
        else:
            env.pop("DATABASE_URL", None)
        os.environ.update(env)
        if not args.database_url:
            os.environ.pop("DATABASE_URL", None)
        runs = load(args.tags, args.types, args.iovs)
        alone = query_alone(args.tags, runs)
        print(
            f"  the lookup query alone: {alone['lookups_per_s']:.0f} lookups/s "
            f"({alone['mean_ms']:.2f} ms each, one process)"
        )

        port = free_port()
        server = start_gunicorn(port, args.workers, os.environ.copy())
        wait_for(port, server, "/api/cdb_rest/gtstatus")
        rng = random.Random(1)

        def lookup() -> str:
            gt = f"gt{rng.randrange(args.tags):03d}"
            run = FIRST_RUN + rng.randrange(runs)
            return f"/api/cdb_rest/payloadiovs/?gtName={gt}&majorIOV={run}&minorIOV={rng.randrange(500)}"

        status, headers, body = get(port, lookup(), {})
        assert status == 200 and body.count(b"calib/") == args.types, (status, body[:300])
        every = [lookup() for _ in range(100_000)]
        hot = [lookup() for _ in range(args.hot)]
        results = {}
        for mode, paths in (("plain", every), ("revalidated", hot), ("proxied", hot)):
            hammer(port, paths, mode, min(args.clients, 8), 2)  # warm the workers
            print(f"  {mode}: {args.clients} clients for {args.seconds:g} s …", flush=True)
            results[mode] = hammer(port, paths, mode, args.clients, args.seconds)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if database is not None:
            from django.db import connections

            connections.close_all()
            drop_database(*database)
        shutil.rmtree(var, ignore_errors=True)

    load_at_end = load_average()
    print()
    header = (
        f"{'mode':<13}{'lookups/s':>10}{'portal req/s':>13}{'200':>8}{'304':>8}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in results.items():
        print(
            f"{mode:<13}{r['lookups_per_s']:>10.0f}{r['portal_requests_per_s']:>13.0f}"
            f"{r['s200']:>8}{r['s304']:>8}{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['errors']:>8}"
        )
    print(
        f"{'query alone':<13}{alone['lookups_per_s']:>10.0f}{'':>13}{'':>8}{'':>8}"
        f"{alone['mean_ms']:>8.2f}"
    )
    print(f"\nload average before {load_at_start[0]:.2f}, after {load_at_end[0]:.2f}")
    write_results(
        args.output,
        {
            "iovs": args.iovs,
            "global_tags": args.tags,
            "payload_types": args.types,
            "clients": args.clients,
            "seconds": args.seconds,
            "hot_lookups": args.hot,
            "gunicorn_workers": args.workers,
            "database": "postgresql" if args.database_url else "sqlite",
            "machine": {
                **machine(),
                "load_average_before": load_at_start,
                "load_average_after": load_at_end,
            },
            "query_alone": alone,
            "modes": results,
        },
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
