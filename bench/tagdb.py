"""Benchmark the TAG database against a plain uproot scan.

Synthesises a TAG collection of N events (default 10^6) by resampling whole events of the
HZZ demo sample (so attributes keep their correlations), numbers them with runs, lumi
blocks and events, spreads them over files, builds the collection on every reachable
backend, and times:

* the build (events loaded per second, split into loading and publishing);
* a count under a selective cut (< 1% of events) and under a loose cut (~ 50%), each on
  one indexed attribute, and under a selective cut on two attributes (a full scan);
* a 50-bin histogram under the loose cut (automatic range, binned in the database);

beside a plain uproot script that answers the selective cut by reading the needed
branches from synthetic ROOT files of the same events (written once under bench/work/).

    .venv/bin/python bench/tagdb.py                       # 10^6 events
    .venv/bin/python bench/tagdb.py --events 10000000     # 10^7 events
    .venv/bin/python bench/tagdb.py --backends duckdb,postgresql
    .venv/bin/python bench/tagdb.py --general --events 10000000   # the general case

``--general`` times what a physicist asks in the general case instead: a count and a
50-bin histogram (automatic range) of selections naming 2, 3 and 4 attributes, which no
index or sorted copy answers alone, on every backend (the Parquet store embedded, and
with its catalog on PostgreSQL as in production), beside two baselines computing the
same selection: DuckDB's plain scan of those columns (one SQL statement on an in-memory
DuckDB table of the collection, no DSS code) and an uproot script that computes the
attributes from the ROOT files with a process pool of 2 (the cores the portal has),
reading only the branches it needs. Results go to bench/results/tagdb-general.json.

PostgreSQL and MySQL/MariaDB URLs come from DSS_BENCH_POSTGRES_URL and DSS_BENCH_MYSQL_URL
(default: the local test servers); unreachable backends are skipped. Results are printed
and written as JSON (bench/results/tagdb.json by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import sqlalchemy as sa
import uproot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tagdb.schema import Schema, builtin_schemas, compute_tags  # noqa: E402
from tagdb.selection import evaluate, parse  # noqa: E402
from tagdb.store import TagStore  # noqa: E402

HZZ = ROOT / "data" / "demo" / "uproot-HZZ.root"
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"

SELECTIVE = "met > 175"
LOOSE = "n_muon >= 2"
# A selective cut on two attributes, one of them not indexed: no index (and on DuckDB no
# sorted copy) answers it alone, so it shows the cost of a full scan of two columns.
COMBINED = "met > 100 && n_jet >= 2"
HISTOGRAM_ATTRIBUTE = "lead_muon_pt"
EVENTS_PER_RUN = 50_000
EVENTS_PER_LUMI = 1_000
GUID_NAMESPACE = uuid.UUID("6f1d3c52-8d0b-4c1e-9a57-2b7f0c9e4d11")

# The branches written to the synthetic ROOT files: what the selective cut needs, and
# the muon collection so that the files look like event data rather than two columns.
FLAT_BRANCHES = ["MET_px", "MET_py", "NMuon", "triggerIsoMu24", "EventWeight"]
MUON_FIELDS = ["Px", "Py", "Pz", "E", "Charge"]


def backend_urls() -> dict[str, str]:
    """The database URL of each backend (file databases live under bench/work/)."""
    return {
        "duckdb": f"duckdb:///{WORK / 'tagdb-bench.duckdb'}",
        "sqlite": f"sqlite:///{WORK / 'tagdb-bench.sqlite'}",
        "postgresql": os.environ.get(
            "DSS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        "mysql": os.environ.get("DSS_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
        "parquet": f"parquet:///{WORK / 'tagdb-bench-parquet'}",
        # Production: the catalog in PostgreSQL, the event rows in Parquet on a volume.
        "parquet+pg": os.environ.get(
            "DSS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        + f"?parquet_dir={WORK / 'tagdb-bench-parquet-pg'}",
    }


class Synthetic:
    """N events resampled from the HZZ sample, in files of (nearly) equal size."""

    def __init__(self, n_events: int, n_files: int, seed: int):
        self.n_events = n_events
        hzz = builtin_schemas()["hzz"]
        self.source_tags = compute_tags(hzz, HZZ)
        # The HZZ schema as if its events had run, lumi and event numbers.
        self.schema: Schema = dataclasses.replace(hzz, run="run", lumi="lumi", event="event")
        n_source = len(self.source_tags["n_muon"])
        rng = np.random.default_rng(seed)
        bounds = np.linspace(0, n_events, n_files + 1).astype(np.int64)
        self.files = [
            (
                str(uuid.uuid5(GUID_NAMESPACE, f"bench-{n_events}-{seed}-{i}")),
                int(bounds[i]),
                rng.integers(0, n_source, int(bounds[i + 1] - bounds[i])),
            )
            for i in range(n_files)
        ]

    def tags(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """(file GUID, TAG arrays) per file, with run/lumi/event numbers."""
        for guid, first, picks in self.files:
            tags = {name: values[picks] for name, values in self.source_tags.items()}
            number = np.arange(first, first + len(picks), dtype=np.int64)
            tags["run"] = 100_000 + number // EVENTS_PER_RUN
            tags["lumi"] = 1 + (number % EVENTS_PER_RUN) // EVENTS_PER_LUMI
            tags["event"] = number + 1
            yield guid, tags

    def expected(self, text: str) -> int:
        """The count numpy gives for a selection over all synthetic events."""
        counts = evaluate(parse(text), self.source_tags).astype(np.int64)
        return int(sum(counts[picks].sum() for _, _, picks in self.files))

    def root_files(self, branch_per_field: bool = False) -> list[Path]:
        """The synthetic events as ROOT files; written once and reused. With
        ``branch_per_field`` the muons are written as the HZZ sample has them, one jagged
        branch per field (Muon_Px, …), so that the TAG schema's expressions read them."""
        name = "root-general" if branch_per_field else "root"
        folder = WORK / f"{name}-{self.n_events}-{len(self.files)}"
        marker = folder / "complete"
        paths = [folder / f"events-{i:04d}.root" for i in range(len(self.files))]
        if marker.exists():
            return paths
        folder.mkdir(parents=True, exist_ok=True)
        with uproot.open(HZZ) as source:
            raw = source["events"].arrays(
                FLAT_BRANCHES + [f"Muon_{f}" for f in MUON_FIELDS], library="ak"
            )
        started = time.perf_counter()
        for path, (_, _, picks) in zip(paths, self.files, strict=True):
            events = raw[picks]
            flat = {name: ak.to_numpy(events[name]) for name in FLAT_BRANCHES}
            with uproot.recreate(path) as out:
                if branch_per_field:
                    out["events"] = {
                        **flat,
                        **{f"Muon_{f}": events[f"Muon_{f}"] for f in MUON_FIELDS},
                    }
                else:
                    out["events"] = {
                        **flat,
                        "Muon": ak.zip({f: events[f"Muon_{f}"] for f in MUON_FIELDS}),
                    }
        marker.write_text("ok\n")
        print(f"  wrote {len(paths)} ROOT files in {time.perf_counter() - started:.1f} s")
        return paths


