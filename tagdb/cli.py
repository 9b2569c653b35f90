"""``dss tag``: TAG collections from the command line, through the portal's REST API.

Plain Python (no Django, no database drivers): the selection is checked by the portal,
which answers a bad one with the column of the bad token. ``register(subparsers)`` adds
the ``tag`` group to the ``dss`` command line; each command stores its function as
``func(client, args, out) -> exit code``, as the other ``dss`` commands do (a client of
None is made from ``--url``/``--token``, ``DSS_URL``/``DSS_TOKEN`` or client.ini; text
goes to ``out`` when it is a stream, else to stdout; ``--json`` prints JSON). Commands
raise :class:`dss.errors.DSSError`, which the ``dss`` main turns into a message and its
exit code; :func:`main` does the same when this module runs alone.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from dss.cli import read_good_runs
from dss.errors import DSSError, InvalidInput, NotFound

EVENT_PAGE = 50_000
FINAL = {"succeeded", "partial", "failed", "cancelled"}
BAR_WIDTH = 50


class BuildFailed(DSSError):
    code = "build_failed"
    exit_code = 1


class Client:
    """The two calls the commands make, over any object with ``request(method, path,
    json=...)`` (``dss.apiclient.ApiClient``) or with ``get``/``post`` methods."""

    def __init__(self, api: Any):
        self.api = api

    def get(self, path: str, params: dict | None = None) -> Any:
        if hasattr(self.api, "request"):
            return self.api.request("GET", path, params=params)
        return self.api.get(path, params=params)

    def all(self, path: str, params: dict | None = None) -> list:
        """Every row of a list the portal answers a page at a time (``results``, ``count``)."""
        rows: list = []
        while True:
            page = self.get(path, {**(params or {}), "offset": len(rows)})
            if not isinstance(page, dict):  # a portal from before lists had pages
                return page
            rows += page["results"]
            if not page["results"] or len(rows) >= page["count"]:
                return rows

    def post(self, path: str, body: dict | None = None) -> Any:
        if hasattr(self.api, "request"):
            return self.api.request("POST", path, json=body)
        return self.api.post(path, json=body)


def _stream(out: Any) -> TextIO:
    """Where text goes: ``out`` if it is a stream (tests), else stdout (the ``dss`` main
    passes its own output object)."""
    return out if hasattr(out, "write") else sys.stdout


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _client(args: argparse.Namespace, client: Any) -> Client:
    if client is None:
        from dss.apiclient import ApiClient

        client = ApiClient.from_settings(getattr(args, "url", None), getattr(args, "token", None))
    return client if isinstance(client, Client) else Client(client)


def resolve_collection(client: Client, ref: str) -> dict:
    """A collection by number, dataset name, or ``dataset/schema``; the newest built one
    when a dataset has several."""
    ref = ref.strip()
    if ref.isdigit():
        return client.get(f"/api/tags/{int(ref)}")
    dataset, _, schema = ref.partition("/")
    rows = client.all("/api/tags", params={"dataset": dataset})
    if schema:
        rows = [r for r in rows if r["schema"] == schema]
    if not rows:
        raise NotFound(f"no TAG collection of {ref!r} (see: dss tag list)", where="collection")
    ready = [r for r in rows if r["state"] == "ready"] or rows
    ready.sort(key=lambda r: (r["built_at"] or "", r["schema_version"]), reverse=True)
    return ready[0]


def _with_good_runs(body: dict, args: argparse.Namespace) -> dict:
    text = read_good_runs(getattr(args, "grl", None))
    if text is not None:
        body["good_runs"] = text
    return body


def warn(args: argparse.Namespace, answer: dict) -> None:
    """Print an answer's warnings (runs of the good-run list that the collection lacks)
    on stderr, one ``dss: warning: …`` line each."""
    err = getattr(args, "err", None) or sys.stderr
    for line in answer.get("warnings") or []:
        print(f"dss: warning: {line}", file=err)


def _query_path(collection: dict, what: str) -> str:
    return f"/api/tags/{collection['id']}/{what}"


def _query(api: Client, collection: dict, what: str, body: dict) -> Any:
    """POST a query; a bad selection's error gets the selection with a caret under the
    column the portal named."""
    try:
        return api.post(_query_path(collection, what), body)
    except DSSError as err:
        selection = body.get("selection") or ""
        where = err.where or ""
        if where.startswith("column ") and where[7:].isdigit() and "\n" not in selection:
            column = int(where[7:])
            if 1 <= column <= len(selection) + 1:
                err.message = f"{err.message}\n  {selection}\n  {' ' * (column - 1)}^"
        raise


# --------------------------------------------------------------------------- commands


def cmd_list(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """Every TAG collection: number, dataset, schema, state, events."""
    api, out = _client(args, client), _stream(out)
    rows = api.all("/api/tags")
    if _json(args):
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        print("no TAG collections yet (build one: dss tag build DATASET)", file=out)
        return 0
    width = max(len(r["dataset"]) for r in rows)
    print(
        f"{'id':>4}  {'dataset':<{width}}  {'schema':<14} {'state':<9} {'events':>12}  built",
        file=out,
    )
    for r in rows:
        schema = f"{r['schema']} v{r['schema_version']}"
        events = f"{r['n_events']:,}" if r["state"] == "ready" else "–"
        built = (r["built_at"] or "–")[:16].replace("T", " ")
        print(
            f"{r['id']:>4}  {r['dataset']:<{width}}  {schema:<14} {r['state']:<9} {events:>12}  {built}",
            file=out,
        )
    return 0


def _build_line(b: dict) -> str:
    line = (
        f"build #{b['id']} of {b['dataset']} ({b['schema']}): {b['state']}, "
        f"{b['progress_done']} of {b['progress_total']} file(s), {b['n_events']:,} events"
    )
    return line + (f" — {b['message']}" if b.get("message") else "")


def cmd_build(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """Queue a (re)build of a dataset's TAGs; with --wait, follow it to the end."""
    api, out = _client(args, client), _stream(out)
    body: dict[str, Any] = {"dataset": args.dataset}
    if args.schema:
        body["schema"] = args.schema
    build = api.post("/api/tags/build", body)
    print(f"build #{build['id']} of {build['dataset']} ({build['schema']}) queued", file=out)
    if not args.wait:
        return 0
    last = ""
    deadline = time.monotonic() + args.timeout
    while build["state"] not in FINAL:
        if time.monotonic() > deadline:
            raise BuildFailed(
                f"build #{build['id']} did not finish within {args.timeout:g} s (still "
                f"{build['state']}); it goes on, see /tags/builds/{build['id']}/ on the portal",
                where=f"build {build['id']}",
            )
        time.sleep(args.poll)
        build = api.get(f"/api/tags/builds/{build['id']}")
        line = _build_line(build)
        if line != last:
            print(line, file=out)
            last = line
    if build["state"] != "succeeded":
        raise BuildFailed(build.get("message") or build["state"], where=f"build {build['id']}")
    return 0


