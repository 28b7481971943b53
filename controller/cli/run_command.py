"""`fogctl run`: the operator process (kopf) against the current kubeconfig and a database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
from sqlalchemy.engine import URL

from controller.cli import arguments
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.cli.node_grace import add_node_grace
from controller.db import migrate, urls
from controller.db.errors import DatabaseUnavailableError, SchemaMismatchError
from controller.kube import election
from controller.kube.election import ElectionSettings
from controller.model.restarts import RestartPolicy
from controller.operator import failpoints, garbage, logs
from controller.operator.handlers import (
    DEFAULT_SHUTDOWN_GRACE_SECONDS,
    OperatorConfig,
    Shutdown,
    build_registry,
    streaming_lists_withdrawn,
)
from controller.operator.logs import LogFormat

RESYNC_ENV = "FOG_RESYNC_SECONDS"
# How often every FogDeployment is reconciled even when nothing told us to. Watches, agent
# notifications and node checks drive the real work; this is only the safety net for a
# missed event. It walks the objects evenly spread over the interval, in shares about a second
# apart, each share one batch: every 10 min at 10,000 objects is 17 a second, 4-5% of a core
# here (docs/design/performance.md; controller-runtime's default is 10 hours).
DEFAULT_RESYNC_SECONDS = 600.0
DEFAULT_ELECTION_ID = "fog-controller"
DEFAULT_ELECTION_NAMESPACE = "fog-system"
# Where Kubernetes mounts the pod's namespace for its service account.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The election library's jitter on the retry period (renew-deadline must exceed it).
RETRY_JITTER = 1.2
# No election timing needs more than an hour; a larger value is a typo.
MAX_ELECTION_SECONDS = 3600


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
        type=arguments.seconds(),
        default=arguments.from_env(RESYNC_ENV, arguments.seconds(), DEFAULT_RESYNC_SECONDS),
        help=f"periodic reconcile interval (default: ${RESYNC_ENV} or {DEFAULT_RESYNC_SECONDS:g})",
    )
    add_node_grace(run)
    defaults = RestartPolicy()
    run.add_argument(
        "--restart-delay-seconds",
        type=arguments.seconds(),
        default=defaults.base_delay.total_seconds(),
        help="first wait before replacing a failed replica; doubles per failure",
    )
    run.add_argument(
        "--restart-max-delay-seconds",
        type=arguments.seconds(),
        default=defaults.max_delay.total_seconds(),
        help="longest wait between replacements",
    )
    run.add_argument(
        "--failure-limit",
        type=arguments.number(int, minimum=1),
        default=defaults.failure_limit,
        help="consecutive failures before the deployment is Stalled (phase Failed)",
    )
    run.add_argument(
        "--history-retention",
        type=arguments.retention,
        metavar="DURATION",
        help="drop whole months of status history once every row in them is older than this, "
        "e.g. 400d (default: keep all history)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's health checks, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every handler call")
    _add_election(run)
    _add_production(run)
    run.set_defaults(handler=_run)


def _add_election(run: argparse.ArgumentParser) -> None:
    """The leader election flags (names as controller-runtime's and kube-controller-manager's)."""
    group = run.add_argument_group("leader election (for two or more replicas)")
    group.add_argument(
        "--leader-elect",
        action="store_true",
        help="campaign for a Lease; only the leader reconciles, others stand by",
    )
    group.add_argument("--leader-election-id", default=DEFAULT_ELECTION_ID, help="Lease name")
    group.add_argument(
        "--leader-election-namespace",
        help=f"the Lease's namespace (default: the pod's own, else {DEFAULT_ELECTION_NAMESPACE})",
    )
    for flag, default, meaning in (
        ("--leader-elect-lease-duration", election.LEASE_DURATION_SECONDS, "a standby waits"),
        ("--leader-elect-renew-deadline", election.RENEW_DEADLINE_SECONDS, "a leader retries"),
        ("--leader-elect-retry-period", election.RETRY_PERIOD_SECONDS, "between attempts"),
    ):
        group.add_argument(
            flag,
            # Whole seconds: a Lease stores its duration as an integer.
            type=arguments.number(int, minimum=1, maximum=MAX_ELECTION_SECONDS),
            default=default,
            metavar="SECONDS",
            help=f"how long {meaning} (default {default})",
        )


def _add_production(run: argparse.ArgumentParser) -> None:
    """Metrics, probes, shutdown and log format (flag names as controller-runtime's)."""
    group = run.add_argument_group("running in production")
    group.add_argument(
        "--metrics-bind-address",
        type=arguments.bind_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on /metrics, e.g. :8080 (default: off)",
    )
    group.add_argument(
        "--health-probe-bind-address",
        type=arguments.bind_address,
        metavar="HOST:PORT",
        help="serve /healthz and /readyz, e.g. :8081 (default: off)",
    )
    group.add_argument(
        "--shutdown-grace-seconds",
        type=arguments.seconds(),
        default=DEFAULT_SHUTDOWN_GRACE_SECONDS,
        help="on SIGTERM, how long reconciles in flight may take to finish "
        f"(default {DEFAULT_SHUTDOWN_GRACE_SECONDS:g})",
    )
    group.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        default=LogFormat.TEXT.value,
        help="text for people (default) or json, one object per line, for log pipelines",
    )