def uproot_scan(paths: list[Path]) -> tuple[float, int]:
    """What a physicist would otherwise run: read MET_px/MET_py from every file, apply
    the selective cut, count. Returns (seconds, count)."""
    started = time.perf_counter()
    total = 0
    for path in paths:
        with uproot.open(path) as f:
            arrays = f["events"].arrays(["MET_px", "MET_py"], library="np")
        met = np.hypot(arrays["MET_px"].astype(np.float64), arrays["MET_py"])
        total += int((met > 175).sum())
    return time.perf_counter() - started, total


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls after one warm-up call, and the result."""
    result = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def reachable(url: str) -> str | None:
    """None if a connection works, else the reason."""
    if url.startswith("parquet:"):
        return None
    from tagdb.store import parquet_url

    engine = sa.create_engine(parquet_url(url)[0])
    try:
        with engine.connect():
            return None
    except Exception as exc:  # any driver error means: skip this backend
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


def build_collection(url: str, data: Synthetic) -> tuple[TagStore, str, dict[str, float]]:
    """A fresh store at ``url`` with the synthetic collection built in it, its key, and
    the build's times (synthesising the TAGs not counted)."""
    for suffix in ("", ".wal"):
        if url.startswith(("duckdb:///", "sqlite:///")):
            Path(url.split(":///", 1)[1] + suffix).unlink(missing_ok=True)
    if url.startswith("parquet:///"):
        shutil.rmtree(url[len("parquet://") :], ignore_errors=True)
    elif "parquet_dir=" in url:
        shutil.rmtree(url.split("parquet_dir=", 1)[1], ignore_errors=True)
    store = TagStore(url)
    key = f"bench{uuid.uuid4().hex[:10]}"
    generate_s = load_s = 0.0
    started = time.perf_counter()
    with store.begin_build(key, data.schema) as builder:
        tags_iter = data.tags()
        while True:
            t0 = time.perf_counter()
            item = next(tags_iter, None)
            t1 = time.perf_counter()
            generate_s += t1 - t0
            if item is None:
                break
            builder.load(*item)
            load_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        builder.publish()
        publish_s = time.perf_counter() - t2
    build_s = time.perf_counter() - started - generate_s
    return store, key, {"build_s": build_s, "load_s": load_s, "publish_s": publish_s}


