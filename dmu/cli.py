"""``dmu``: the data movement utilities for worker nodes and laptops.

Copies files between storage elements with checksum verification and retries, fetches
datasets by their catalog name, uploads and registers new files. Needs only ``requests`` and
``fsspec`` (plus ``tqdm`` for progress bars and ``xrootd``/``fsspec-xrootd`` for root://).
"""

from __future__ import annotations

import argparse
import copy as copy_module
import json
import os
import posixpath
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO
from urllib.parse import quote

from dmu.checksum import checksum_chunks
from dmu.names import check_dataset_name, scope_of
from dmu.storage import StorageEndpoint, deterministic_path, split_url
from dmu.transfer import TransferResult, copy
from dss.errors import ChecksumMismatch, DSSError, InvalidInput, NotFound, StorageError

EXIT_CODES = """\
exit codes:
  0    success
  1    other error (e.g. the portal cannot be reached or refused the token)
  2    bad usage or input (unsafe path, malformed checksum, unknown option)
  3    not found (file, dataset, storage element)
  4    conflict (the destination holds a different file of that name)
  5    bad event file
  6    checksum mismatch
  7    storage error (unreachable, permission denied, no space, read-only)
  130  interrupted

portal settings (get, put, rucio): --url/--token, else DSS_URL/DSS_TOKEN, else
~/.config/dss/client.ini with url = ... and token = ... under [dss].
"""

# Replicas in the order worth trying from a worker node: local disk, then XRootD, then web.
_SCHEME_ORDER = {"file": 0, "root": 1, "xroot": 1, "https": 2, "http": 2}


class Output:
    """Where results and messages go: one JSON document, plain lines, or nothing (-q)."""

    def __init__(self, *, as_json: bool, quiet: bool, stdout: TextIO, stderr: TextIO):
        self.as_json = as_json
        self.quiet = quiet
        self.stdout = stdout
        self.stderr = stderr

    def line(self, text: str) -> None:
        """A result line for people (not printed with --json or -q)."""
        if not self.as_json and not self.quiet:
            print(text, file=self.stdout)

    def document(self, data: Any) -> None:
        """The one JSON document of a --json run."""
        if self.as_json:
            json.dump(data, self.stdout, indent=2, sort_keys=True)
            self.stdout.write("\n")

    def progress(self, label: str) -> Callable[[int, int], None] | None:
        """A progress callback drawing a bar on a terminal's stderr, or None."""
        if self.quiet or not self.stderr.isatty():
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        bar: dict[str, Any] = {}
        lock = threading.Lock()

        def update(done: int, total: int) -> None:
            with lock:
                if "bar" not in bar or done < bar["bar"].n:
                    if "bar" in bar:
                        bar["bar"].close()
                    bar["bar"] = tqdm(
                        total=total,
                        desc=label,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        file=self.stderr,
                        leave=False,
                    )
                bar["bar"].update(done - bar["bar"].n)
                if done >= total:
                    bar["bar"].close()

        return update


def _portal(args: argparse.Namespace) -> Any:
    from dss.apiclient import ApiClient

    return ApiClient.from_settings(args.url, args.token)


def _as_url(text: str) -> str:
    """A command-line location as a URL: relative local paths become absolute file URLs."""
    if "://" in text:
        return text
    return "file://" + os.path.abspath(text)


# -- commands ---------------------------------------------------------------------------


def cmd_cp(args: argparse.Namespace, out: Output) -> int:
    """Copy one file between two URLs (or local paths), verified."""
    src, dst = _as_url(args.src), _as_url(args.dst)
    if args.dst.endswith("/") or (("://" not in args.dst) and os.path.isdir(args.dst)):
        dst = dst.rstrip("/") + "/" + posixpath.basename(split_url(src)[1])
    result = copy(
        src,
        dst,
        expected_adler32=args.adler32,
        expected_bytes=args.bytes,
        retries=args.retries,
        overwrite=args.overwrite,
        progress=out.progress(posixpath.basename(dst)),
    )
    out.document(result.as_dict())
    out.line(_describe(result))
    return 0


