"""`fogctl serve-agents --listen HOST:PORT`: the agent API that edge agents speak to."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from controller.agentapi import app
from controller.cli import arguments, database
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.db import urls
from controller.operator import logs
from controller.operator.logs import LogFormat


def register(commands: Any) -> None:
    """Add `serve-agents` to the `fogctl` parser."""
    serve = commands.add_parser(
        "serve-agents",
        help="the agent API: edge agents heartbeat, read assignments and report here, with "
        "per-node tokens (never database credentials)",
    )
    serve.add_argument(
        "--listen",
        type=arguments.bind_address,
        default=arguments.bind_address(":8443"),
        metavar="HOST:PORT",
        help="where agents connect (default :8443)",
    )
    serve.add_argument(
        "--metrics-bind-address",
        type=arguments.bind_address,
        default=arguments.bind_address(":8080"),
        metavar="HOST:PORT",
        help="where /metrics is served (default :8080; 0 turns it off)",
    )
    serve.add_argument(
        "--log-format", choices=[f.value for f in LogFormat], default=LogFormat.TEXT.value
    )
    add_database_url(serve)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    if args.listen is None:
        raise CommandError("--listen: an address is required (0 would serve nobody)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logs.configure(LogFormat(args.log_format))
    url = urls.resolve(args.database_url)
    database.check_schema(url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await app.serve(
                url, listen=args.listen, metrics_address=args.metrics_bind_address, stop=stop
            )
        except OSError as exc:
            raise CommandError(f"cannot listen: {exc.strerror or exc}") from None

    asyncio.run(main())
    return 0