def bench_backend(name: str, url: str, data: Synthetic, repeat: int) -> dict[str, Any]:
    """Build the synthetic collection on one backend, time the queries, check the counts
    against numpy, and drop the collection again."""
    store, key, build = build_collection(url, data)
    build_s, load_s, publish_s = build["build_s"], build["load_s"], build["publish_s"]
    try:
        selective, loose = parse(SELECTIVE), parse(LOOSE)
        count_selective_s, n_selective = timed(lambda: store.count(key, selective), repeat)
        count_loose_s, n_loose = timed(lambda: store.count(key, loose), repeat)
        combined = parse(COMBINED)
        count_combined_s, n_combined = timed(lambda: store.count(key, combined), repeat)
        histogram_s, hist = timed(
            lambda: store.histogram(key, HISTOGRAM_ATTRIBUTE, loose, bins=50), repeat
        )
        fixed_s, _ = timed(
            lambda: store.histogram(key, HISTOGRAM_ATTRIBUTE, loose, bins=50, lo=0, hi=250),
            repeat,
        )
        assert n_selective == data.expected(SELECTIVE), (name, n_selective)
        assert n_loose == data.expected(LOOSE), (name, n_loose)
        assert n_combined == data.expected(COMBINED), (name, n_combined)
        assert hist.total == n_loose, (name, hist.total, n_loose)
        return {
            "build_events_per_s": data.n_events / build_s,
            "build_s": build_s,
            "load_s": load_s,
            "publish_s": publish_s,
            "count_selective_s": count_selective_s,
            "count_loose_s": count_loose_s,
            "count_combined_s": count_combined_s,
            "histogram_s": histogram_s,
            "histogram_fixed_range_s": fixed_s,
            "n_selective": n_selective,
            "n_loose": n_loose,
            "n_combined": n_combined,
        }
    finally:
        store.drop(key)
        store.dispose()


# --------------------------------------------------------------------------- general case

# Selections naming 2, 3 and 4 attributes (the histogrammed attribute among them), each
# with the same condition in plain SQL for DuckDB's own scan. Every attribute is computed
# from branches the synthetic ROOT files hold.
GENERAL = {
    2: ("met > 100 && n_muon >= 2", "met", "met > 100 AND n_muon >= 2"),
    3: (
        "met > 50 && lead_muon_pt > 30 && trigger_isomu24",
        "lead_muon_pt",
        "met > 50 AND lead_muon_pt > 30 AND trigger_isomu24",
    ),
    4: (
        "met > 30 && lead_muon_pt > 25 && abs(lead_muon_eta) < 2.1 && dimuon_mass > 60",
        "dimuon_mass",
        "met > 30 AND lead_muon_pt > 25 AND abs(lead_muon_eta) < 2.1 AND dimuon_mass > 60",
    ),
}
GENERAL_COLUMNS = ["met", "n_muon", "lead_muon_pt", "trigger_isomu24", "lead_muon_eta"]
GENERAL_COLUMNS += ["dimuon_mass"]
GENERAL_BACKENDS = "duckdb,parquet,parquet+pg,postgresql,sqlite,mysql"
POOL = 2  # the portal's cores; the uproot script gets as many processes


