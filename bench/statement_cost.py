"""What the agent API's database work costs per call, in CPU (issue 15 item 2).

The burst's agent API spends about 0.75 ms of CPU per replica on reports, pushes and
heartbeats (docs/design/performance.md), much of it building, compiling and sending
statements. This times that work alone, through the product's own `AgentService` (one
transaction per call, as a request or a stream op runs it), against a throwaway PostgreSQL
server holding the burst's shape: 500 nodes, 1,000 deployments of 10 replicas (10,000
replicas), a node token per node. Each workload is called `--calls` times after a warm-up (so
that compiled-statement caches and psycopg's prepared statements are what a long-running
process has), and the table gives the median and mean CPU microseconds per call of this
process (the agent API's side) and the mean CPU of the database connection's server process
during the calls (PostgreSQL's side). `--profile NAME` prints a cProfile of one workload.

To compare commits, run the same script against a worktree of the other one:
`PYTHONPATH=/tmp/before nice -n 10 .venv/bin/python bench/statement_cost.py`.
Not part of `make bench`: a tool for whoever changes these statements; about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cpu import CLK_TCK, STIME, UTIME
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

import controller
from controller.agentapi.service import AgentService
from controller.db import credentials, migrate
from controller.db import engine as db_engine
from controller.model.credentials import digest
from controller.model.protocol import HealthReport, Report, UsageSample
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.usage import Usage
from controller.sandbox import harness, postgres

NODES = 500
DEPLOYMENTS = 1000
REPLICAS_PER_DEPLOYMENT = 10
# Reports a batch carries: the stream sends what one tick decided, from a few to hundreds.
BATCH_SIZES = (10, 200)
# Calls per workload: a stable mean, also for the server side read at /proc's 10 ms ticks.
DEFAULT_CALLS = 300
# Calls before measuring: psycopg prepares a statement on its 5th execution (prepare_threshold)
# and SQLAlchemy compiles on the first; a long-running agent API has done both long ago.
WARM_UP = 10
# The complete lists of all 500 nodes are 10,000 rows a call: a tenth of the calls suffice.
REFRESH_SHARE = 10
APPLICATION = "statement-cost"

_SETUP = (
    "INSERT INTO users (name) VALUES ('bench')",
    "INSERT INTO nodes (name, cpu_cores, memory_mb, gpu_units, storage_gb)"
    " SELECT 'n' || i, 64, 262144, 0, 4000 FROM generate_series(0, %(nodes)s - 1) i",
    "INSERT INTO node_leases (node_id) SELECT id FROM nodes",
    "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision)"
    " SELECT u.id, 'd' || i, 'bench:1', %(per_deployment)s, 'r1'"
    " FROM users u, generate_series(0, %(deployments)s - 1) i WHERE u.name = 'bench'",
    # Replica g is on node g mod 500 (20 a node); the first `pending` wait for their agent.
    "INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, status, revision,"
    " cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
    " SELECT d.id, n.id, g %% %(per_deployment)s,"
    " (CASE WHEN g < %(pending)s THEN 'pending' ELSE 'running' END)::replicastatus,"
    " 'r1', 500, 512, 0, 1, 'operator'"
    " FROM generate_series(0, %(replicas)s - 1) g"
    " JOIN deployments d ON d.name = 'd' || (g / %(per_deployment)s)"
    " JOIN nodes n ON n.name = 'n' || (g %% %(nodes)s)",
    "VACUUM ANALYZE",
)
_REPLICAS = (
    "SELECT n.name, r.id, r.status::text FROM deployment_replicas r"
    " JOIN nodes n ON n.id = r.node_id ORDER BY r.id"
)
# Puts the reported replicas back between calls (not measured), so each call is a real move.
_RESET = "UPDATE deployment_replicas SET status = 'pending' WHERE status = 'starting'"
_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"


@dataclass(frozen=True, slots=True)
class Workload:
    """One kind of call; `reset` undoes its writes between calls, outside the measurement."""

    name: str
    call: Callable[[int], Awaitable[object]]
    calls: int
    reset: bool = False


@dataclass(frozen=True, slots=True)
class Figures:
    """One workload's costs per call."""

    name: str
    calls: int
    median_us: float
    mean_us: float
    server_us: float


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _populate(connection: psycopg.Connection) -> list[tuple[str, uuid.UUID, str]]:
    counts = {
        "nodes": NODES,
        "deployments": DEPLOYMENTS,
        "replicas": DEPLOYMENTS * REPLICAS_PER_DEPLOYMENT,
        "per_deployment": REPLICAS_PER_DEPLOYMENT,
        "pending": max(BATCH_SIZES),
    }
    for statement in _SETUP:
        connection.execute(statement.encode(), counts)
    return [(row[0], row[1], row[2]) for row in connection.execute(_REPLICAS.encode())]