def cmd_checksum(args: argparse.Namespace, out: Output) -> int:
    """Print the adler32 (and md5) of a file, computed by streaming it."""
    endpoint, rel = split_url(_as_url(args.target))
    adler32, nbytes, md5 = checksum_chunks(endpoint.read_chunks(rel), md5=args.md5)
    doc = {"url": endpoint.url(rel), "bytes": nbytes, "adler32": adler32}
    if md5 is not None:
        doc["md5"] = md5
    out.document(doc)
    out.line(f"adler32:{adler32}" + (f"  md5:{md5}" if md5 else "") + f"  {nbytes}  {args.target}")
    return 0


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    """List a directory of a storage element."""
    endpoint = StorageEndpoint(_as_url(args.se_url))
    entries = endpoint.ls("")
    out.document(
        {
            "url": endpoint.base_url,
            "entries": [{"name": e.name, "bytes": e.size, "dir": e.is_dir} for e in entries],
        }
    )
    for e in entries:
        out.line(f"{'-' if e.is_dir else e.size:>14}  {e.name}{'/' if e.is_dir else ''}")
    return 0


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    """Fetch a dataset (or one file of it) from the best reachable replica of each file."""
    name, _, lfn = args.what.partition("/")
    check_dataset_name(name)
    dataset = _portal(args).dataset(name)
    files = dataset.get("files") or []
    if lfn:
        files = [f for f in files if f["lfn"] == lfn]
        if not files:
            raise NotFound(f"dataset {name} has no file {lfn!r}", where=args.what)
    if not files:
        raise NotFound(f"dataset {name} has no files", where=name)
    # One file into a path that is not a directory: that path is the file's new name.
    single_target = bool(lfn) and not args.dest.endswith("/") and not os.path.isdir(args.dest)
    if not single_target:
        os.makedirs(args.dest, exist_ok=True)
    dest_dir = os.path.abspath(os.path.dirname(args.dest) if single_target else args.dest)

    def fetch(f: dict) -> TransferResult:
        target = os.path.abspath(args.dest) if single_target else os.path.join(dest_dir, f["lfn"])
        return _fetch_file(f, target, args, out)

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        outcomes = list(pool.map(_capture(fetch), files))
    failed = [(f, o) for f, o in zip(files, outcomes, strict=True) if isinstance(o, DSSError)]
    done = [o for o in outcomes if isinstance(o, TransferResult)]
    out.document(
        {
            "dataset": name,
            "files": [
                o.as_dict() if isinstance(o, TransferResult) else _error_doc(o) for o in outcomes
            ],
            "failed": len(failed),
        }
    )
    for result in done:
        out.line(_describe(result))
    for f, err in failed:
        _print_error(err, out, label=f["lfn"])
    # The first failure decides the exit code; every one was reported above.
    return failed[0][1].exit_code if failed else 0


def _capture(func: Callable[[dict], TransferResult]) -> Callable[[dict], TransferResult | DSSError]:
    def run(item: dict) -> TransferResult | DSSError:
        try:
            return func(item)
        except DSSError as exc:
            return exc

    return run


def _fetch_file(f: dict, target: str, args: argparse.Namespace, out: Output) -> TransferResult:
    return fetch_file(f, target, retries=args.retries, progress=out.progress(f["lfn"]))


