"""``dss cond``: the conditions database from the command line, through the portal's
nopayloaddb API (/api/cdb_rest/).

Plain Python (no Django): ``register(subparsers)`` adds the ``cond`` group to the ``dss``
command line; each command is ``func(client, args, out) -> exit code`` over
``dss.apiclient.ApiClient``, as the other ``dss`` commands are.

    dss cond get GT RUN LB                 the payload URLs valid at (RUN, LB)
    dss cond put GT TYPE URL --checksum C --start RUN[:LB] [--end RUN[:LB]] [--size N]
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote, urlencode

from dss.errors import InvalidInput

API = "/api/cdb_rest/"
OPEN_END = 2**63 - 1


def _point(text: str, what: str) -> tuple[int, int]:
    """``RUN`` or ``RUN:LB`` as (run, lb)."""
    run, _, lb = text.partition(":")
    try:
        point = (int(run), int(lb or 0))
    except ValueError:
        raise InvalidInput(f"{what} is RUN or RUN:LB, not {text!r}", where=what) from None
    if min(point) < 0:
        raise InvalidInput(f"{what} has no negative numbers", where=what)
    return point


def cond_get(client: Any, args: argparse.Namespace, out: Any) -> int:
    query = urlencode({"gtName": args.gt, "majorIOV": args.run, "minorIOV": args.lb})
    rows = client.request("GET", f"{API}payloadiovs/?{query}")
    data = {
        r[0]: {
            "payload_url": r[1],
            "checksum": r[2],
            "size": r[3],
            "start": [r[4], r[5]],
            "end": None if r[6] == OPEN_END else [r[6], r[7]],
        }
        for r in rows
    }
    out.result(data, "\n".join(f"{t}\t{v['payload_url']}" for t, v in data.items()))
    return 0


def cond_put(client: Any, args: argparse.Namespace, out: Any) -> int:
    start = _point(args.start, "--start")
    end = _point(args.end, "--end") if args.end else None
    gt, pt = quote(args.gt, safe=""), args.type
    lists = client.request("GET", f"{API}gtPayloadLists/{gt}")
    if pt not in lists:
        name = client.request("POST", f"{API}pl", json={"payload_type": pt})["name"]
        client.request("PUT", f"{API}pl_attach", json={"payload_list": name, "global_tag": args.gt})
        lists[pt] = name
    body: dict[str, Any] = {
        "payload_url": args.payload_url,
        "checksum": args.checksum,
        "major_iov": start[0],
        "minor_iov": start[1],
    }
    if end is not None:
        body.update(major_iov_end=end[0], minor_iov_end=end[1])
    if args.size is not None:
        body["size"] = args.size
    iov = client.request("POST", f"{API}piov", json=body)
    iov = client.request(
        "PUT", f"{API}piov_attach", json={"payload_list": lists[pt], "piov_id": iov["id"]}
    )
    shown = f"[{start}, {end or 'open'})"
    out.result(iov, f"{args.gt} {pt} {shown}: {args.payload_url}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cond`` and its commands to a ``dss`` parser's subparsers."""
    group = subparsers.add_parser("cond", help="conditions: payloads by global tag and run")
    commands = group.add_subparsers(dest="cond_command", required=True, metavar="COMMAND")
    s = commands.add_parser("get", help="the payload URLs a global tag holds at RUN, LB")
    s.add_argument("gt", help="global tag")
    s.add_argument("run", type=int)
    s.add_argument("lb", type=int, help="luminosity block (or time: the minor IOV)")
    s.set_defaults(func=cond_get)
    s = commands.add_parser("put", help="insert one IOV (admin or conditions-manager role)")
    s.add_argument("gt", help="global tag")
    s.add_argument("type", help="payload type")
    s.add_argument("payload_url", metavar="URL", help="the payload file's URL")
    s.add_argument("--checksum", required=True, help="the payload file's checksum")
    s.add_argument("--size", type=int, help="the payload file's size in bytes")
    s.add_argument("--start", required=True, help="RUN or RUN:LB, inclusive")
    s.add_argument("--end", help="RUN or RUN:LB, exclusive (default: open)")
    s.set_defaults(func=cond_put)
    return group
