"""Skim benchmark: DSS against a plain uproot script, on a synthesised run-ordered dataset.

    .venv/bin/python bench/skim.py                 # 10^6 events in 8 files
    .venv/bin/python bench/skim.py --events 200000 --files 8 --repeat 1

The dataset is drawn from the demo H->ZZ events (all their branches, jagged ones
included), with run and event numbers added so that each file holds one run range, as
real data does. Each file is written in clusters of --cluster entries.

Three skims, each timed from submission to the registered output dataset, through the
real portal code and a real Celery worker (2 processes, one task per input file), beside
a plain uproot script that reads every file, filters and writes the same output:

  run_range  events of one run range (one file of eight), about a tenth of that range
  sparse     about 1% of the events, spread over all files
  loose      about 50% of the events

Prints a table and writes bench/results/skim.json. Work files go under bench/work/skim
(removed at the end unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "skim"
RESULTS = ROOT / "bench" / "results" / "skim.json"
HZZ = ROOT / "data" / "demo" / "uproot-HZZ.root"
RUNS_PER_FILE = 100
sys.path.insert(0, str(ROOT))
from skims.eventio import TTreeWriter  # noqa: E402

FIRST_RUN = 300000

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


def synthesise(
    n_events: int, n_files: int, cluster: int, storage: Path, seed: int = 7
) -> list[str]:
    """Write ``n_files`` ROOT files of H->ZZ-like events, file k holding runs of range k."""
    source = uproot.open(HZZ)["events"].arrays(library="ak")
    rng = np.random.default_rng(seed)
    per_file = n_events // n_files
    rels = []
    for k in range(n_files):
        rel = f"bench/synth_{k:02d}.root"
        path = storage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        first_run = FIRST_RUN + k * RUNS_PER_FILE
        with uproot.recreate(path) as f:
            writer = TTreeWriter(f, "events")
            for start in range(0, per_file, cluster):
                n = min(cluster, per_file - start)
                chunk = source[rng.integers(0, len(source), n)]
                chunk = ak.with_field(
                    chunk,
                    (first_run + (start + np.arange(n)) * RUNS_PER_FILE // per_file).astype(
                        np.int32
                    ),
                    "Run",
                )
                chunk = ak.with_field(chunk, (start + np.arange(n) + 1).astype(np.int64), "Event")
                writer.write(chunk)
        rels.append(rel)
    return rels


def quantile_met(q: float) -> float:
    a = uproot.open(HZZ)["events"].arrays(["MET_px", "MET_py"], library="np")
    return float(np.quantile(np.hypot(a["MET_px"], a["MET_py"]), q))


# --------------------------------------------------------------------------- the plain script


def uproot_script(paths: list[Path], cut, out_dir: Path) -> int:
    """What a physicist writes without DSS: read every file, filter, write what passes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for i, path in enumerate(paths):
        with uproot.open(path) as f:
            events = f["events"].arrays(library="ak")
        selected = events[cut(events)]
        if len(selected):
            with uproot.recreate(out_dir / f"out_{i:02d}.root") as out:
                out.mktree(
                    "events", {name: selected[name].type.content for name in selected.fields}
                )
                out["events"].extend({name: selected[name] for name in selected.fields})
            written += len(selected)
    return written


# --------------------------------------------------------------------------- DSS


def setup_portal(var: Path, storage: Path, rels: list[str]):
    os.environ["DSS_VAR_DIR"] = str(var)
    os.environ["DSS_STORAGE_ROOT"] = str(storage)
    # a queue of its own, so that a broker shared with other runs hands it only its own tasks
    os.environ["DSS_CELERY_QUEUE"] = f"dss-bench-{os.getpid()}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from dmu import actions as dmu_actions
    from tagdb import actions as tag_actions
    from tagdb.models import TagSchema

    se = dmu_actions.do_add_storage_element("LOCAL", storage.as_uri(), user_writable=True)
    t = time.perf_counter()
    dataset, _ = dmu_actions.check_register_dataset("bench.synth", se, rels)
    register_s = time.perf_counter() - t
    schema, _ = TagSchema.objects.get_or_create(
        name="bench_hzz", version=1, defaults={"tree": "events", "definition": BENCH_SCHEMA}
    )
    collection = tag_actions.get_or_create_collection(dataset, schema)
    t = time.perf_counter()
    tag_actions.check_build_now(collection)
    build_s = time.perf_counter() - t
    collection.refresh_from_db()
    return collection, {"register_s": register_s, "tag_build_s": build_s}


