"""Pages under load: the dataset list page and API with 10^4 datasets, served by gunicorn.

    .venv/bin/python bench/pages.py                       # SQLite, 10^4 datasets, 20 s each
    .venv/bin/python bench/pages.py --seconds 30 --clients 50
    .venv/bin/python bench/pages.py --database-url postgres://postgres@127.0.0.1:5432/postgres

The script makes its own state directory (DSS_VAR_DIR in a temporary folder) and database:
SQLite there by default; with --database-url, a fresh PostgreSQL database beside the one
named, created here and dropped at the end. It migrates, loads --datasets datasets of
--files files each (one replica per file) with bulk_create, makes a user with a session and
an API token, and starts gunicorn (DEBUG off, static files collected, the API's per-user
request rate lifted so that the load is not throttled, over a one-second window) on a free
loopback port.

Then --clients clients each send requests back to back for --seconds seconds, a new
connection each, first to `/datasets/` with the cookies of a logged-in browser (the session's,
and the CSRF cookie its first page set), then to `/api/datasets/`
with the token, and record requests per second, the p50/p95/p99 latency and the errors
(anything but 200). Each page is measured three ways, each on a fresh gunicorn: with the
catalog unchanged (the lists are cached under the catalog's generation), with a dataset
registered every second meanwhile (each change makes every worker compute the page once
more), and with the cache off (DSS_PAGE_CACHE_SECONDS=0: every request counts, totals and
draws its page). The clients are ApacheBench (`ab -c`, from Debian's apache2-utils) when
it is installed, which spends little of the two cores on itself; else (or with
--client python) as many Python threads, which spend more. Gunicorn is stopped and
everything removed at the end. Prints a table and writes bench/results/pages.json.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "pages.json"
HOST = "127.0.0.1"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def bench_database(url: str) -> tuple[str, str]:
    """A fresh PostgreSQL database beside the one ``url`` names: (its URL, its name)."""
    import psycopg

    name = f"dss_bench_pages_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name)), name


def drop_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def portal_environment(var: Path, bench: str, **settings: str) -> dict[str, str]:
    """The environment of a benchmark's portal: its own state folder and Celery queue,
    DEBUG off, plain HTTP on loopback, and ``settings`` (e.g. a lifted request rate)."""
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="dss.settings",
        DSS_VAR_DIR=str(var),
        STATIC_ROOT=str(var / "static"),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=HOST,
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
        DSS_CELERY_QUEUE=f"dss-bench-{bench}-{os.getpid()}",
        **settings,
    )


def load(n_datasets: int, n_files: int) -> tuple[str, str]:
    """Migrate, load the catalog and make a user: (session key, API token key)."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import connections, transaction

    from dmu.models import Dataset, File, Replica, StorageElement
    from dss.tokens import do_issue_token

    call_command("migrate", "--noinput", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    started = time.perf_counter()
    with transaction.atomic():
        se = StorageElement.objects.create(name="BENCH", url="file:///bench")
        datasets = Dataset.objects.bulk_create(
            Dataset(
                name=f"mc23_13p6TeV.{i:06d}.bench_sample.DAOD_PHYS",
                description=f"benchmark dataset {i}" if i % 3 else "",
            )
            for i in range(n_datasets)
        )
        if datasets[0].pk is None:  # backends that do not return keys from bulk_create
            datasets = list(Dataset.objects.order_by("pk"))
        files = File.objects.bulk_create(
            (
                File(
                    dataset=d,
                    lfn=f"{d.name}._{k:06d}.root",
                    guid=uuid.uuid4(),
                    bytes=2_000_000_000 + 1000 * k,
                    adler32="0a1b2c3d",
                    events=100_000 + k,
                    tree="CollectionTree",
                )
                for d in datasets
                for k in range(n_files)
            ),
            batch_size=5000,
        )
        if files[0].pk is None:
            files = list(File.objects.order_by("pk"))
        Replica.objects.bulk_create(
            (Replica(file=f, storage_element=se, path=f.lfn) for f in files), batch_size=5000
        )
        user = User.objects.create_user("bench", password=secrets.token_urlsafe(16))
        user.groups.add(*Group.objects.filter(name="physicist"))
        token = do_issue_token(user, "bench").key
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
    print(
        f"  loaded {n_datasets:,} datasets, {len(files):,} files and replicas "
        f"in {time.perf_counter() - started:.1f} s"
    )
    connections.close_all()
    return session.session_key, token


def start_gunicorn(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen:
    """The portal under gunicorn on loopback ``port``, in the checkout, with ``env``."""
    return subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "dss.wsgi",
            f"--bind={HOST}:{port}",
            f"--workers={workers}",
            "--log-level=warning",
        ],
        cwd=ROOT,
        env=env,
    )