def _uproot_part(job: tuple[str, str, str | None]) -> tuple[int, np.ndarray | None]:
    """One file of the uproot script: compute the selection's attributes from the
    branches they need, count the passing events and (for a histogram) return their
    values of the histogrammed attribute."""
    path, text, attr = job
    tree = parse(text)
    names = set(_names(tree)) | ({attr} if attr else set())
    hzz = builtin_schemas()["hzz"]
    schema = dataclasses.replace(
        hzz, attributes=tuple(a for a in hzz.attributes if a.name in names)
    )
    tags = compute_tags(schema, path)
    passed = np.ma.filled(evaluate(tree, tags), False)
    values = None
    if attr is not None:
        values = np.ma.compressed(tags[attr][passed]).astype(np.float64)
    return int(passed.sum()), values


def _names(tree: Any) -> set[str]:
    from tagdb.selection import names_in

    return names_in(tree)


def uproot_general(pool: Any, paths: list[Path], text: str, attr: str | None) -> Any:
    """The uproot script's answer: a count, or (count, 50-bin numpy histogram)."""
    parts = list(pool.map(_uproot_part, [(str(p), text, attr) for p in paths]))
    count = sum(n for n, _ in parts)
    if attr is None:
        return count
    values = np.concatenate([v for _, v in parts])
    return count, np.histogram(values, bins=50)