def _election(args: argparse.Namespace) -> ElectionSettings | None:
    """The election settings from the flags, or None without --leader-elect."""
    if not args.leader_elect:
        return None
    lease, renew, retry = (
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    )
    # The rules of the election library (and client-go): renewal must fit in the lease, with
    # room for a jittered retry.
    if not lease > renew > RETRY_JITTER * retry:
        raise CommandError(
            "leader election timing must satisfy lease-duration > renew-deadline > "
            f"{RETRY_JITTER} x retry-period"
        )
    return ElectionSettings(
        name=args.leader_election_id,
        namespace=args.leader_election_namespace or _own_namespace(),
        identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        lease_duration=lease,
        renew_deadline=renew,
        retry_period=retry,
    )


def _own_namespace() -> str:
    """The pod's namespace when in a cluster, else the default."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_ELECTION_NAMESPACE
    except OSError:
        return DEFAULT_ELECTION_NAMESPACE


def _run(args: argparse.Namespace) -> int:
    garbage.tune_collector()  # first: the schema check below allocates plenty too
    url = urls.resolve(args.database_url)
    kopf.configure(verbose=args.verbose)
    logs.configure(LogFormat(args.log_format))
    # The API client logs whole response bodies at debug level: too much even for -v.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
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
    shutdown = asyncio.run(_operate(args, url))
    if shutdown.reason:
        raise CommandError(shutdown.reason)
    return 0


async def _operate(args: argparse.Namespace, url: URL) -> Shutdown:
    config = OperatorConfig(
        database_url=url,
        resync_seconds=args.resync_seconds,
        node_grace=timedelta(seconds=args.node_grace_seconds),
        restarts=RestartPolicy(
            base_delay=timedelta(seconds=args.restart_delay_seconds),
            max_delay=timedelta(seconds=args.restart_max_delay_seconds),
            failure_limit=args.failure_limit,
        ),
        verbose=args.verbose,
        namespaces=tuple(args.namespace),
        failpoints=failpoints.parse(os.environ.get(failpoints.ENV_VAR, "")),
        election=_election(args),
        metrics_address=args.metrics_bind_address,
        probe_address=args.health_probe_bind_address,
        shutdown_grace=args.shutdown_grace_seconds,
        history_retention=args.history_retention,
    )
    try:
        await kopf.operator(
            registry=build_registry(config),
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            standalone=True,  # no peering objects: correctness never relied on kopf peering
            liveness_endpoint=args.liveness,
            stop_flag=config.shutdown.flag,
        )
    except Exception as exc:
        if not streaming_lists_withdrawn(exc):
            raise
        # kopf has stopped every task by now. A new start asks again and lists: the pod's
        # restart does that; saying so in one line beats a traceback of kopf's internals.
        raise CommandError(
            "the API server no longer serves the streaming lists kopf was told to use at start"
            " (its WatchList feature gate is off now, or it was downgraded below Kubernetes"
            " 1.34): start the operator again; it asks again and lists instead"
        ) from exc
    return config.shutdown
