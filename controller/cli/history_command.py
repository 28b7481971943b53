"""`fogctl history NAMESPACE/NAME`: every transition of a deployment and its replicas."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import arguments, database
from controller.cli.db_commands import add_database_url
from controller.cli.tables import render
from controller.db.history import Entry, deployment_history


def register(commands: Any) -> None:
    """Add `history` to the `fogctl` parser."""
    history = commands.add_parser("history", help="a deployment's status transitions")
    history.add_argument("target", type=arguments.namespaced_name, metavar="NAMESPACE/NAME")
    history.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(history)
    history.set_defaults(handler=_history)


def _history(args: argparse.Namespace) -> int:
    namespace, name = args.target

    async def job(sessions: async_sessionmaker[AsyncSession]) -> list[Entry]:
        async with sessions() as session:
            return await deployment_history(session, namespace=namespace, name=name)

    entries = database.run(args.database_url, job)
    if args.output == "json":
        print(json.dumps({"history": [asdict(e) for e in entries]}, indent=2, default=str))
        return 0
    if not entries:
        print(f"no history for {namespace}/{name}")
        return 0
    rows = [
        [
            entry.changed_at.strftime("%H:%M:%S.%f")[:-3],
            entry.replica or f"deployment/{name}",
            entry.node or "",
            entry.transition,
            entry.actor or "",
            entry.reason or "",
        ]
        for entry in entries
    ]
    print(render(["TIME", "OBJECT", "NODE", "TRANSITION", "BY", "REASON"], rows))
    return 0