def _server_cpu(pids: list[int]) -> float:
    """CPU seconds the server processes `pids` used so far (proc(5))."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[UTIME]) + int(fields[STIME])
    return total / CLK_TCK


def _workloads(
    service: AgentService, digests: dict[str, bytes], replicas: list[tuple[str, uuid.UUID, str]]
) -> list[Workload]:
    every = sorted(digests.values())
    nodes = sorted(digests)
    pending = [(node, replica) for node, replica, status in replicas if status == "pending"]
    running = [(node, replica) for node, replica, status in replicas if status == "running"]

    def report(size: int) -> Callable[[int], Awaitable[object]]:
        batch = [
            Report(node=node, replica_id=replica, status=ReplicaStatus.STARTING, reason="")
            for node, replica in pending[:size]
        ]
        keys = sorted({digests[item.node] for item in batch})
        return lambda _: service.report(keys, batch)

    def health(size: int) -> Callable[[int], Awaitable[object]]:
        chosen = running[:size]
        keys = sorted({digests[node] for node, _ in chosen})
        verdicts = (ReplicaHealth.HEALTHY, ReplicaHealth.UNHEALTHY)
        return lambda i: service.health(
            keys,
            [
                HealthReport(node=node, replica_id=replica, health=verdicts[i % 2], reason="")
                for node, replica in chosen
            ],
        )

    def usage(size: int) -> Callable[[int], Awaitable[object]]:
        chosen = running[:size]
        keys = sorted({digests[node] for node, _ in chosen})
        batch = [
            UsageSample(node=node, replica_id=replica, usage=Usage(cpu_millis=100, memory_mb=64))
            for node, replica in chosen
        ]
        return lambda _: service.usage(keys, batch)

    calls = DEFAULT_CALLS
    return [
        Workload("token check (500 tokens)", lambda _: service.authenticate(every), calls),
        Workload("heartbeat (500 nodes)", lambda _: service.heartbeat(every), calls),
        Workload(
            "push: one node's list",
            lambda i: service.assignments([digests[nodes[i % len(nodes)]]]),
            calls,
        ),
        Workload(
            "refresh: 500 nodes' lists",
            lambda _: service.assignments(every),
            max(WARM_UP, calls // REFRESH_SHARE),
        ),
        *(Workload(f"report batch of {n}", report(n), calls, reset=True) for n in BATCH_SIZES),
        *(Workload(f"health batch of {n}", health(n), calls) for n in BATCH_SIZES),
        *(Workload(f"usage batch of {n}", usage(n), calls) for n in BATCH_SIZES),
    ]


async def _measure(
    workload: Workload,
    admin: psycopg.Connection,
    profile: cProfile.Profile | None,
) -> Figures:
    cpu: list[float] = []
    server = 0.0
    pids: list[int] = []
    for i in range(WARM_UP + workload.calls):
        if workload.reset:
            admin.execute(_RESET.encode())
        if i == WARM_UP:
            # The pool's connections exist by now; whichever served a call is counted.
            pids = [row[0] for row in admin.execute(_BACKENDS.encode(), (APPLICATION,))]
            if profile is not None:
                profile.enable()
        measured = i >= WARM_UP
        before_server = _server_cpu(pids) if measured else 0.0
        began = time.process_time()
        await workload.call(i)
        spent = time.process_time() - began
        if measured:
            server += _server_cpu(pids) - before_server
            cpu.append(spent)
    if profile is not None:
        profile.disable()
    return Figures(
        name=workload.name,
        calls=workload.calls,
        median_us=1e6 * statistics.median(cpu),
        mean_us=1e6 * statistics.fmean(cpu),
        server_us=1e6 * server / workload.calls,
    )


async def _run(
    url: URL, only: str | None, profile: cProfile.Profile | None, prepare: str | None
) -> list[Figures]:
    with psycopg.connect(_conninfo(url), autocommit=True) as admin:
        replicas = _populate(admin)
        if prepare is None:
            engine = db_engine.make_engine(url, application_name=APPLICATION)
        else:
            # The product's engine, but for psycopg's prepare_threshold: "none" never prepares.
            threshold = None if prepare == "none" else int(prepare)
            engine = create_async_engine(
                url,
                connect_args={"application_name": APPLICATION, "prepare_threshold": threshold},
            )
        sessions = db_engine.make_sessions(engine)
        try:
            async with sessions() as session, session.begin():
                tokens = await credentials.issue_node_tokens(
                    session, nodes=sorted({node for node, _, _ in replicas})
                )
            digests = {node: digest(token) for node, token in tokens.items()}
            figures = []
            for workload in _workloads(AgentService(sessions), digests, replicas):
                if only is None or only in workload.name:
                    figures.append(await _measure(workload, admin, profile))
            return figures
        finally:
            await engine.dispose()


def _table(figures: list[Figures]) -> str:
    lines = [
        "| call | calls | CPU µs/call, median | mean | PostgreSQL CPU µs/call |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {f.name} | {f.calls} | {f.median_us:,.0f} | {f.mean_us:,.0f} | {f.server_us:,.0f} |"
        for f in figures
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the workloads whose name contains this")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of them")
    parser.add_argument(
        "--prepare-threshold",
        help="psycopg's prepare_threshold for the engine: a number, or none (never prepare)",
    )
    args = parser.parse_args()
    print(f"controller from {Path(controller.__file__).parent.parent}")
    server = postgres.start()
    server_url = make_url(server.url())
    name = f"statement_cost_{int(time.time())}"
    # CPU time, not wall time: the machine is shared, and waiting is not what we pay for.
    profile = cProfile.Profile(time.process_time) if args.profile else None
    try:
        url = harness.create_database(server_url, name)
        migrate.upgrade(url)
        figures = asyncio.run(_run(url, args.only, profile, args.prepare_threshold))
    finally:
        harness.drop_database(server_url, name)
        postgres.stop(server)
    print(_table(figures))
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