def start_worker(log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dss",
            "worker",
            "--concurrency=2",
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


def warm_worker(collection, user) -> None:
    """One small skim first, so that worker start-up and imports are not timed."""
    dss_skim(collection, "n_muon >= 2", "bench.warmup", user, event_limit=100)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cluster", type=int, default=4000, help="entries per basket cluster")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--keep", action="store_true", help="keep bench/work/skim")
    args = ap.parse_args()
    if args.files < 8:
        ap.error("the benchmark needs at least 8 files")

    shutil.rmtree(WORK, ignore_errors=True)
    storage, var = WORK / "storage", WORK / "var"
    storage.mkdir(parents=True)
    t = time.perf_counter()
    rels = synthesise(args.events, args.files, args.cluster, storage)
    synth_s = time.perf_counter() - t
    paths = [storage / r for r in rels]
    n_events = sum(uproot.open(p)["events"].num_entries for p in paths)
    print(
        f"synthesised {n_events} events in {len(paths)} files ({sum(p.stat().st_size for p in paths) / 1e6:.0f} MB) "
        f"in {synth_s:.1f} s",
        flush=True,
    )

    collection, setup = setup_portal(var, storage, rels)
    print(
        f"registered in {setup['register_s']:.1f} s, TAGs built in {setup['tag_build_s']:.1f} s",
        flush=True,
    )
    from django.contrib.auth.models import User

    user = User.objects.create_user("bench")

    # the run range of file 3 of 8, keeping about a tenth of its events
    k = 3
    lo, hi = FIRST_RUN + k * RUNS_PER_FILE, FIRST_RUN + (k + 1) * RUNS_PER_FILE
    met90, met99, met50 = quantile_met(0.90), quantile_met(0.99), quantile_met(0.50)
    met90, met99, met50 = round(met90, 3), round(met99, 3), round(met50, 3)

    def met(e):  # in double precision, as the TAG attribute is computed
        return np.hypot(
            ak.values_astype(e.MET_px, np.float64), ak.values_astype(e.MET_py, np.float64)
        )

    cases = {
        "run_range": (
            f"run >= {lo} && run < {hi} && met > {met90}",
            lambda e: (e.Run >= lo) & (e.Run < hi) & (met(e) > met90),
        ),
        "sparse": (f"met > {met99}", lambda e: met(e) > met99),
        "loose": (f"met > {met50}", lambda e: met(e) > met50),
    }

    worker = start_worker(WORK / "worker.log")
    results: dict = {
        "events": n_events,
        "files": len(paths),
        "cluster_entries": args.cluster,
        "worker_processes": 2,
        "setup": setup,
    }
    try:
        warm_worker(collection, user)
        for case, (selection, cut) in cases.items():
            dss_times, script_times = [], []
            for r in range(args.repeat):
                out = WORK / "script-out" / f"{case}-{r}"
                t = time.perf_counter()
                n_script = uproot_script(paths, cut, out)
                script_times.append(time.perf_counter() - t)
                shutil.rmtree(out, ignore_errors=True)
                dss_s, n_dss = dss_skim(collection, selection, f"bench.{case}_{r}", user)
                dss_times.append(dss_s)
                if n_dss != n_script:
                    raise SystemExit(f"{case}: DSS wrote {n_dss} events, the script {n_script}")
            results[case] = {
                "selection": selection,
                "dss_s": round(statistics.median(dss_times), 3),
                "uproot_s": round(statistics.median(script_times), 3),
                "events_out": n_dss,
                "ratio": round(statistics.median(script_times) / statistics.median(dss_times), 2),
            }
            print(f"  {case}: done", flush=True)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    targets = {"run_range": 5.0, "sparse": 1.0, "loose": 0.9}
    print()
    print(
        f"Skim benchmark: {n_events:,} events in {len(paths)} files, clusters of {args.cluster} entries, "
        f"median of {args.repeat}"
    )
    print(
        f"{'skim':<10} {'events out':>11} {'DSS s':>8} {'uproot s':>9} {'speed-up':>9} {'target':>7}"
    )
    for case in cases:
        r = results[case]
        ok = "ok" if r["ratio"] >= targets[case] else "MISSED"
        print(
            f"{case:<10} {r['events_out']:>11,} {r['dss_s']:>8.2f} {r['uproot_s']:>9.2f} {r['ratio']:>8.2f}x "
            f"{'>= ' + str(targets[case]):>7} {ok}"
        )
    print(
        "DSS: submission to registered output through a Celery worker with 2 processes (one task per file);"
    )
    print("uproot: one process reading every file whole, filtering, writing.")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
