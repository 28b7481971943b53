"""Scale at rest and at restart (issue 15 item 5): tens of thousands of Ready objects.

Large fleets keep tens of thousands of FogDeployments. What they cost the operator at rest (RSS,
CPU) matters every minute; what a restart costs matters on every upgrade: the operator must
reconcile every object once, soon, and write nothing where nothing changed (a restart that
patched 50,000 statuses would be a self-inflicted burst on the API server).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cpu import usage
from kubernetes_asyncio import client
from report import summary
from runs import (
    api_writes,
    create_all,
    fresh_run,
    manifest,
    metric_samples,
    node_name,
    scrape_metrics,
)
from scenarios import IDLE_LIMIT_SECONDS, Sizes

from controller.sandbox import ports
from controller.sandbox.harness import FogctlProcess, Servers

# The fleet's agent heartbeats every 10 s, as in the agents scenario: a production-like load
# on the database while the operator idles, not the tests' fast tick.
AGENT_TICK_SECONDS = 10
# Usage samples every 10 minutes per replica, not the agents' default minute. The default is
# about 8,000 rows a second for 500,000 replicas (controller/model/simulation.py), and at 10,000
# objects the agent API alone took 94 % of a core at rest recording 1,700 a second: on 2 cores
# beside the operator, PostgreSQL, the API server and ten simulated agents, that load measures the
# simulation and starves the fill. This scenario measures the operator; the agents scenario
# measures what usage sampling costs the agent API.
AGENT_USAGE_SECONDS = 600
# The most nodes one simulated agent process plays. A real fleet runs an agent per machine; one
# process playing all 5,000 nodes (500,000 replicas) fell behind its own heartbeats under the
# fill's load and lost its stream in three full-size runs (BENCHMARKS.md), so those runs measured
# the simulation, not the operator. The burst's one agent plays 500 nodes and keeps up.
NODES_PER_AGENT = 500
# Nodes as large as the objects need: 10 replicas of 0.5 cores each per object, 100 per node.
NODE_CPU, NODE_MEMORY_MB = 64, 131072
# How often the restart's progress is read from the operator's /metrics.
POLL_SECONDS = 0.5
# Bounds a restart that never finishes its first pass; the target is 120 s.
RESTART_LIMIT_SECONDS = 900


def _first_pass_done(text: str, objects: int) -> bool:
    """Every object reconciled since the start, and nothing left queued or running."""
    reconciled = sum(
        value for _, value in metric_samples(text, "controller_runtime_reconcile_total")
    )
    depth = sum(value for _, value in metric_samples(text, "workqueue_depth"))
    return reconciled >= objects and depth == 0


def _listed(text: str, objects: int) -> bool:
    """Whether kopf's watch handed over its listing of every object (after our first pass)."""
    listed = sum(
        value
        for labels, value in metric_samples(text, "fog_watch_events_total")
        if labels.get("type") == "listed"
    )
    return listed >= objects


async def _until(metrics: str, done: Callable[[str], bool], began: float, what: str) -> float:
    """Seconds from `began` until the operator's /metrics satisfy `done`."""
    deadline = began + RESTART_LIMIT_SECONDS
    while True:
        try:
            if done(scrape_metrics(metrics)):
                return time.monotonic() - began
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {RESTART_LIMIT_SECONDS} s of the restart")
        await asyncio.sleep(POLL_SECONDS)


async def _restart(
    servers: Servers, operator: FogctlProcess, metrics: str, objects: int, settle: float
) -> Restart:
    """Restart the operator; time its first pass and kopf's listing; count its API writes.

    The first pass is the target's measure. kopf's watch lists every object again and hands
    each over through its per-object workers, which at 20,000 objects went on for 12-30 s at
    50-100 % of a core after the first pass (performance.md): an idle window opened before
    that ends measures the restart's tail, not the rest.
    """
    before = api_writes(servers.kubectl)
    operator.stop()
    began = time.monotonic()
    operator.start()
    seconds = await _until(
        metrics, lambda text: _first_pass_done(text, objects), began, "a full pass"
    )
    listed = await _until(metrics, lambda text: _listed(text, objects), began, "kopf's listing")
    await asyncio.sleep(settle)  # writes a late reconcile would make
    return Restart(
        seconds=seconds, listed_seconds=listed, writes=api_writes(servers.kubectl) - before
    )


