"""Skim benchmark: DSS against a plain uproot script given the same cores, on synthesised
run-ordered datasets.

    .venv/bin/python bench/skim.py                       # 10^6 events in 8 files (+ XRootD)
    .venv/bin/python bench/skim.py --big                 # also 10^7 events in 100 files
    .venv/bin/python bench/skim.py --events 200000 --rounds 2 --out /tmp/skim.json

The datasets are drawn from the demo H->ZZ events (all their branches, jagged ones
included), with run and event numbers added so that each file holds one run range, as
real data does; each file is written in clusters of --cluster entries. They are generated
once into bench/.cache/ (not in git) and reused by later runs.

Three skims per dataset, each timed from submission to the registered output dataset,
through the real portal code and a real Celery worker (--workers processes, one task per
input file that holds selected events):

  run_range  events of one run range (file 3 of the dataset), about a tenth of that range
  sparse     about 1% of the events, spread over all files
  loose      about 50% of the events

The baseline is what a physicist writes without DSS, given the same cores: a
ProcessPoolExecutor of --workers processes (started and warmed before timing, as the
portal's worker is), one file per task. Each task first reads the file's run branch and
skips the file when its runs cannot match (the obvious pruning; the met cuts have none),
else reads the whole file, applies the same selection, and writes the passing events
with all their branches as a ROOT TTree with the portal's own writer
(skims.eventio.write_events, clusters of DSS_SKIM_CHUNK_EVENTS), one output per input
file, as a skim without a merge target does. Both must write the same number of events.

The portal's one-off costs are reported apart: registering the dataset and building its
TAGs (after one untimed build of a one-file dataset, so that imports are not counted). The break-even is after how many skims building the TAGs has paid off:
tag_build_s / (baseline_s - portal_s) per skim; "never" when the portal is not faster.

Datasets: "local" (--events in --files files on a local disk), "xrootd" (the same files
served by a loopback XRootD server, tests/xrootd.py; skipped with a note when xrootd is
not installed, or with --no-xrootd), and with --big "big" (10^7 events in 100 files).
Each measurement is repeated --rounds times (the portal and the baseline alternate which
goes first); the table shows medians and the min-max spread. The load average before each
case is recorded. Writes bench/results/skim.json (or --out). Work files go under
bench/work/skim (removed at the end unless --keep).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchutil import load_average, machine, spread, write_results  # noqa: E402

from skims import eventio  # noqa: E402
from skims.eventio import TTreeWriter  # noqa: E402

WORK = ROOT / "bench" / "work" / "skim"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "skim.json"
HZZ = ROOT / "data" / "demo" / "uproot-HZZ.root"
RUNS_PER_FILE = 100
FIRST_RUN = 300000
BIG_EVENTS, BIG_FILES = 10_000_000, 100
CHUNK_EVENTS = 100_000  # DSS_SKIM_CHUNK_EVENTS, the clusters of the portal's outputs

BENCH_SCHEMA = """
name: bench_hzz
version: 1
tree: events
run: Run
event: Event
attributes:
  - {name: met, type: float, expression: "hypot(MET_px, MET_py)", unit: GeV, index: true}
  - {name: n_muon, type: int, expression: NMuon}
  - {name: n_jet, type: int, expression: NJet}
  - {name: lead_muon_pt, type: float, expression: "lead(pt(Muon_Px, Muon_Py))", unit: GeV}
