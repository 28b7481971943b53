"""`fogctl agent simulate [NODE ...]`: a stand-in agent for registered nodes."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agent import simulate
from controller.cli import database
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.db import nodes as db_nodes


def register(commands: Any) -> None:
    """Add `agent` and its sub-commands to the `fogctl` parser."""
    agent = commands.add_parser("agent", help="node agents")
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    sim = actions.add_parser("simulate", help="heartbeat nodes and run their replicas in name only")
    sim.add_argument("nodes", nargs="*", metavar="NODE", help="default: every registered node")
    sim.add_argument(
        "--start-delay", type=float, default=1.0, help="seconds from starting to running"
    )
    sim.add_argument(
        "--tick", type=float, default=simulate.DEFAULT_TICK_SECONDS, help="seconds between rounds"
    )
    add_database_url(sim)
    sim.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> None:
        if args.nodes:
            async with sessions() as session:
                listed = await db_nodes.list_nodes(session, names=args.nodes)
            missing = sorted(set(args.nodes) - {node.name for node in listed})
            if missing:
                raise CommandError(
                    f"unknown nodes: {', '.join(missing)} (fogctl node register NAME ...)"
                )
        print(f"simulating {' '.join(args.nodes) or 'every registered node'}", flush=True)
        await simulate.run(
            sessions, nodes=args.nodes or None, start_delay=args.start_delay, tick_seconds=args.tick
        )

    database.run(args.database_url, job)
    return 0