def wait_for(
    port: int, server: subprocess.Popen, path: str = "/login/", timeout: float = 60
) -> None:
    """Wait until gunicorn answers GET ``path``; SystemExit if it stops or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn stopped (exit {server.returncode})")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not answer within a minute")


def hammer(port: int, path: str, headers: dict, clients: int, seconds: float) -> dict:
    """``clients`` threads requesting ``path`` back to back for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                conn.close()
                status = response.status
            except OSError:
                status = 0
            latencies[i].append(time.perf_counter() - t0)
            if status != 200:
                errors[i] += 1
                statuses[status] = statuses.get(status, 0) + 1

    cpu_at_start = resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = cpu.ru_utime + cpu.ru_stime - cpu_at_start.ru_utime - cpu_at_start.ru_stime
    every = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(every, n=100) if len(every) > 1 else [every[0]] * 99
    return {
        "requests": len(every),
        "seconds": elapsed,
        "requests_per_s": len(every) / elapsed,
        "p50_ms": q[49] * 1e3,
        "p95_ms": q[94] * 1e3,
        "p99_ms": q[98] * 1e3,
        "max_ms": every[-1] * 1e3,
        "errors": sum(errors),
        # the load generator's own share of the two cores
        "client_cpu_fraction": client_cpu / elapsed,
        "error_statuses": {str(k): v for k, v in statuses.items()},
    }


