"""`fogctl top deployments|nodes [-n NS] [-o json]`: usage now, against requests, as `kubectl top`.

The figures are the latest sample of each running replica (its agent samples every 60 s by
default, docs/agent-protocol.md), summed per deployment or per node. Percentages are of what
those replicas requested (each the request it was placed with), and for nodes of capacity
too, so an over-sized request or a node running hot shows at a glance. Replicas not sampled
yet count in RUNNING but add no usage: the SAMPLED column says how many did.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import database
from controller.cli.db_commands import add_database_url
from controller.cli.tables import render
from controller.db import usage as db_usage
from controller.db.usage import TopRow
from controller.model.usage import Usage

KINDS = ("deployments", "nodes")
# kubectl accepts the singular and short forms of a resource too.
ALIASES = {"deployment": "deployments", "deploy": "deployments", "node": "nodes", "no": "nodes"}


def _kind(text: str) -> str:
    kind = ALIASES.get(text, text)
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"expected deployments or nodes, got {text!r}")
    return kind


def register(commands: Any) -> None:
    """Add `top` to the `fogctl` parser."""
    top = commands.add_parser(
        "top", help="CPU and memory in use per deployment or node, against requests"
    )
    top.add_argument("kind", type=_kind, metavar="deployments|nodes")
    top.add_argument(
        "-n",
        "--namespace",
        help="only this namespace's deployments (for nodes: only its replicas' usage); "
        "default: every namespace",
    )
    top.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(top)
    top.set_defaults(handler=_top)


def _top(args: argparse.Namespace) -> int:
    read = db_usage.top_deployments if args.kind == "deployments" else db_usage.top_nodes

    async def job(sessions: async_sessionmaker[AsyncSession]) -> list[TopRow]:
        async with sessions() as session:
            return await read(session, namespace=args.namespace)

    rows = database.run(args.database_url, job)
    if args.output == "json":
        print(json.dumps({args.kind: [_json(row) for row in rows]}, indent=2))
        return 0
    if not rows:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        print(f"no {args.kind}{where}")
        return 0
    print(_table(args.kind, rows))
    return 0


def _amounts(usage: Usage) -> dict[str, Any]:
    return {"cpuCores": usage.cpu_cores, "memoryMB": usage.memory_mb}


def _json(row: TopRow) -> dict[str, Any]:
    body: dict[str, Any] = {"name": row.name}
    if row.namespace is not None:
        body["namespace"] = row.namespace
    body |= {
        "runningReplicas": row.running,
        "sampledReplicas": row.sampled,
        "usage": _amounts(row.usage),
        "requests": _amounts(row.requested),
    }
    if row.capacity is not None:
        body["capacity"] = _amounts(row.capacity)
    body["sampledAt"] = row.sampled_at.isoformat() if row.sampled_at else None
    return body


def percent(part: int, whole: int) -> str:
    """`part` as a whole percentage of `whole`, cut as kubectl top cuts it ("-" of nothing)."""
    return f"{100 * part // whole}%" if whole else "-"


def _table(kind: str, rows: list[TopRow]) -> str:
    if kind == "deployments":
        headers = ["NAMESPACE", "NAME", "RUNNING", "SAMPLED"]
    else:
        headers = ["NAME", "RUNNING", "SAMPLED"]
    headers += ["CPU(cores)", "CPU/REQ", "MEMORY(MB)", "MEMORY/REQ"]
    if kind == "nodes":
        headers += ["CPU/CAP", "MEMORY/CAP"]
    lines = []
    for row in rows:
        line = [row.namespace or ""] if kind == "deployments" else []
        line += [row.name, str(row.running), str(row.sampled)]
        line += [
            f"{row.usage.cpu_cores:.3f}".rstrip("0").rstrip("."),
            percent(row.usage.cpu_millis, row.requested.cpu_millis),
            str(row.usage.memory_mb),
            percent(row.usage.memory_mb, row.requested.memory_mb),
        ]
        if row.capacity is not None:
            line += [
                percent(row.usage.cpu_millis, row.capacity.cpu_millis),
                percent(row.usage.memory_mb, row.capacity.memory_mb),
            ]
        lines.append(line)
    return render(headers, lines)