class PlainDuckDB:
    """DuckDB's own scan: the selection columns of the collection in an in-memory DuckDB
    table, and the selection as one hand-written SQL statement (no DSS code)."""

    def __init__(self, data: Synthetic):
        import duckdb
        import pyarrow as pa

        self.con = duckdb.connect(":memory:")
        batches = []
        for _, tags in data.tags():
            batches.append(
                pa.table(
                    {
                        name: pa.array(
                            np.ma.getdata(tags[name]), mask=np.ma.getmaskarray(tags[name])
                        )
                        for name in GENERAL_COLUMNS
                    }
                )
            )
        table = pa.concat_tables(batches)
        self.con.register("source", table)
        self.con.execute("CREATE TABLE t AS SELECT * FROM source")
        self.con.unregister("source")
        self.ranges = {
            name: self.con.execute(f"SELECT min({name}), max({name}) FROM t").fetchone()
            for name in GENERAL_COLUMNS
        }

    def count(self, condition: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM t WHERE {condition}").fetchone()[0]

    def histogram(self, condition: str, attr: str) -> np.ndarray:
        lo, hi = (float(v) for v in self.ranges[attr])
        scale = 50 / (hi - lo)
        rows = self.con.execute(
            f"SELECT least(floor(({attr} - {lo!r}) * {scale!r}), 49) AS b, count(*) FROM t "
            f"WHERE {condition} AND {attr} IS NOT NULL GROUP BY b"
        ).fetchall()
        counts = np.zeros(50, dtype=np.int64)
        for b, n in rows:
            counts[int(b)] += n
        return counts


def general(args: argparse.Namespace) -> int:
    """The general-case benchmark (see the module's docstring)."""
    from concurrent.futures import ProcessPoolExecutor

    WORK.mkdir(parents=True, exist_ok=True)
    load_at_start = list(os.getloadavg())
    print(
        f"TAG queries in the general case: {args.events:,} events in {args.files} files "
        f"(load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    data = Synthetic(args.events, args.files, args.seed)
    queries = {}
    for k, (text, attr, sql) in GENERAL.items():
        n = data.expected(text)
        queries[k] = (text, attr, sql, n)
        print(f"  {k} attributes: {text} ({n / args.events:.2%}); histogram of {attr}")
    paths = data.root_files(branch_per_field=True)

    baselines: dict[str, dict[str, float]] = {"duckdb plain": {}, "uproot x2": {}}
    print("  duckdb plain: loading the columns …", flush=True)
    plain = PlainDuckDB(data)
    for k, (_, attr, sql, n) in queries.items():
        seconds, got = timed(lambda sql=sql: plain.count(sql), args.repeat)
        assert got == n, ("duckdb plain", k, got, n)
        baselines["duckdb plain"][f"count_{k}"] = seconds
        seconds, counts = timed(lambda sql=sql, attr=attr: plain.histogram(sql, attr), args.repeat)
        assert counts.sum() == n, ("duckdb plain histogram", k, counts.sum(), n)
        baselines["duckdb plain"][f"histogram_{k}"] = seconds
    plain.con.close()
    print(f"  uproot: {POOL} processes over {len(paths)} files …", flush=True)
    with ProcessPoolExecutor(POOL) as pool:
        for k, (text, attr, _, n) in queries.items():
            # Like the databases, timed warm (files in the page cache, the pool started).
            seconds, got = timed(lambda text=text: uproot_general(pool, paths, text, None), 3)
            assert got == n, ("uproot", k, got, n)
            baselines["uproot x2"][f"count_{k}"] = seconds
            seconds, (got, _) = timed(
                lambda text=text, attr=attr: uproot_general(pool, paths, text, attr), 3
            )
            assert got == n, ("uproot histogram", k, got, n)
            baselines["uproot x2"][f"histogram_{k}"] = seconds

    results: dict[str, Any] = {}
    urls = backend_urls()
    for name in args.backends.split(","):
        url = urls[name]
        problem = reachable(url)
        if problem:
            print(f"  {name}: skipped ({problem})")
            continue
        print(f"  {name}: building …", flush=True)
        store, key, build = build_collection(url, data)
        try:
            r: dict[str, Any] = dict(build)
            for k, (text, attr, _, n) in queries.items():
                tree = parse(text)
                r[f"count_{k}"], got = timed(
                    lambda s=store, key=key, tree=tree: s.count(key, tree), args.repeat
                )
                assert got == n, (name, k, got, n)
                r[f"histogram_{k}"], hist = timed(
                    lambda s=store, key=key, tree=tree, attr=attr: s.histogram(
                        key, attr, tree, bins=50
                    ),
                    args.repeat,
                )
                assert hist.total == n, (name, k, hist.total, n)
            results[name] = r
            print(f"    built in {build['build_s']:.1f} s", flush=True)
        finally:
            store.drop(key)
            store.dispose()

    what = [f"{q}_{k}" for k in GENERAL for q in ("count", "histogram")]
    rows = {**baselines, **results}
    header = f"{'backend':<14}{'build s':>9}" + "".join(
        f"{w.replace('histogram', 'hist').replace('_', ' ') + ' ms':>14}" for w in what
    )
    print()
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        build = f"{r['build_s']:>9.1f}" if "build_s" in r else f"{'':>9}"
        print(f"{name:<14}{build}" + "".join(f"{r[w] * 1e3:>14.1f}" for w in what))
    plain_row, uproot_row = baselines["duckdb plain"], baselines["uproot x2"]
    print("\ntime / DuckDB's plain scan (goal: <= 2):")
    for name, r in results.items():
        r["ratio_to_duckdb_plain"] = {w: r[w] / plain_row[w] for w in what}
        print(f"{name:<23}" + "".join(f"{r['ratio_to_duckdb_plain'][w]:>14.2f}" for w in what))
    print("\ntimes faster than the uproot script with 2 processes (goal: >= 50):")
    for name, r in results.items():
        r["times_faster_than_uproot"] = {w: uproot_row[w] / r[w] for w in what}
        print(f"{name:<23}" + "".join(f"{r['times_faster_than_uproot'][w]:>14.1f}" for w in what))

    report = {
        "events": args.events,
        "files": args.files,
        "selections": {
            str(k): {"selection": text, "histogram": attr, "plain_sql": sql, "passing": n}
            for k, (text, attr, sql, n) in queries.items()
        },
        "baselines": baselines,
        "backends": results,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "notes": (
            "Seconds; medians of --repeat runs after one warm-up (the uproot script: of 3, "
            "with the files in the page cache and its pool of 2 processes started). "
            "Histograms: 50 bins over the passing events' range (DSS: automatic range; "
            "DuckDB plain: one scan over the collection's range; uproot: numpy). The "
            "uproot script reads only the branches the selection needs; no selection here "
            "names runs, so it can skip no file. parquet: the Parquet store with its "
            "catalog in SQLite (embedded); parquet+pg: with its catalog in PostgreSQL "
            "(production). build_s leaves out synthesising the TAGs."
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--backends", default="duckdb,sqlite,postgresql,mysql")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--output", type=Path, default=RESULTS / "tagdb.json")
    parser.add_argument("--general", action="store_true", help="the general-case queries")
    args = parser.parse_args(argv)
    if args.general:
        if args.backends == parser.get_default("backends"):
            args.backends = GENERAL_BACKENDS
        if args.output == parser.get_default("output"):
            args.output = RESULTS / "tagdb-general.json"
        return general(args)

    WORK.mkdir(parents=True, exist_ok=True)
    load_at_start = list(os.getloadavg())
    print(
        f"TAG database benchmark: {args.events:,} events in {args.files} files "
        f"(load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    data = Synthetic(args.events, args.files, args.seed)
    n_selective, n_loose = data.expected(SELECTIVE), data.expected(LOOSE)
    n_combined = data.expected(COMBINED)
    print(
        f"  selective: {SELECTIVE} ({n_selective / args.events:.2%})   "
        f"loose: {LOOSE} ({n_loose / args.events:.1%})   "
        f"two attributes: {COMBINED} ({n_combined / args.events:.2%})\n"
        f"  histogram: {HISTOGRAM_ATTRIBUTE}, 50 bins, under the loose cut"
    )
    paths = data.root_files()
    # Like the databases, the script is timed warm: the files are in the page cache.
    scan_times = []
    for _ in range(3):
        seconds, scan_count = uproot_scan(paths)
        assert scan_count == n_selective, (scan_count, n_selective)
        scan_times.append(seconds)
    scan_s = statistics.median(scan_times)

    results: dict[str, Any] = {}
    urls = backend_urls()
    for name in args.backends.split(","):
        url = urls[name]
        problem = reachable(url)
        if problem:
            print(f"  {name}: skipped ({problem})")
            continue
        print(f"  {name}: building …", flush=True)
        results[name] = bench_backend(name, url, data, args.repeat)

    print()
    header = (
        f"{'backend':<11}{'build ev/s':>12}{'load s':>9}{'publish s':>11}"
        f"{'count <1% ms':>14}{'count ~50% ms':>15}{'2 attrs ms':>12}{'hist ms':>9}"
        f"{'hist fixed ms':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<11}{r['build_events_per_s']:>12,.0f}{r['load_s']:>9.1f}"
            f"{r['publish_s']:>11.1f}{r['count_selective_s'] * 1e3:>14.1f}"
            f"{r['count_loose_s'] * 1e3:>15.1f}{r['count_combined_s'] * 1e3:>12.1f}"
            f"{r['histogram_s'] * 1e3:>9.1f}"
            f"{r['histogram_fixed_range_s'] * 1e3:>15.1f}"
        )
    print(
        f"{'uproot':<11}{'':>12}{'':>9}{'':>11}{scan_s * 1e3:>14.1f}"
        "   (MET_px, MET_py read from every ROOT file)"
    )
    print("\nhow many times faster than the uproot scan:")
    for name, r in results.items():
        r["times_faster_than_uproot"] = {
            what: scan_s / r[f"{what}_s"]
            for what in ("count_selective", "count_loose", "count_combined", "histogram")
        }
        print(
            f"  {name:<11}"
            + "   ".join(f"{what} {x:,.0f}x" for what, x in r["times_faster_than_uproot"].items())
        )

    report = {
        "events": args.events,
        "files": args.files,
        "selective": SELECTIVE,
        "loose": LOOSE,
        "combined": COMBINED,
        "histogram": f"{HISTOGRAM_ATTRIBUTE}, 50 bins, under '{LOOSE}', automatic range",
        "uproot_scan_s": scan_s,
        "backends": results,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            # Other work on the machine slows every timing; this says how busy it was.
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "notes": (
            "Times are medians of --repeat runs after one warm-up (the uproot scan: of 3 "
            "runs, with the files in the page cache). build_events_per_s counts "
            "loading and publishing (indexes, ANALYZE, swap), not synthesising the TAGs."
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