def cmd_count(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """How many events pass a selection, and in how many files."""
    api, out = _client(args, client), _stream(out)
    collection = resolve_collection(api, args.collection)
    r = _query(api, collection, "count", _with_good_runs({"selection": args.selection}, args))
    warn(args, r)
    if _json(args):
        json.dump(r, out, indent=2)
        out.write("\n")
        return 0
    percent = 100.0 * r["count"] / r["total"] if r["total"] else 0.0
    grl = r.get("good_runs")
    within = f" within the good-run list ({grl['runs']:,} runs)" if grl else ""
    print(
        f"{r['count']:,} of {r['total']:,} events ({percent:.1f}%) pass "
        f"{r['selection'] or 'no selection'}{within} in {collection['dataset']}; "
        f"they are in {r['files_touched']} of {r['files_total']} file(s)",
        file=out,
    )
    return 0


def _edge(x: float) -> str:
    return f"{x:.4g}"


def text_histogram(h: dict, width: int = BAR_WIDTH) -> list[str]:
    """A histogram as lines of text: each bin's range, count and a bar of blocks."""
    edges, counts = h["edges"], h["counts"]
    top = max(counts, default=0) or 1
    labels = [f"[{_edge(edges[i])}, {_edge(edges[i + 1])})" for i in range(len(counts))]
    if labels:
        labels[-1] = labels[-1][:-1] + "]"
    label_width = max((len(s) for s in labels), default=0)
    count_width = max((len(f"{c:,}") for c in counts), default=1)
    unit = f" [{h['unit']}]" if h.get("unit") else ""
    within = " within the good-run list" if h.get("good_runs") else ""
    lines = [f"{h['attribute']}{unit} for {h['selection'] or 'all events'}{within}"]
    if not any(counts):
        # Fifty empty bars say less than one line.
        if h["total"] > (h.get("missing") or 0) and edges:
            lines.append(f"none of them in [{_edge(edges[0])}, {_edge(edges[-1])}]")
        elif not h["total"]:
            lines.append("no events pass")
        counts, labels = [], []
    for label, n in zip(labels, counts, strict=True):
        eighths = round(n / top * width * 8)
        bar = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
        lines.append(f"{label:>{label_width}} {n:>{count_width},} {bar}")
    extra = [
        f"{h[key]:,} {what}"
        for key, what in (("underflow", "below"), ("overflow", "above"))
        if h.get(key)
    ]
    events = "event" if h["total"] == 1 else "events"
    lines.append(f"{h['total']:,} {events}" + (f" ({', '.join(extra)})" if extra else ""))
    missing = h.get("missing") or 0
    if missing:
        have = "event has" if missing == 1 else "events have"
        lines.append(f"{missing:,} {have} no {h['attribute']} (counted apart, not drawn)")
    return lines


def cmd_hist(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """The distribution of an attribute under a selection, drawn on the terminal."""
    api, out = _client(args, client), _stream(out)
    collection = resolve_collection(api, args.collection)
    body: dict[str, Any] = {"attribute": args.attribute, "selection": args.selection}
    if args.bins is not None:
        body["bins"] = args.bins
    if args.range:
        body["lo"], body["hi"] = args.range
    h = _query(api, collection, "histogram", _with_good_runs(body, args))
    warn(args, h)
    if _json(args):
        json.dump(h, out, indent=2)
        out.write("\n")
        return 0
    for line in text_histogram(h):
        print(line, file=out)
    return 0


def _pages(
    api: Client, collection: dict, args: argparse.Namespace, attributes: Sequence[str]
) -> Any:
    offset: int | None = 0
    good_runs = read_good_runs(getattr(args, "grl", None))
    body = {"selection": args.selection, "format": "json", "limit": EVENT_PAGE}
    if attributes:
        body["attributes"] = list(attributes)
    if good_runs is not None:
        body["good_runs"] = good_runs
    while offset is not None:
        page = _query(api, collection, "events", {**body, "offset": offset})
        if offset == 0:
            warn(args, page)
        yield page
        offset = page["next_offset"]


def cmd_events(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """The passing events (file GUID, entry, run, event, and the attributes asked for)
    as CSV or JSON; a missing attribute value is an empty field, or null."""
    api, out = _client(args, client), _stream(out)
    names = list(dict.fromkeys(args.attribute or []))
    collection = resolve_collection(api, args.collection)
    # The first page answers for the selection and the attributes: a mistake in either
    # is reported before anything is written (and no half-written file is left).
    pages = _pages(api, collection, args, names)
    pages = itertools.chain([next(pages)], pages)
    target: TextIO
    if args.output and args.output != "-":
        target = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
    else:
        target = out
    n = 0
    try:
        if args.format == "csv":
            writer = csv.writer(target)
            columns = ["file_guid", "entry", "run", "event", *names]
            writer.writerow(columns)
            for page in pages:
                for ev in page["events"]:
                    writer.writerow(["" if ev[c] is None else ev[c] for c in columns])
                n += len(page["events"])
        else:
            events: list[dict] = []
            selection = ""
            for page in pages:
                events.extend(page["events"])
                selection = page["selection"]
            n = len(events)
            doc = {
                "collection": collection["id"],
                "dataset": collection["dataset"],
                "selection": selection,
                "events": events,
            }
            json.dump(doc, target, indent=1)
            target.write("\n")
    finally:
        if target is not out:
            target.close()
    if args.output and args.output != "-":
        print(f"{n:,} events written to {args.output}", file=out)
    return 0


def cmd_pick(client: Any, args: argparse.Namespace, out: Any = None) -> int:
    """Where events given by run and event number live; which are missing or duplicated."""
    api, out = _client(args, client), _stream(out)
    collection = resolve_collection(api, args.collection)
    path = Path(args.file)
    try:
        text = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the event list: {exc.strerror}", where=args.file) from None
    except UnicodeDecodeError:
        raise InvalidInput("the event list is not UTF-8 text", where=args.file) from None
    r = api.post(_query_path(collection, "pick"), {"events": text})
    if _json(args):
        json.dump(r, out, indent=2)
        out.write("\n")
        return 0
    print(f"{'run':>10} {'event':>20}  {'dataset':<20} {'file':<36} {'entry':>8}", file=out)
    for p in r["found"]:
        where = p["lfn"] or p["file_guid"]
        print(
            f"{p['run']:>10} {p['event']:>20}  {p['dataset']:<20} {where:<36} {p['entry']:>8}",
            file=out,
        )
    print(f"{len(r['found']):,} event(s) found for {r['asked']:,} pair(s)", file=out)
    if r["missing"]:
        print("not found: " + ", ".join(f"{a}:{b}" for a, b in r["missing"]), file=out)
    if r["duplicates"]:
        print("more than one event: " + ", ".join(f"{a}:{b}" for a, b in r["duplicates"]), file=out)
    return 0


# --------------------------------------------------------------------------- parser


def register(
    subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """Add ``tag`` and its commands to a ``dss`` parser's subparsers; returns the group's
    parser. ``parents`` carry options every command shares (``--url``, ``--token``)."""
    group = subparsers.add_parser(
        "tag",
        help="TAG collections: build, count, histograms, event lists, event picking",
        description="TAG collections: build them, count events passing a selection, draw "
        "distributions, export event lists and pick events by run and event number.",
        parents=list(parents),
    )
    commands = group.add_subparsers(dest="tag_command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text, parents=list(parents))
        p.set_defaults(func=func)
        return p

    collection_help = "collection number, dataset name, or dataset/schema"

    def grl_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--grl",
            metavar="FILE",
            help="keep only the runs and luminosity blocks of this good-run list "
            '(ATLAS XML or JSON {"run": [[first, last], …]}; - for stdin)',
        )

    def json_option(p: argparse.ArgumentParser) -> None:
        # SUPPRESS: a --json given before the command (dss --json tag …) must survive.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")

    p = add("list", cmd_list, "list the TAG collections")
    json_option(p)

    p = add("build", cmd_build, "build (or rebuild) a dataset's TAGs on the portal's workers")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--schema", help="TAG schema name (default: the one that fits the files)")
    p.add_argument("--wait", action="store_true", help="follow the build until it ends")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="give up waiting after this many seconds"
    )

    p = add("count", cmd_count, "count the events passing a selection")
    p.add_argument("collection", metavar="COLLECTION", help=collection_help)
    p.add_argument("selection", metavar="SELECTION", nargs="?", default="")
    grl_option(p)
    json_option(p)

    p = add("hist", cmd_hist, "draw the distribution of an attribute under a selection")
    p.add_argument("collection", metavar="COLLECTION", help=collection_help)
    p.add_argument("attribute", metavar="ATTR")
    p.add_argument("selection", metavar="SELECTION", nargs="?", default="")
    p.add_argument("--bins", type=int, help="number of bins (default: automatic)")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), help="histogram range")
    grl_option(p)
    json_option(p)

    p = add("events", cmd_events, "export the passing events (file GUID, entry, run, event)")
    p.add_argument("collection", metavar="COLLECTION", help=collection_help)
    p.add_argument("selection", metavar="SELECTION", nargs="?", default="")
    p.add_argument(
        "-a",
        "--attribute",
        action="append",
        metavar="ATTR",
        help="add this attribute's value to each event (repeatable; missing: empty or null)",
    )
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    grl_option(p)

    p = add("pick", cmd_pick, "find events by run and event number")
    p.add_argument("collection", metavar="COLLECTION", help=collection_help)
    p.add_argument(
        "file",
        metavar="FILE",
        help="one 'run event' pair per line, or JSON [[run, event], …]; - for stdin",
    )
    json_option(p)
    return group


def build_parser() -> argparse.ArgumentParser:
    """A ``dss`` parser holding only the ``tag`` group (for running this module alone)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="portal URL (default: DSS_URL)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="API token (default: DSS_TOKEN)")
    parser = argparse.ArgumentParser(prog="dss", parents=[common])
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), [common])
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    client: Any = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``dss tag …``; returns the exit code. Errors print as ``dss: where: message``."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    args.err = stderr
    try:
        return args.func(client, args, stdout)
    except DSSError as err:
        print(
            f"dss: {err.where}: {err.message}" if err.where else f"dss: {err.message}", file=stderr
        )
        return err.exit_code
    except KeyboardInterrupt:
        print("dss: interrupted", file=stderr)
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: not an error of ours
        return 0


if __name__ == "__main__":
    sys.exit(main())