"""


# --------------------------------------------------------------------------- data


def synthesise(n_events: int, n_files: int, cluster: int, folder: Path, seed: int = 7) -> None:
    """Write ``n_files`` ROOT files of H->ZZ-like events into ``folder``, file k holding
    runs of range k."""
    source = uproot.open(HZZ)["events"].arrays(library="ak")
    rng = np.random.default_rng(seed)
    per_file = n_events // n_files
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        first_run = FIRST_RUN + k * RUNS_PER_FILE
        with uproot.recreate(folder / f"synth_{k:03d}.root") as f:
            writer = TTreeWriter(f, "events")
            for start in range(0, per_file, cluster):
                n = min(cluster, per_file - start)
                chunk = source[rng.integers(0, len(source), n)]
                runs = first_run + (start + np.arange(n)) * RUNS_PER_FILE // per_file
                chunk = ak.with_field(chunk, runs.astype(np.int32), "Run")
                chunk = ak.with_field(chunk, (start + np.arange(n) + 1).astype(np.int64), "Event")
                writer.write(chunk)


def cached_dataset(n_events: int, n_files: int, cluster: int) -> tuple[Path, list[str]]:
    """The folder of a synthesised dataset and its files, generated on first use."""
    folder = CACHE / f"skim-{n_events}-{n_files}-{cluster}"
    if not (folder / "complete").exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        t = time.perf_counter()
        synthesise(n_events, n_files, cluster, partial)
        (partial / "complete").write_text(f"{time.perf_counter() - t:.1f} s\n")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        print(f"synthesised {n_events:,} events in {n_files} files into {folder}", flush=True)
    return folder, sorted(p.name for p in folder.glob("synth_*.root"))


def quantile_met(q: float) -> float:
    a = uproot.open(HZZ)["events"].arrays(["MET_px", "MET_py"], library="np")
    return round(float(np.quantile(np.hypot(a["MET_px"], a["MET_py"]), q)), 3)


@dataclass(frozen=True)
class Cut:
    """One skim's selection: met above ``met_min``, and runs in [run_lo, run_hi) if set."""

    met_min: float
    run_lo: int | None = None
    run_hi: int | None = None

    def selection(self) -> str:
        """The same selection in the portal's language."""
        text = f"met > {self.met_min}"
        if self.run_lo is not None:
            text = f"run >= {self.run_lo} && run < {self.run_hi} && {text}"
        return text


# --------------------------------------------------------------------------- the plain script


def skim_file(url: str, cut: Cut, out: str) -> tuple[int, bool]:
    """What a physicist writes without DSS, for one file: skip it if its runs cannot match,
    else read it, filter, write what passes. Returns (events written, whether it was read)."""
    with uproot.open(url) as f:
        tree = f["events"]
        if cut.run_lo is not None:
            runs = tree["Run"].array(library="np")
            if runs.max() < cut.run_lo or runs.min() >= cut.run_hi:
                return 0, False
        events = tree.arrays(library="ak")
    # met in double precision, as the TAG attribute is computed
    met = np.hypot(
        ak.values_astype(events.MET_px, np.float64), ak.values_astype(events.MET_py, np.float64)
    )
    mask = met > cut.met_min
    if cut.run_lo is not None:
        mask = mask & (events.Run >= cut.run_lo) & (events.Run < cut.run_hi)
    selected = events[mask]
    if len(selected):
        eventio.write_events(selected, out, "root", "events", CHUNK_EVENTS)
    return len(selected), True


def _ready(_: int) -> int:
    time.sleep(0.2)  # long enough that every process of the pool gets one
    return os.getpid()


def start_pool(workers: int) -> ProcessPoolExecutor:
    """The baseline's processes, started (spawned: a clean interpreter, no Django) and with
    uproot imported before anything is timed."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pids = set(pool.map(_ready, range(2 * workers)))
    if len(pids) != workers:
        print(f"  note: only {len(pids)} of {workers} baseline processes warmed", flush=True)
    return pool


def uproot_script(pool: ProcessPoolExecutor, urls: list[str], cut: Cut, out_dir: Path):
    """The baseline over a dataset: one file per task. Returns (events, files read)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    futures = [
        pool.submit(skim_file, url, cut, str(out_dir / f"out_{i:03d}.root"))
        for i, url in enumerate(urls)
    ]
    done = [f.result() for f in futures]
    return sum(n for n, _ in done), sum(read for _, read in done)


# --------------------------------------------------------------------------- DSS


def setup_django(var: Path, storage: Path, extra_roots: list[Path]) -> None:
    os.environ["DSS_VAR_DIR"] = str(var)
    os.environ["DSS_STORAGE_ROOT"] = str(storage)
    os.environ["DSS_STORAGE_ROOTS"] = ",".join(map(str, extra_roots))
    # a queue of its own, so that a broker shared with other runs hands it only its own tasks
    os.environ["DSS_CELERY_QUEUE"] = f"dss-bench-{os.getpid()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from dmu import actions as dmu_actions

    # where the skims write their outputs (DSS_SKIM_OUTPUT_SE)
    dmu_actions.do_add_storage_element("LOCAL", storage.as_uri(), user_writable=True)


def register_dataset(label: str, se_url: str, rels: list[str]):
    """Register a dataset and build its TAGs; the collection and the one-off seconds."""
    from dmu import actions as dmu_actions
    from tagdb import actions as tag_actions
    from tagdb.models import TagSchema

    se = dmu_actions.do_add_storage_element(f"IN_{label.upper()}", se_url)
    t = time.perf_counter()
    dataset, _ = dmu_actions.check_register_dataset(f"bench.{label}", se, rels)
    register_s = time.perf_counter() - t
    schema, _ = TagSchema.objects.get_or_create(
        name="bench_hzz", version=1, defaults={"tree": "events", "definition": BENCH_SCHEMA}
    )
    collection = tag_actions.get_or_create_collection(dataset, schema)
    t = time.perf_counter()
    tag_actions.check_build_now(collection)
    build_s = time.perf_counter() - t
    collection.refresh_from_db()
    return collection, {"register_s": round(register_s, 3), "tag_build_s": round(build_s, 3)}