def fetch_file(
    f: dict,
    target: str,
    *,
    retries: int = 3,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> TransferResult:
    """Copy one catalog file (``lfn``, ``adler32``, ``bytes``, ``replicas`` as the portal's
    ``/api/datasets/<name>/`` lists them) to the local path ``target``, verified against
    the catalog's adler32 and size, trying its available replicas (local disk first) until
    one works. A file already at ``target`` with that content is kept as it is; another
    one is a Conflict unless ``overwrite``."""
    replicas = [r for r in f.get("replicas") or [] if r.get("state", "available") == "available"]
    replicas.sort(key=lambda r: _SCHEME_ORDER.get(str(r.get("url", "")).split("://")[0], 9))
    if not replicas:
        raise NotFound(f"no available replica of {f['lfn']}", where=f["lfn"])
    errors: list[DSSError] = []
    for replica in replicas:
        try:
            return copy(
                replica["url"],
                "file://" + target,
                expected_adler32=f.get("adler32"),
                expected_bytes=f.get("bytes"),
                retries=retries,
                progress=progress,
                overwrite=overwrite,
            )
        except (StorageError, NotFound, ChecksumMismatch) as exc:
            # This replica is unreachable, gone or damaged: another may serve.
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    tried = "; ".join(
        f"{r['storage_element']}: {e.message}" for r, e in zip(replicas, errors, strict=True)
    )
    raise type(errors[-1])(f"every replica failed ({tried})", where=f["lfn"])


def cmd_put(args: argparse.Namespace, out: Output) -> int:
    """Upload a local file to an SE at its deterministic path, verify it, then register it."""
    dataset = check_dataset_name(args.dataset)
    if not os.path.isfile(args.file):
        raise NotFound("no such local file", where=args.file)
    portal = _portal(args)
    ses = portal.storage_elements()
    se = next((s for s in ses if args.se in (s["name"], str(s["url"]).rstrip("/"))), None)
    if se is None:
        known = ", ".join(sorted(s["name"] for s in ses)) or "none"
        raise NotFound(f"no storage element {args.se!r} (known: {known})", where=args.se)
    name = os.path.basename(args.file)
    rel = deterministic_path(scope_of(dataset), name)
    result = copy(
        _as_url(args.file),
        (StorageEndpoint(se["url"]), rel),
        retries=args.retries,
        progress=out.progress(name),
    )
    try:
        registered = portal.register(dataset, se["name"], [rel])
    except DSSError as exc:
        exc.message = (
            f"{exc.message} (the file is on {se['name']} at {rel}; run put again to register it)"
        )
        raise
    out.document(
        {
            "transfer": result.as_dict(),
            "path": rel,
            "storage_element": se["name"],
            "dataset": registered,
        }
    )
    out.line(_describe(result))
    out.line(f"registered {name} in {dataset} on {se['name']} ({rel})")
    return 0


# -- Rucio, through the portal ----------------------------------------------------------


def _did(text: str) -> tuple[str, str]:
    """``scope:name`` as (scope, name)."""
    scope, sep, name = text.partition(":")
    if not sep or not scope or not name:
        raise InvalidInput(f"a Rucio DID is scope:name, not {text!r}", where="DID")
    return scope, name


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def cmd_rucio_search(args: argparse.Namespace, out: Output) -> int:
    """Datasets in Rucio whose scope is SCOPE and whose name matches PATTERN."""
    found = _portal(args).request(
        "GET", "/api/rucio/datasets/", params={"scope": args.scope, "name": args.pattern}
    )
    out.document(found)
    width = max((len(d["did"]) for d in found), default=0)
    for d in found:
        facts = [f"{d['did']:<{width}}"]
        if d["length"] is not None:  # Rucio does not always say
            facts.append(f"{d['length']} file(s)")
        if d["bytes"] is not None:
            facts.append(_size(d["bytes"]))
        if d["in_portal"]:
            facts.append("(in the portal)")
        out.line("  ".join(facts).rstrip())
    if not found and not args.json:
        print(f"dmu: no dataset of scope {args.scope} matches {args.pattern!r}", file=out.stderr)
    return 0


def cmd_rucio_files(args: argparse.Namespace, out: Output) -> int:
    """A Rucio dataset's files, with their replicas by RSE."""
    scope, name = _did(args.did)
    path = f"/api/rucio/datasets/{quote(scope, safe='')}/{quote(name, safe='')}/"
    files = _portal(args).request("GET", path)
    out.document(files)
    for f in files:
        where = ", ".join(sorted(f["replicas"])) or "no replica"
        out.line(f"{f['name']}  {f['bytes']} bytes  adler32 {f['adler32']}  on {where}")
    return 0


def cmd_rucio_import(args: argparse.Namespace, out: Output) -> int:
    """Import a Rucio dataset into the portal's catalog (every file's checksum verified)."""
    scope, name = _did(args.did)
    dataset = _portal(args).request(
        "POST", "/api/rucio/import/", json={"scope": scope, "name": name}
    )
    out.document(dataset)
    added = dataset.get("files_added", 0)
    events = "" if dataset.get("events") is None else f", {dataset['events']:,} events"
    out.line(f"{dataset['name']}: {added} file(s) added ({dataset['n_files']} in all{events})")
    return 0


def _describe_registration(reg: dict) -> str:
    state = reg["state"]
    if state == "registered":
        files = f"{reg['files_registered']} file(s) on {reg['rse']}"
        return f"{reg['dataset']}: registered in Rucio as {reg['did']} ({files})"
    text = f"{reg['dataset']}: {state} ({reg['did']}, {reg['attempts']} attempt(s)"
    if reg.get("next_attempt_at") and state == "pending":
        text += f", next at {reg['next_attempt_at']}"
    text += ")"
    if reg.get("last_error"):
        text += f"; last error: {reg['last_error']}"
    return text


def cmd_rucio_status(args: argparse.Namespace, out: Output) -> int:
    """Whether a portal dataset is registered in Rucio."""
    name = check_dataset_name(args.dataset)
    reg = _portal(args).request("GET", f"/api/datasets/{quote(name, safe='')}/rucio/")
    out.document(reg)
    out.line(_describe_registration(reg))
    return 0


def cmd_rucio_register(args: argparse.Namespace, out: Output) -> int:
    """Queue a portal dataset's registration in Rucio (again)."""
    name = check_dataset_name(args.dataset)
    reg = _portal(args).request("POST", f"/api/datasets/{quote(name, safe='')}/rucio/")
    out.document(reg)
    out.line(_describe_registration(reg))
    return 0


# -- plumbing ---------------------------------------------------------------------------


def _describe(result: TransferResult) -> str:
    if result.already_there:
        return f"{result.destination}: already there (adler32 {result.adler32})"
    return (
        f"{result.destination}: {result.bytes} bytes, adler32 {result.adler32}, "
        f"{result.rate_mb_s:.1f} MB/s, {result.attempts} attempt{'s' if result.attempts != 1 else ''}"
    )


def _error_doc(err: DSSError) -> dict:
    doc = err.as_dict()
    doc["exit_code"] = err.exit_code
    return doc


def _print_error(err: DSSError, out: Output, label: str = "") -> None:
    where = err.where or label
    print(f"dmu: {where}: {err.message}" if where else f"dmu: {err.message}", file=out.stderr)


def _check_adler32(text: str) -> str:
    from dmu.checksum import normalise_adler32

    try:
        return normalise_adler32(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dmu`` (global options work before or after the command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress, no result lines")
    common.add_argument("--url", help="portal URL (default: DSS_URL, then client.ini)")
    common.add_argument("--token", help="portal API token (default: DSS_TOKEN, then client.ini)")
    # In sub-commands the same options must not reset what was given before the command.
    sub_common = argparse.ArgumentParser(add_help=False)
    for action in common._actions:
        sub_common._add_action(_suppressed(action))

    parser = argparse.ArgumentParser(
        prog="dmu",
        description="Data movement utilities of DSS: verified copies between storage elements "
        "(file://, root://, https://), dataset download and upload with registration.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[sub_common],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    def retries(p: argparse.ArgumentParser) -> None:
        p.add_argument("--retries", type=int, default=3, help="retries per file (default 3)")

    p = add("get", cmd_get, "fetch a dataset, or one file of it, from its best replica")
    p.add_argument("what", metavar="DATASET[/FILE]")
    p.add_argument("dest", metavar="DEST", help="directory (or, for one FILE, the file name)")
    p.add_argument("--parallel", type=int, default=4, help="files copied at once (default 4)")
    retries(p)

    p = add("put", cmd_put, "upload a file to a storage element and register it in a dataset")
    p.add_argument("file", metavar="FILE")
    p.add_argument("se", metavar="SE", help="storage element name (as the portal knows it)")
    p.add_argument("--dataset", required=True, help="dataset to register the file in (scope.name)")
    retries(p)

    p = add("cp", cmd_cp, "copy one file between URLs or local paths, verified")
    p.add_argument("src", metavar="SRC_URL")
    p.add_argument("dst", metavar="DST_URL", help="a file URL, or a directory ending in /")
    p.add_argument("--adler32", type=_check_adler32, help="expected adler32 of the source")
    p.add_argument("--bytes", type=int, help="expected size of the source")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing file")
    retries(p)

    p = add("checksum", cmd_checksum, "adler32 (and md5) of a local file or a URL")
    p.add_argument("target", metavar="FILE_OR_URL")
    p.add_argument("--md5", action="store_true", help="also compute md5")

    p = add("ls", cmd_ls, "list a directory of a storage element")
    p.add_argument("se_url", metavar="SE_URL")

    rucio = add("rucio", None, "the experiment's Rucio, through the portal")
    rucio_commands = rucio.add_subparsers(dest="rucio_command", required=True, metavar="COMMAND")

    def add_rucio(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = rucio_commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[sub_common],
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add_rucio("search", cmd_rucio_search, "find datasets in Rucio by scope and name")
    p.add_argument("scope", metavar="SCOPE")
    p.add_argument("pattern", metavar="PATTERN", nargs="?", default="*", help="'*' is any text")
    p = add_rucio("files", cmd_rucio_files, "list a Rucio dataset's files and their replicas")
    p.add_argument("did", metavar="SCOPE:NAME")
    p = add_rucio("import", cmd_rucio_import, "import a Rucio dataset into the portal's catalog")
    p.add_argument("did", metavar="SCOPE:NAME")
    p = add_rucio("status", cmd_rucio_status, "whether a portal dataset is registered in Rucio")
    p.add_argument("dataset", metavar="DATASET")
    p = add_rucio("register", cmd_rucio_register, "queue a dataset's registration in Rucio")
    p.add_argument("dataset", metavar="DATASET")
    return parser


def _suppressed(action: argparse.Action) -> argparse.Action:
    """A copy of ``action`` whose default is SUPPRESS, so the top-level value survives."""
    dup = copy_module.copy(action)
    dup.default = argparse.SUPPRESS
    return dup


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``dmu`` with ``argv``; return the exit code (see ``dmu --help``)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    out = Output(as_json=args.json, quiet=args.quiet, stdout=stdout, stderr=stderr)
    try:
        return args.func(args, out)
    except DSSError as err:
        _print_error(err, out)
        out.document(_error_doc(err))
        return err.exit_code
    except KeyboardInterrupt:
        print("dmu: interrupted", file=stderr)
        out.document({"error": "interrupted", "detail": "interrupted", "exit_code": 130})
        return 130


if __name__ == "__main__":
    sys.exit(main())