@dataclass(frozen=True)
class Restart:
    """One restart: until all were reconciled once, until kopf's listing was handed over."""

    seconds: float
    listed_seconds: float
    writes: float  # the API writes it caused


def _agents(prefix: str, nodes: int) -> dict[str, list[str]]:
    """The simulated agents of `nodes` nodes: one process per NODES_PER_AGENT of them."""
    starts = range(0, nodes, NODES_PER_AGENT)
    return {
        f"part{number}": [
            node_name(prefix, index) for index in range(start, min(start + NODES_PER_AGENT, nodes))
        ]
        for number, start in enumerate(starts)
    }


async def idle(servers: Servers, sizes: Sizes, api_client: client.ApiClient) -> dict[str, Any]:
    """Thousands of Ready objects and nothing to do: what the operator costs, and a restart."""
    api = client.CustomObjectsApi(api_client)
    metrics_port = ports.free_port()
    agents = _agents("idle", sizes.idle_nodes)  # fresh_run names the nodes after its label
    async with fresh_run(
        servers,
        api_client,
        "idle",
        nodes=sizes.idle_nodes,
        cpu=NODE_CPU,
        memory=NODE_MEMORY_MB,
        agents=agents,
        agent_args=(
            "--tick",
            str(AGENT_TICK_SECONDS),
            "--usage-seconds",
            str(AGENT_USAGE_SECONDS),
        ),
        operator_args=("--metrics-bind-address", f"127.0.0.1:{metrics_port}"),
    ) as current:
        bodies = [manifest(f"i{i:05d}", sizes.idle_replicas) for i in range(sizes.idle_objects)]
        began = time.monotonic()
        await create_all(api, current.namespace, bodies, concurrency=16)
        watcher = current.watcher
        wanted = len(bodies)
        await watcher.until(
            lambda w=watcher, n=wanted: len(w.ready_at) >= n, limit=IDLE_LIMIT_SECONDS
        )
        print(f"  idle: {wanted} objects Ready in {time.monotonic() - began:.0f} s", flush=True)
        await watcher.stop()
        await asyncio.sleep(sizes.settle_seconds)
        operator = current.stack.operator
        _, peak = usage(operator.pid)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        restarts = []
        for run in range(sizes.runs):
            restarts.append(
                await _restart(servers, operator, metrics, wanted, sizes.settle_seconds)
            )
            print(
                f"  restart {run + 1}: all reconciled in {restarts[-1].seconds:.1f} s,"
                f" kopf's listing handed over in {restarts[-1].listed_seconds:.1f} s,"
                f" {restarts[-1].writes:.0f} API writes",
                flush=True,
            )
        # At rest after a restart, not after the fill: an operator started on an empty
        # cluster resyncs only the few objects it knew when its resync began, for a whole
        # interval; one that starts with every object resyncs them all (a share a second).
        window = sizes.idle_seconds / sizes.runs
        shares = []
        for _ in range(sizes.runs):
            before, _ = usage(operator.pid)
            await asyncio.sleep(window)
            after, _ = usage(operator.pid)
            shares.append(100 * (after - before) / window)
        print(f"  idle: {statistics.median(shares):.2f} % of a core", flush=True)
        _, restarted_peak = usage(operator.pid)
    return {
        "objects": sizes.idle_objects,
        "replicas_each": sizes.idle_replicas,
        "nodes": sizes.idle_nodes,
        "agent_processes": len(agents),
        "agent_usage_seconds": AGENT_USAGE_SECONDS,
        "seconds": sizes.idle_seconds,
        "operator_cpu_percent_of_one_core": summary(shares),
        "operator_peak_rss_mb": round(peak / 2**20, 1),
        "operator_peak_rss_mb_after_restart": round(restarted_peak / 2**20, 1),
        "seconds_restart_to_all_reconciled": summary([r.seconds for r in restarts]),
        "seconds_restart_to_watch_listed": summary([r.listed_seconds for r in restarts]),
        "api_writes_on_restart": summary([r.writes for r in restarts]),
    }