def browser_cookies(port: int, session_key: str) -> str:
    """The cookies a logged-in browser sends after its first page: the session's and the
    CSRF cookie that page set."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/datasets/", headers={"Cookie": f"sessionid={session_key}"})
    response = conn.getresponse()
    response.read()
    conn.close()
    cookies = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    if "csrftoken" not in cookies:
        raise SystemExit("the dataset list set no CSRF cookie")
    return f"sessionid={session_key}; csrftoken={cookies['csrftoken'].value}"


def hammer_ab(port: int, path: str, headers: dict, clients: int, seconds: float) -> dict:
    """ApacheBench: ``clients`` concurrent clients requesting ``path`` for ``seconds``."""
    cpu_at_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".csv") as percentiles:
        args = ["ab", "-q", "-c", str(clients), "-t", str(seconds), "-n", "100000000"]
        args += ["-e", percentiles.name]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        out = subprocess.run(
            [*args, f"http://{HOST}:{port}{path}"], capture_output=True, text=True, check=True
        ).stdout
        # "percentage,milliseconds" for 0 .. 100 %
        ms = {}
        for line in Path(percentiles.name).read_text().splitlines()[1:]:
            pct, value = line.split(",")
            ms[int(float(pct))] = float(value)
    elapsed = time.perf_counter() - began
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)

    def field(label: str, default: float = 0.0) -> float:
        for line in out.splitlines():
            if line.startswith(label):
                return float(line.split(":", 1)[1].split()[0])
        return default

    requests = int(field("Complete requests"))
    # ab counts a body whose length differs from the first one's as "failed (Length)": the
    # list changes length when the catalog changes, so only the other failures count
    failed = {"Connect": 0, "Receive": 0, "Length": 0, "Exceptions": 0}
    for line in out.splitlines():
        if line.strip().startswith("(Connect:"):
            for part in line.strip(" ()").split(","):
                name, value = part.split(":")
                failed[name.strip()] = int(value)
    non_200 = int(field("Non-2xx responses")) + sum(
        n for kind, n in failed.items() if kind != "Length"
    )
    return {
        "requests": requests,
        "seconds": field("Time taken for tests", elapsed),
        "requests_per_s": field("Requests per second"),
        "p50_ms": ms[50],
        "p95_ms": ms[95],
        "p99_ms": ms[99],
        "max_ms": ms[100],
        "errors": non_200,
        "client_cpu_fraction": (
            cpu.ru_utime + cpu.ru_stime - cpu_at_start.ru_utime - cpu_at_start.ru_stime
        )
        / elapsed,
        "error_statuses": {"non-2xx or failed": non_200} if non_200 else {},
        "other_lengths": failed["Length"],
    }


# unchanged: the lists are cached under the catalog's generation; changing: a dataset is
# registered every second meanwhile, so each change is recomputed once per worker;
# uncached: DSS_PAGE_CACHE_SECONDS=0, every request counts, totals and draws its page
MODES = ("unchanged", "changing", "uncached")
ADDED = itertools.count()


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def registering(every: float | None) -> Iterator[None]:
    """While the block runs, a dataset (with a file) is added to the catalog every
    ``every`` seconds through the ORM, as a registration does (nothing with None)."""
    if every is None:
        yield
        return
    from django.db import connection

    from dmu.models import Dataset, File

    done = threading.Event()

    def add() -> None:
        while not done.wait(every):
            i = next(ADDED)
            d = Dataset.objects.create(name=f"mc23_13p6TeV.{i:06d}.bench_new.DAOD_PHYS")
            File.objects.create(
                dataset=d, lfn=f"{d.name}._000001.root", guid=uuid.uuid4(), bytes=1,
                adler32="00000001", events=1, tree="CollectionTree",
            )  # fmt: skip
        connection.close()

    thread = threading.Thread(target=add)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=3, help="files (and replicas) per dataset")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers"
    )
    parser.add_argument(
        "--database-url", default="", help="a PostgreSQL server (default: SQLite in a temp dir)"
    )
    parser.add_argument(
        "--client",
        choices=["ab", "python"],
        default="ab" if shutil.which("ab") else "python",
        help="the load generator (default: ab when installed)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    hammer_with = hammer_ab if args.client == "ab" else hammer

    load_at_start = list(os.getloadavg())
    print(
        f"Pages benchmark: {args.datasets:,} datasets, {args.clients} clients, "
        f"{args.seconds:g} s per page, gunicorn with {args.workers} workers "
        f"(load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    var = Path(tempfile.mkdtemp(prefix="dss-bench-pages-"))
    database = None
    server = None
    # The one user's request rate is lifted so that the load is not throttled; over a
    # window of one second, since DRF keeps the time of every request in the window (a
    # minute of 500 requests/s would be 30,000 times loaded and stored per request, where
    # fifty users at the default rate keep at most 1,000 each).
    env = portal_environment(var, "pages", DSS_API_RATE_USER="1000000/s")
    try:
        if args.database_url:
            url, name = bench_database(args.database_url)
            database = (args.database_url, name)
            env["DATABASE_URL"] = url
            # as docker-compose runs it: each web worker keeps its connection
            env["DATABASE_CONN_MAX_AGE"] = "60"
        else:
            env.pop("DATABASE_URL", None)
        os.environ.update(env)
        if not args.database_url:
            os.environ.pop("DATABASE_URL", None)
        session_key, token = load(args.datasets, args.files)
        pages = {
            "/datasets/": {"Cookie": f"sessionid={session_key}"},
            "/api/datasets/": {"Authorization": f"Token {token}"},
        }
        results: dict[str, dict] = {path: {} for path in pages}
        for mode in MODES:
            port = free_port()
            server = start_gunicorn(
                port,
                args.workers,
                {**os.environ, "DSS_PAGE_CACHE_SECONDS": "0" if mode == "uncached" else "60"},
            )
            wait_for(port, server)
            # a browser holds the CSRF cookie its first page set (and sends it back)
            pages["/datasets/"]["Cookie"] = browser_cookies(port, session_key)
            for path, headers in pages.items():
                # warm every worker (templates, first connections), then measure
                hammer_with(port, path, headers, min(args.clients, 10), 2)
                print(
                    f"  {path} {mode}: {args.clients} clients ({args.client}), {args.seconds:g} s"
                )
                with registering(every=1.0 if mode == "changing" else None):
                    results[path][mode] = hammer_with(
                        port, path, headers, args.clients, args.seconds
                    )
            stop(server)
            server = None
    finally:
        if server is not None:
            stop(server)
        if database is not None:
            from django.db import connections

            connections.close_all()
            drop_database(*database)
        shutil.rmtree(var, ignore_errors=True)

    load_at_end = list(os.getloadavg())
    print()
    header = f"{'page':<16}{'catalog':<11}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for path, modes in results.items():
        for mode, r in modes.items():
            print(
                f"{path:<16}{mode:<11}{r['requests_per_s']:>8.0f}{r['p50_ms']:>9.1f}"
                f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}"
            )
    print(f"\nload average before {load_at_start[0]:.2f}, after {load_at_end[0]:.2f}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "datasets": args.datasets,
                "files_per_dataset": args.files,
                "clients": args.clients,
                "seconds": args.seconds,
                "gunicorn_workers": args.workers,
                "client": args.client,
                "database": "postgresql" if args.database_url else "sqlite",
                "database_conn_max_age": int(env.get("DATABASE_CONN_MAX_AGE", "0")),
                "page_cache_seconds": int(env.get("DSS_PAGE_CACHE_SECONDS", "60")),
                "machine": {
                    "node": platform.node(),
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "load_average_before": load_at_start,
                    "load_average_after": load_at_end,
                },
                "pages": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
