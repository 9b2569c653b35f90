"""``dss``: the DSS portal from the command line (skims, provenance, TAG queries).

Plain Python over the REST API (requests only, no Django), so it installs on a laptop
with ``pip install .`` and needs nothing of the server. The portal and the token come
from ``--url``/``--token``, ``DSS_URL``/``DSS_TOKEN`` or ``~/.config/dss/client.ini``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from dss.apiclient import ApiClient
from dss.errors import DSSError, InvalidInput

EXIT_CODES = """exit codes:
  0  done (for --watch: the skim succeeded)
  1  other error          2  bad input or usage    3  not found
  4  conflict (name taken, identical skim)         5  bad event file
  6  checksum mismatch    7  storage error
  10 the skim failed      11 the skim ended partial 12 the skim was cancelled
  130 interrupted
"""
FINAL_EXIT = {"succeeded": 0, "failed": 10, "partial": 11, "cancelled": 12}
FINAL = set(FINAL_EXIT)


class Output:
    """Where results go: human text on stdout, or one JSON document with --json."""

    def __init__(self, as_json: bool, quiet: bool = False):
        self.as_json = as_json
        self.quiet = quiet

    def result(self, data: Any, text: str) -> None:
        if self.as_json:
            json.dump(data, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        elif text:
            print(text)

    def note(self, text: str) -> None:
        if not self.quiet and not self.as_json:
            print(text, file=sys.stderr)


# --------------------------------------------------------------------------- skims


def read_good_runs(path: str | None) -> str | None:
    """The text of the good-run list file ``path`` (ATLAS XML or JSON; ``-`` reads
    stdin), for the portal to read; None without one."""
    if not path:
        return None
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the good-run list: {exc.strerror or exc}", where=path
        ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the good-run list is not UTF-8 text (byte {exc.start + 1})", where=path
        ) from None


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def skim_submit(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    if not args.collection and not args.dataset:
        raise InvalidInput(
            "name at least one input with --collection ID or --dataset NAME", where="inputs"
        )
    body = {
        "collections": args.collection or [],
        "datasets": args.dataset or [],
        "selection": args.selection,
        "output_name": args.output,
        "branches": _split(args.branches),
        "output_format": args.format,
        "failure_policy": args.policy,
        "force": args.force,
    }
    if args.preset:
        body["preset"] = args.preset
    if args.se:
        body["output_se"] = args.se
    if args.limit is not None:
        body["event_limit"] = args.limit
    if args.grl:
        body["good_runs"] = read_good_runs(args.grl)
    if args.tree:
        body["output_tree"] = args.tree
    if args.copy:
        body["copy_objects"] = _split(args.copy)
    if args.merge_mb is not None:
        body["merge_mb"] = args.merge_mb
    if args.site:
        body["site"] = args.site
    skim = client.request("POST", "/api/skims/", json=body)
    out.note(f"skim #{skim['id']} submitted: {skim['output_name']}")
    for warning in skim.get("warnings") or []:
        print(f"dss: warning: {warning}", file=sys.stderr)
    if args.watch:
        return watch(client, skim["id"], out)
    out.result(skim, str(skim["id"]))
    return 0


def _describe(s: dict) -> str:
    inputs = ", ".join(i["dataset"] for i in s.get("inputs", []))
    lines = [
        f"skim #{s['id']}  {s['state']}  {s['percent']}%",
        f"  inputs     {inputs}",
        f"  selection  {s['selection']}",
        *(
            [
                f"  good runs  {len(s['good_runs']):,} runs, "
                f"{sum(len(r) for r in s['good_runs'].values()):,} luminosity-block ranges"
            ]
            if s.get("good_runs")
            else []
        ),
        f"  output     {s['output_name']} ({s['output_format']}, tree "
        f"{s.get('output_tree') or 'events'}) on {s['output_se']}",
        *([f"  copied     {', '.join(s['copy_objects'])}"] if s.get("copy_objects") else []),
        *([f"  merged     into files of about {s['merge_mb']:g} MB"] if s.get("merge_mb") else []),
        f"  events     {s['events_written']} written of {s['events_selected']} selected",
        *(
            [f"  runs on    {s['site'] or 'sites the broker chooses'}"]
            if s.get("run_on") in ("site", "auto")
            else []
        ),
    ]
    if s.get("message"):
        lines.append(f"  message    {s['message']}")
    for p in s.get("parts", []):
        note = f"  {p['message']}" if p.get("message") else ""
        more = len(p.get("inputs") or [p["input_lfn"]]) - 1
        inputs = p["input_lfn"] + (f" and {more} more" if more else "")
        ran = (
            f"  [{p['site']} job {p.get('batch_job_id') or '-'} on {p.get('batch_node') or '-'}]"
            if p.get("site")
            else ""
        )
        lines.append(
            f"  part {p['number']:>4}  {p['state']:<9} {inputs} → {p['output_lfn'] or '-'}"
            f"{ran}{note}"
        )
    return "\n".join(lines)


def watch(client: ApiClient, skim_id: int, out: Output, interval: float = 1.0) -> int:
    """Follow a skim until it ends, with a progress bar on a terminal."""
    bar = None
    if sys.stderr.isatty() and not out.quiet and not out.as_json:
        try:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="ev", desc=f"skim #{skim_id}", file=sys.stderr)
        except ImportError:
            bar = None
    last = None
    while True:
        s = client.request("GET", f"/api/skims/{skim_id}/")
        if bar is not None:
            bar.total = max(s["progress_total"], 1)
            bar.n = s["progress_done"]
            bar.set_postfix_str(s["state"])
            bar.refresh()
        elif (s["state"], s["progress_done"]) != last:
            out.note(
                f"skim #{skim_id}: {s['state']} {s['progress_done']}/{s['progress_total']} events"
            )
            last = (s["state"], s["progress_done"])
        if s["state"] in FINAL:
            break
        time.sleep(interval)
    if bar is not None:
        bar.close()
    out.result(s, _describe(s))
    return FINAL_EXIT[s["state"]]


def skim_status(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    if args.watch:
        return watch(client, args.id, out, args.interval)
    s = client.request("GET", f"/api/skims/{args.id}/")
    out.result(s, _describe(s))
    return 0


def skim_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    params = {"limit": args.limit}
    if args.mine:
        params["mine"] = "1"
    if args.state:
        params["state"] = args.state
    rows = client.request("GET", "/api/skims/", params=params)["results"]
    text = "\n".join(
        f"#{s['id']:<6} {s['state']:<10} {s['events_written']:>10}  {s['output_name']:<40} {s['selection']}"
        for s in rows
    )
    out.result(rows, text or "no skims")
    return 0


def skim_cancel(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    s = client.request("POST", f"/api/skims/{args.id}/cancel/")
    out.result(s, f"skim #{s['id']} {s['state']}")
    return 0


def skim_retry(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    s = client.request("POST", f"/api/skims/{args.id}/retry/")
    out.note(f"skim #{s['id']}: failed files queued again")
    return watch(client, s["id"], out) if args.watch else (out.result(s, str(s["id"])) or 0)


def _record_of(client: ApiClient, skim_id: int) -> int:
    s = client.request("GET", f"/api/skims/{skim_id}/")
    if not s.get("provenance"):
        raise InvalidInput(
            f"skim #{skim_id} has no provenance record yet (it is {s['state']})", where="skim"
        )
    return s["provenance"]


def provenance(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    record = _record_of(client, args.id)
    fmt = "prov-json" if args.format == "prov-json" else "json"
    body = client.request("GET", f"/api/provenance/{record}/", params={"export": fmt})
    json.dump(body, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


def skim_rerun(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    record = _record_of(client, args.id)
    body = {"output_name": args.output} if args.output else {}
    s = client.request("POST", f"/api/provenance/{record}/rerun/", json=body)
    out.note(f"skim #{s['id']} re-runs skim #{args.id} into {s['output_name']}")
    return watch(client, s["id"], out) if args.watch else (out.result(s, str(s["id"])) or 0)


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dss",
        description="The Dataset Skimming Service from the command line.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="portal URL (default: $DSS_URL or ~/.config/dss/client.ini)")
    p.add_argument("--token", help="API token (default: $DSS_TOKEN or the ini file)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or notes on stderr")
    groups = p.add_subparsers(dest="group", required=True, metavar="COMMAND")

    skim = groups.add_parser("skim", help="submit and follow skims").add_subparsers(
        dest="cmd", required=True
    )
    s = skim.add_parser(
        "submit",
        help="submit a skim",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "-c", "--collection", type=int, action="append", help="a TAG collection id (repeatable)"
    )
    s.add_argument(
        "-d",
        "--dataset",
        action="append",
        help="a dataset name (repeatable; uses its TAGs, else a scan)",
    )
    s.add_argument("-s", "--selection", required=True, help="e.g. 'n_muon >= 2 && met > 40'")
    s.add_argument("-o", "--output", required=True, help="the output dataset's name, scope.name")
    s.add_argument(
        "-b",
        "--branches",
        action="append",
        help="branches or patterns to keep, comma-separated (default: all)",
    )
    s.add_argument("--preset", help="a site branch preset instead of --branches")
    s.add_argument("-f", "--format", choices=["root", "rntuple", "parquet"], default="root")
    s.add_argument("--se", help="output storage element (default: the site's)")
    s.add_argument("--limit", type=int, help="stop after this many events")
    s.add_argument(
        "--grl",
        metavar="FILE",
        help="keep only the runs and luminosity blocks of this good-run list "
        '(ATLAS XML or JSON {"run": [[first, last], …]}; - for stdin)',
    )
    s.add_argument(
        "--tree", metavar="NAME", help="the output files' event tree (default: the inputs')"
    )
    s.add_argument(
        "--copy",
        metavar="NAME",
        action="append",
        help="a small object of each input file to copy into its output: a metadata tree or "
        "a histogram, by name or glob pattern (repeatable; comma-separated)",
    )
    s.add_argument(
        "--merge-mb",
        type=float,
        metavar="MB",
        help="merge the outputs into files of about this many MB",
    )
    s.add_argument(
        "--site",
        metavar="NAME|auto",
        help="run the parts as batch jobs on this compute site, or on sites the broker "
        "chooses (auto); default: the portal's own workers",
    )
    s.add_argument(
        "--policy", choices=["fail", "partial"], default="fail", help="when a file fails"
    )
    s.add_argument(
        "--force", action="store_true", help="run even if an identical skim already succeeded"
    )
    s.add_argument("-w", "--watch", action="store_true", help="follow the skim until it ends")
    s.set_defaults(func=skim_submit)

    s = skim.add_parser("status", help="show a skim (--watch: follow it with a progress bar)")
    s.add_argument("id", type=int)
    s.add_argument("-w", "--watch", action="store_true")
    s.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    s.set_defaults(func=skim_status)

    s = skim.add_parser("list", help="list skims, newest first")
    s.add_argument("--mine", action="store_true")
    s.add_argument(
        "--state", choices=["queued", "running", "succeeded", "partial", "failed", "cancelled"]
    )
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=skim_list)

    s = skim.add_parser("cancel", help="cancel a skim; its partial output is removed")
    s.add_argument("id", type=int)
    s.set_defaults(func=skim_cancel)

    s = skim.add_parser("retry", help="run again only the failed files of a skim")
    s.add_argument("id", type=int)
    s.add_argument("-w", "--watch", action="store_true")
    s.set_defaults(func=skim_retry)

    s = skim.add_parser("rerun", help="a new skim from a skim's provenance record")
    s.add_argument("id", type=int, help="the skim to re-run")
    s.add_argument("-o", "--output", help="the new output name (default: <name>_rerunN)")
    s.add_argument("-w", "--watch", action="store_true")
    s.set_defaults(func=skim_rerun)

    s = groups.add_parser("provenance", help="a skim's provenance record")
    s.add_argument("id", type=int, help="the skim id")
    s.add_argument("--format", choices=["json", "prov-json"], default="json")
    s.set_defaults(func=provenance)

    try:
        from tagdb.cli import register as register_tag_commands
    except ImportError:  # a laptop install without the TAG commands
        register_tag_commands = None
    if register_tag_commands is not None:
        register_tag_commands(groups)
    try:
        from conditions.cli import register as register_conditions_commands
    except ImportError:  # a laptop install without the conditions commands
        register_conditions_commands = None
    if register_conditions_commands is not None:
        register_conditions_commands(groups)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json, args.quiet)
    try:
        client = ApiClient.from_settings(args.url, args.token)
        return args.func(client, args, out) or 0
    except DSSError as e:
        if args.json:
            json.dump(e.as_dict(), sys.stdout)
            sys.stdout.write("\n")
        print(f"dss: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("dss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
