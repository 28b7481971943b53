"""`fogctl agent simulate`: a stand-in agent for registered nodes, over the agent API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from controller.agent import simulate
from controller.agent.tokens import TokensFile
from controller.cli import arguments
from controller.cli.errors import CommandError
from controller.model.credentials import kind_of
from controller.model.simulation import DEFAULT_USAGE_SECONDS

# The environment variable that may name the agent API (as FOG_DATABASE_URL names the database).
SERVER_ENV = "FOG_AGENT_SERVER"


def register(commands: Any) -> None:
    """Add `agent` and its sub-commands to the `fogctl` parser."""
    agent = commands.add_parser("agent", help="node agents")
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    sim = actions.add_parser(
        "simulate",
        help="heartbeat nodes and run their replicas in name only, through the agent API",
    )
    sim.add_argument(
        "nodes", nargs="*", metavar="NODE", help="play only these nodes (default: every token's)"
    )
    sim.add_argument(
        "--server",
        type=arguments.http_url,
        help=f"the agent API, http(s)://HOST:PORT (default: ${SERVER_ENV})",
    )
    credentials = sim.add_mutually_exclusive_group(required=True)
    credentials.add_argument(
        "--token", help="the node's bootstrap token (from fogctl node register) or node token"
    )
    credentials.add_argument(
        "--tokens-file",
        type=Path,
        metavar="PATH",
        help="YAML mapping of node names to tokens; bootstrap tokens in it are replaced by the "
        "node tokens they are exchanged for, and nodes added to it are played without a restart",
    )
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
        help="seconds between heartbeats",
    )
    sim.add_argument(
        "--fail-image", metavar="GLOB", help="replicas of matching images fail after starting"
    )
    sim.add_argument(
        "--fail-health",
        metavar="GLOB",
        help="replicas of matching images run but fail every health check (spec.healthCheck)",
    )
    sim.add_argument(
        "--usage-seconds",
        type=arguments.seconds(),
        default=DEFAULT_USAGE_SECONDS,
        help="seconds between usage samples of each running replica (default 60)",
    )
    sim.set_defaults(handler=_simulate)


def _server_from_env() -> str:
    raw = os.environ.get(SERVER_ENV)
    if not raw:
        raise CommandError(f"the agent API is not given: --server URL or ${SERVER_ENV}")
    try:
        return arguments.http_url(raw)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"${SERVER_ENV}: {exc}") from None


def _credentials(args: argparse.Namespace) -> simulate.Credentials:
    if args.token is not None:
        if len(args.nodes) != 1:
            raise CommandError(
                "--token plays one node: name it (fogctl agent simulate NODE --token ...)"
            )
        if kind_of(args.token) is None:
            raise CommandError(
                "--token: not a fog token (fogb_... or fogn_..., from fogctl node register)"
            )
        return simulate.Credentials(tokens={args.nodes[0]: args.token})
    # Read now: a missing or malformed file is one line, not a retry loop.
    return simulate.Credentials(file=TokensFile(args.tokens_file), only=frozenset(args.nodes))


def _silence_on_signals(silent: asyncio.Event, stop: asyncio.Event) -> None:
    """SIGUSR1 cuts the agent's link (no heartbeats, no reports); SIGUSR2 restores it."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, silent.set)
    loop.add_signal_handler(signal.SIGUSR2, silent.clear)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)


def _simulate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = args.server or _server_from_env()
    credentials = _credentials(args)

    async def main() -> None:
        silent, stop = asyncio.Event(), asyncio.Event()
        _silence_on_signals(silent, stop)
        played = " ".join(sorted(credentials.tokens)) or "the nodes of the tokens file"
        print(f"simulating {played} via {server}", flush=True)
        await simulate.run(
            server,
            credentials,
            start_delay=args.start_delay,
            tick_seconds=args.tick,
            fail_image=args.fail_image,
            fail_health=args.fail_health,
            usage_seconds=args.usage_seconds,
            stop=stop,
            silent=silent,
        )

    asyncio.run(main())
    return 0
