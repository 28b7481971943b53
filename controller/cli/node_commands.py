"""`fogctl node register | list`: the fog nodes replicas are placed on."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import arguments, database
from controller.cli.db_commands import add_database_url
from controller.cli.tables import render
from controller.db import credentials
from controller.db import nodes as db_nodes
from controller.model.resources import MILLIS_PER_CORE, Resources

# The capacity columns are PostgreSQL integers (CPU in millicores): larger values cannot be
# stored, so they are refused here by name rather than by the database.
INT4_MAX = 2**31 - 1
CPU_MAX_CORES = INT4_MAX / MILLIS_PER_CORE
# Heartbeat ages are shown in seconds below two minutes, then in minutes, like kubectl's AGE.
SECONDS_SHOWN_UP_TO = 120


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"labels are KEY=VALUE, got {text!r}")
    return key, value


def register(commands: Any) -> None:
    """Add `node` and its sub-commands to the `fogctl` parser."""
    node = commands.add_parser("node", help="fog nodes: register, list, cordon, drain, remove")
    actions = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    add = actions.add_parser("register", help="create or update a node")
    add.add_argument("name")
    add.add_argument(
        "--cpu",
        type=arguments.number(float, minimum=0.0, maximum=CPU_MAX_CORES),
        required=True,
        help="CPU cores",
    )
    add.add_argument(
        "--memory-mb", type=arguments.number(int, minimum=0, maximum=INT4_MAX), required=True
    )
    add.add_argument(
        "--gpu",
        type=arguments.number(int, minimum=0, maximum=INT4_MAX),
        default=0,
        help="GPU units (default 0)",
    )
    add.add_argument(
        "--storage-gb", type=arguments.number(int, minimum=0, maximum=INT4_MAX), required=True
    )
    add.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE")
    add.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: {name, bootstrapToken, expiresInSeconds}",
    )
    add_database_url(add)
    add.set_defaults(handler=_register)

    for name, text in (
        ("cordon", "no new replicas go to the node"),
        ("uncordon", "the node takes new replicas again (ends a drain)"),
        ("drain", "cordon, then move replicas away within each deployment's rolling limit"),
        ("remove", "delete the node (refused while it holds replicas, unless --force)"),
        ("revoke", "every token of the node stops working now (re-register for a new one)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("name")
        if name == "remove":
            action.add_argument(
                "--force", action="store_true", help="fail its replicas (NodeLost) and remove"
            )
        add_database_url(action)
        action.set_defaults(handler=_change)

    listing = actions.add_parser("list", help="nodes with capacity, allocation and heartbeat")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(listing)
    listing.set_defaults(handler=_list)


def _register(args: argparse.Namespace) -> int:
    capacity = Resources.from_cores(
        cpu_cores=args.cpu, memory_mb=args.memory_mb, gpu_units=args.gpu, storage_gb=args.storage_gb
    )

    async def job(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session, session.begin():
            await db_nodes.register(
                session, name=args.name, capacity=capacity, labels=dict(args.label)
            )
            return await credentials.issue_bootstrap(session, node=args.name)

    token = database.run(args.database_url, job)
    ttl = int(credentials.BOOTSTRAP_TTL.total_seconds())
    if args.output == "json":
        print(json.dumps({"name": args.name, "bootstrapToken": token, "expiresInSeconds": ttl}))
        return 0
    print(f"node {args.name} registered")
    print(f"bootstrap token (shown once, valid {ttl // 3600} h for one exchange): {token}")
    return 0


def _change(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session, session.begin():
            if args.node_command == "cordon":
                await db_nodes.cordon(session, name=args.name)
                return f"node {args.name} cordoned"
            if args.node_command == "uncordon":
                await db_nodes.uncordon(session, name=args.name)
                return f"node {args.name} uncordoned"
            if args.node_command == "drain":
                moved = await db_nodes.drain(session, name=args.name)
                return f"node {args.name} cordoned and draining ({len(moved)} deployments move)"
            if args.node_command == "revoke":
                count = await credentials.revoke(session, node=args.name)
                return f"node {args.name}: {count} tokens revoked"
            failed = await db_nodes.remove(session, name=args.name, force=args.force)
            return f"node {args.name} removed" + (f" ({failed} replicas failed)" if failed else "")

    print(database.run(args.database_url, job))
    return 0


def _age(age: timedelta | None) -> str:
    if age is None:
        return "never"
    seconds = int(age.total_seconds())
    return f"{seconds}s" if seconds < SECONDS_SHOWN_UP_TO else f"{seconds // 60}m"


def _as_json(node: db_nodes.NodeRecord) -> dict[str, Any]:
    return {
        "name": node.name,
        "status": str(node.status),
        "cordoned": node.cordoned,
        "draining": node.draining,
        "labels": dict(node.labels),
        "capacity": node.capacity.as_spec(),
        "allocated": node.allocated.as_spec(),
        "lastHeartbeatAt": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
    }


def _list(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> list[db_nodes.NodeRecord]:
        async with sessions() as session:
            return await db_nodes.list_nodes(session)

    found = database.run(args.database_url, job)
    if args.output == "json":
        print(json.dumps({"nodes": [_as_json(node) for node in found]}, indent=2))
        return 0
    rows = [
        [
            node.name,
            str(node.status) + (",cordoned" if node.cordoned else ""),
            f"{node.allocated.cpu_cores:g}/{node.capacity.cpu_cores:g}",
            f"{node.allocated.memory_mb}/{node.capacity.memory_mb}",
            f"{node.allocated.gpu_units}/{node.capacity.gpu_units}",
            f"{node.allocated.storage_gb}/{node.capacity.storage_gb}",
            _age(node.heartbeat_age),
            ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "<none>",
        ]
        for node in found
    ]
    print(
        render(
            ["NAME", "STATUS", "CPU", "MEMORY(MB)", "GPU", "STORAGE(GB)", "HEARTBEAT", "LABELS"],
            rows,
        )
    )
    return 0