def start_worker(log: Path, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dss",
            "worker",
            f"--concurrency={workers}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    return proc


def dss_skim(collection, selection: str, name: str, user, **options) -> tuple[float, int]:
    from skims import actions
    from skims.models import SkimJob

    t = time.perf_counter()
    skim = actions.check_submit_skim(
        user=user,
        inputs=[actions.InputSpec(collection.dataset, collection)],
        selection=selection,
        output_name=name,
        force=True,
        **options,
    )
    while True:
        skim = SkimJob.objects.get(pk=skim.pk)
        if skim.is_final:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t
    if skim.state != "succeeded":
        raise SystemExit(f"skim {name} ended {skim.state}: {skim.message}")
    return elapsed, skim.events_written


# --------------------------------------------------------------------------- measuring


def run_case(
    label: str,
    case: str,
    cut: Cut,
    collection,
    urls: list[str],
    pool,
    user,
    rounds: int,
    tag_build_s: float,
) -> dict:
    """Time one skim ``rounds`` times through the portal and the baseline."""
    load = load_average()
    portal, baseline = [], []
    n_portal = n_base = files_read = 0
    for r in range(rounds):
        for who in ("portal", "baseline") if r % 2 == 0 else ("baseline", "portal"):
            if who == "portal":
                name = f"user.bench.{label}_{case}_{r}"
                seconds, n_portal = dss_skim(collection, cut.selection(), name, user)
                portal.append(seconds)
            else:
                out = WORK / "script-out" / f"{label}-{case}-{r}"
                t = time.perf_counter()
                n_base, files_read = uproot_script(pool, urls, cut, out)
                baseline.append(time.perf_counter() - t)
                shutil.rmtree(out, ignore_errors=True)
        if n_portal != n_base:
            raise SystemExit(f"{label} {case}: DSS wrote {n_portal} events, the script {n_base}")
    gain = statistics.median(baseline) - statistics.median(portal)
    return {
        "dataset": label,
        "skim": case,
        "selection": cut.selection(),
        "events_out": n_portal,
        "baseline_files_read": files_read,
        "load_before": load,
        "portal_s": spread(portal),
        "baseline_s": spread(baseline),
        "ratio": round(statistics.median(baseline) / statistics.median(portal), 2),
        "break_even_skims": round(tag_build_s / gain, 1) if gain > 0 else None,
    }


def print_table(results: dict) -> None:
    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    print()
    print(
        f"Skim benchmark: {results['workers']} processes each, median (min-max) of "
        f"{results['rounds']} rounds, seconds"
    )
    for label, d in results["datasets"].items():
        print(
            f"  {label}: {d['events']:,} events in {d['files']} files ({d['mb']:.0f} MB), "
            f"{d['storage']}; registered in {d['register_s']:.1f} s, "
            f"TAGs built in {d['tag_build_s']:.1f} s"
        )
    head = (
        f"{'dataset':<8} {'skim':<10} {'events out':>11} {'files':>7} {'portal s':>20} "
        f"{'baseline s':>20} {'ratio':>6} {'break-even':>10} {'load':>5}"
    )
    print(head)
    for c in results["cases"]:
        files = f"{c['baseline_files_read']}/{results['datasets'][c['dataset']]['files']}"
        even = "never" if c["break_even_skims"] is None else f"{c['break_even_skims']:g}"
        print(
            f"{c['dataset']:<8} {c['skim']:<10} {c['events_out']:>11,} {files:>7} "
            f"{cell(c['portal_s']):>20} {cell(c['baseline_s']):>20} {c['ratio']:>5.2f}x "
            f"{even:>10} {c['load_before'][0]:>5.2f}"
        )
    print(
        "portal: submission to registered output, Celery worker, one task per file with "
        "selected events;\nbaseline: uproot in a process pool, files pruned by their run "
        "branch, same selection and output;\nfiles: files the baseline read whole; "
        "break-even: skims after which the TAG build has paid off; load: 1-min load before."
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cluster", type=int, default=4000, help="entries per basket cluster")
    ap.add_argument("--rounds", type=int, default=3, help="runs per measurement")
    ap.add_argument("--workers", type=int, default=2, help="portal worker and baseline processes")
    ap.add_argument("--big", action="store_true", help="also 10^7 events in 100 files (slow)")
    ap.add_argument("--big-events", type=int, default=BIG_EVENTS, help=argparse.SUPPRESS)
    ap.add_argument("--big-files", type=int, default=BIG_FILES, help=argparse.SUPPRESS)
    ap.add_argument("--no-xrootd", action="store_true", help="skip the XRootD dataset")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file")
    ap.add_argument("--keep", action="store_true", help="keep bench/work/skim")
    args = ap.parse_args()
    if args.files < 8:
        ap.error("the benchmark needs at least 8 files")

    shutil.rmtree(WORK, ignore_errors=True)
    storage, var = WORK / "storage", WORK / "var"
    storage.mkdir(parents=True)
    inputs = {"local": cached_dataset(args.events, args.files, args.cluster)}
    if args.big:
        inputs["big"] = cached_dataset(args.big_events, args.big_files, args.cluster)
    setup_django(var, storage, [folder for folder, _ in inputs.values()])
    from django.contrib.auth.models import User

    user = User.objects.create_user("bench")

    # label -> (storage URL, files, URLs the baseline reads, description, local copy)
    datasets = {
        label: (folder.as_uri(), rels, [str(folder / r) for r in rels], "local disk", folder)
        for label, (folder, rels) in inputs.items()
    }
    met50, met90, met99 = quantile_met(0.50), quantile_met(0.90), quantile_met(0.99)
    results: dict = {
        "workers": args.workers,
        "rounds": args.rounds,
        "cluster_entries": args.cluster,
        "machine": machine(),
        "datasets": {},
        "cases": [],
    }
    server = pool = worker = None
    try:
        if not args.no_xrootd:
            server = start_server(*inputs["local"])
            if server is not None:
                se_url = server.se_url("bench")
                rels = inputs["local"][1]
                urls = [f"{se_url}/{r}" for r in rels]
                datasets["xrootd"] = (se_url, rels, urls, "loopback XRootD", inputs["local"][0])
        pool = start_pool(args.workers)
        worker = start_worker(WORK / "worker.log", args.workers)
        # one TAG build first, so that the imports it needs are not timed with a dataset's
        local, local_rels = inputs["local"]
        register_dataset("warmup", local.as_uri(), local_rels[:1])
        for label, (se_url, rels, urls, where, folder) in datasets.items():
            load = load_average()
            collection, setup = register_dataset(label, se_url, rels)
            results["datasets"][label] = {
                "events": sum(uproot.open(u)["events"].num_entries for u in urls),
                "files": len(rels),
                "mb": round(sum((folder / r).stat().st_size for r in rels) / 1e6),
                "storage": where,
                "load_before_setup": load,
                **setup,
            }
            print(f"{label}: {results['datasets'][label]}", flush=True)
            # one small skim first, so that worker start-up and imports are not timed
            dss_skim(collection, "n_muon >= 2", f"user.bench.{label}_warmup", user, event_limit=100)
            k = 3  # the run range of file 3
            lo, hi = FIRST_RUN + k * RUNS_PER_FILE, FIRST_RUN + (k + 1) * RUNS_PER_FILE
            cuts = {
                "run_range": Cut(met90, lo, hi),
                "sparse": Cut(met99),
                "loose": Cut(met50),
            }
            for case, cut in cuts.items():
                row = run_case(
                    label,
                    case,
                    cut,
                    collection,
                    urls,
                    pool,
                    user,
                    args.rounds,
                    setup["tag_build_s"],
                )
                results["cases"].append(row)
                print(f"  {label} {case}: done", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        if server is not None:
            server.close()

    print_table(results)
    write_results(args.out, results)
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


def start_server(folder: Path, rels: list[str]):
    """A loopback XRootD serving a copy of ``folder``, or None (with a note) without xrootd."""
    from tests.xrootd import XRootDUnavailable, start_xrootd

    try:
        import XRootD  # noqa: F401
    except ImportError:
        print("note: no XRootD client in this venv; the xrootd case is skipped", flush=True)
        return None
    try:
        server = start_xrootd(WORK / "xrootd")
    except XRootDUnavailable as e:
        print(f"note: {e}; the xrootd case is skipped", flush=True)
        return None
    export = server.root / "bench"
    export.mkdir(parents=True, exist_ok=True)
    for r in rels:
        shutil.copyfile(folder / r, export / r)
    server.se_url("bench")  # hands the folder to the server's user
    return server


if __name__ == "__main__":
    sys.exit(main())
