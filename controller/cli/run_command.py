"""`fogctl run`: the operator process (kopf) against the current kubeconfig and a database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import kopf

from controller.cli.db_commands import add_database_url
from controller.db import engine as db_engine
from controller.db import migrate, urls
from controller.db.errors import DatabaseUnavailableError, SchemaMismatchError
from controller.operator.handlers import OperatorConfig, build_registry
from controller.operator.reconciler import Reconciler

RESYNC_ENV = "FOG_RESYNC_SECONDS"
# How often every FogDeployment is reconciled even when nothing told us to: the safety net
# for missed events and for agent reports (until notifications wake the operator sooner).
DEFAULT_RESYNC_SECONDS = 30.0


def register(commands: Any) -> None:
    """Add `run` to the `fogctl` parser."""
    run = commands.add_parser("run", help="run the operator (kopf) until interrupted")
    add_database_url(run)
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace"
    )
    run.add_argument(
        "--resync-seconds",
        type=_positive_float,
        default=float(os.environ.get(RESYNC_ENV, DEFAULT_RESYNC_SECONDS)),
        help=f"periodic reconcile interval (default: ${RESYNC_ENV} or {DEFAULT_RESYNC_SECONDS:g})",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's health checks, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every handler call")
    run.set_defaults(handler=_run)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _run(args: argparse.Namespace) -> int:
    url = urls.resolve(args.database_url)
    kopf.configure(verbose=args.verbose)
    try:
        current = migrate.check_known(url)
    except DatabaseUnavailableError as exc:
        # An outage must not keep the operator down: it starts, reports DatabaseUnavailable
        # in every object's conditions, and retries with backoff until the database is back.
        logging.getLogger(__name__).warning("starting without the database: %s", exc)
    else:
        if current != migrate.head_revision():
            raise SchemaMismatchError(
                f"database is at revision {current or 'base (empty)'}, not "
                f"{migrate.head_revision()}: run 'fogctl db upgrade' first"
            )
    asyncio.run(_operate(args, url))
    return 0


async def _operate(args: argparse.Namespace, url: Any) -> None:
    engine = db_engine.make_engine(url)
    config = OperatorConfig(
        reconciler=Reconciler(db_engine.make_sessions(engine)),
        engine=engine,
        resync_seconds=args.resync_seconds,
        verbose=args.verbose,
    )
    await kopf.operator(
        registry=build_registry(config),
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,  # no peering objects: correctness never relied on kopf peering
        liveness_endpoint=args.liveness,
    )
