"""`fogctl agent simulate [NODE ...]`: a stand-in agent for registered nodes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agent import simulate
from controller.cli import arguments, database
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.db import nodes as db_nodes
from controller.model.resources import Resources


def register(commands: Any) -> None:
    """Add `agent` and its sub-commands to the `fogctl` parser."""
    agent = commands.add_parser("agent", help="node agents")
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    sim = actions.add_parser("simulate", help="heartbeat nodes and run their replicas in name only")
    sim.add_argument("nodes", nargs="*", metavar="NODE", help="default: every registered node")
    sim.add_argument(
        "--start-delay",
        type=arguments.seconds(inclusive=True),
        default=1.0,
        help="seconds from starting to running",
    )
    sim.add_argument(
        "--tick",
        type=arguments.seconds(),
        default=simulate.DEFAULT_TICK_SECONDS,
        help="seconds between rounds",
    )
    sim.add_argument(
        "--nodes-file",
        type=Path,
        help="YAML list of nodes to register first: name, cpuCores, memoryMB, gpuUnits, "
        "storageGB, labels",
    )
    sim.add_argument(
        "--fail-image", metavar="GLOB", help="replicas of matching images fail after starting"
    )
    add_database_url(sim)
    sim.set_defaults(handler=_simulate)


def _load_nodes(path: Path) -> list[tuple[str, Resources, dict[str, str]]]:
    """Nodes from a YAML file: a list of {name, cpuCores, memoryMB, gpuUnits, storageGB, labels}."""
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CommandError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(entries, list):
        raise CommandError(f"{path}: expected a list of nodes")
    nodes = []
    for index, entry in enumerate(entries):
        try:
            capacity = Resources.from_cores(
                cpu_cores=float(entry["cpuCores"]),
                memory_mb=int(entry["memoryMB"]),
                gpu_units=int(entry.get("gpuUnits", 0)),
                storage_gb=int(entry["storageGB"]),
            )
            nodes.append((str(entry["name"]), capacity, dict(entry.get("labels") or {})))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CommandError(f"{path}: node {index + 1}: bad or missing {exc}") from None
    return nodes


def _silence_on_signals(silent: asyncio.Event) -> None:
    """SIGUSR1 cuts the agent's link (no heartbeats, no reports); SIGUSR2 restores it."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, silent.set)
    loop.add_signal_handler(signal.SIGUSR2, silent.clear)


def _simulate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from_file = _load_nodes(args.nodes_file) if args.nodes_file else []
    names = list(args.nodes) + [name for name, _, _ in from_file]

    async def job(sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            for name, capacity, labels in from_file:
                await db_nodes.register(session, name=name, capacity=capacity, labels=labels)
            listed = await db_nodes.list_nodes(session, names=names) if names else []
        missing = sorted(set(names) - {node.name for node in listed})
        if missing:
            raise CommandError(
                f"unknown nodes: {', '.join(missing)} (fogctl node register NAME ...)"
            )
        silent = asyncio.Event()
        _silence_on_signals(silent)
        print(f"simulating {' '.join(names) or 'every registered node'}", flush=True)
        await simulate.run(
            sessions,
            nodes=names or None,
            start_delay=args.start_delay,
            tick_seconds=args.tick,
            fail_image=args.fail_image,
            silent=silent,
        )

    database.run(args.database_url, job)
    return 0
