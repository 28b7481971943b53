"""The `usage` scenario (issue 17 item 2): a year of usage history, and what reading it costs.

Issue 17 asks that a year of samples for 10,000 replicas stay queryable in well under a second
for a per-deployment summary. Samples are folded into hourly rollups as they arrive
(docs/design/capacity-and-history.md, "Usage"), so a year is what this scenario writes
straight into a fresh database: 8,760 hourly rows per deployment, for 10,000 replicas in
deployments of 10 on 5,000 nodes (`make bench`; --quick: 400 replicas). Node rollups are not
generated: the summary does not read them, and 5,000 nodes' year (43.8 million rows) would
take minutes to write. Then it times, through the product's own functions
(controller/db/usage.py):

* `deployment_summary`: one deployment's averages and peaks over the year, for a sample of
  deployments (the figure the issue sets the target for);
* `record`: one sampling round of every replica as one batch (the fleet agent's load), the
  first (inserts) and a second (updates, rollups merged);
* `top_deployments` and `top_nodes`: `fogctl top` over every replica.

Only PostgreSQL is used; no operator or agent runs.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
from kubernetes_asyncio import client
from scenarios import Sizes
from sqlalchemy import func, select

from controller.db import engine as db_engine
from controller.db import usage
from controller.db.tables import Deployment, DeploymentReplica, Node
from controller.model.protocol import UsageSample
from controller.model.resources import Resources
from controller.model.usage import simulated_usage
from controller.sandbox.harness import Servers

# Replicas per deployment, and per node: the fleet scenario's 5,000 nodes with two each.
REPLICAS_PER_DEPLOYMENT = 10
REPLICAS_PER_NODE = 2
HOURS_PER_YEAR = 8760
# A replica sampled every 30 s (twice the simulated agent's default rate) gives 120 an hour.
SAMPLES_PER_REPLICA_HOUR = 120
# Deployments whose summary is timed: enough for a median and a worst case that mean something,
# few enough that the cache is not warmed by reading every deployment first.
TIMED_DEPLOYMENTS = 25
REQUEST = Resources(cpu_millis=500, memory_mb=512, gpu_units=0, storage_gb=1)

_SETUP = (
    "INSERT INTO users (name) VALUES ('bench')",
    "INSERT INTO nodes (name, cpu_cores, memory_mb, gpu_units, storage_gb)"
    " SELECT 'n' || i, 64, 262144, 0, 4000 FROM generate_series(0, %(nodes)s - 1) i",
    "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision)"
    " SELECT u.id, 'd' || i, 'bench:1', %(per_deployment)s, 'r1'"
    " FROM users u, generate_series(0, %(deployments)s - 1) i WHERE u.name = 'bench'",
    "INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, status, revision,"
    " cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
    " SELECT d.id, n.id, g %% %(per_deployment)s, 'running', 'r1', 500, 512, 0, 1, 'operator'"
    " FROM generate_series(0, %(replicas)s - 1) g"
    " JOIN deployments d ON d.name = 'd' || (g / %(per_deployment)s)"
    " JOIN nodes n ON n.name = 'n' || (g %% %(nodes)s)",
)
# A year of hourly rollups up to the current hour, with plausible sums and peaks per row.
_YEAR = """
INSERT INTO deployment_usage_hourly (deployment_id, hour, samples, cpu_millicores_sum,
    cpu_millicores_max, memory_mb_sum, memory_mb_max)
  SELECT k.id, h, %(samples)s, (%(samples)s * (50 + random() * 400))::bigint,
    (300 + random() * 200)::int, (%(samples)s * (150 + random() * 300))::bigint,
    (400 + random() * 112)::int
  FROM deployments k,
    generate_series(date_trunc('hour', now()) - make_interval(hours => %(hours)s - 1),
                    date_trunc('hour', now()), interval '1 hour') h
"""


def _milliseconds(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


async def _timed(work: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await work()
    return time.perf_counter() - began


def _generate(url: Any, *, replicas: int) -> dict[str, Any]:
    """Replicas, nodes, deployments and a year of rollups; how long writing them took."""
    deployments = replicas // REPLICAS_PER_DEPLOYMENT
    nodes = replicas // REPLICAS_PER_NODE
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    figures: dict[str, Any] = {"replicas": replicas, "deployments": deployments, "nodes": nodes}
    with psycopg.connect(conninfo, autocommit=True) as connection:
        counts = {
            "nodes": nodes,
            "deployments": deployments,
            "replicas": replicas,
            "per_deployment": REPLICAS_PER_DEPLOYMENT,
        }
        for statement in _SETUP:
            connection.execute(statement.encode(), counts)
        began = time.monotonic()
        connection.execute(
            _YEAR.encode(),
            {
                "samples": REPLICAS_PER_DEPLOYMENT * SAMPLES_PER_REPLICA_HOUR,
                "hours": HOURS_PER_YEAR,
            },
        )
        connection.execute(b"VACUUM ANALYZE")
        figures["generate_seconds"] = round(time.monotonic() - began, 1)
        rows = connection.execute(
            b"SELECT count(*), pg_total_relation_size('deployment_usage_hourly')"
            b" FROM deployment_usage_hourly"
        ).fetchone()
        assert rows is not None
        figures["rollup_rows"], figures["rollup_megabytes"] = rows[0], round(rows[1] / 2**20)
    return figures


async def history(servers: Servers, sizes: Sizes, _api: client.ApiClient) -> dict[str, Any]:
    """A year of rollups for 2 x fleet_nodes replicas; the summary, write and top timings."""
    replicas = REPLICAS_PER_NODE * sizes.fleet_nodes
    url = servers.fresh_database("usage")
    figures = _generate(url, replicas=replicas)
    engine = db_engine.make_engine(url)
    sessions = db_engine.make_sessions(engine)
    try:
        async with sessions() as session:
            ids = list(await session.scalars(select(Deployment.id).order_by(Deployment.name)))
            since = (await session.scalar(select(func.now()))) - timedelta(days=365)
            chosen = random.Random(17).sample(ids, min(TIMED_DEPLOYMENTS, len(ids)))
            summaries = []
            for deployment_id in chosen:

                async def summary(deployment_id: uuid.UUID = deployment_id) -> Any:
                    return await usage.deployment_summary(
                        session, deployment_id=deployment_id, since=since
                    )

                summaries.append(await _timed(summary))
            figures["summary"] = _milliseconds(summaries)
            one = await usage.deployment_summary(session, deployment_id=chosen[0], since=since)
            figures["summary_hours"] = one.hours
            figures["summary_samples"] = one.samples
            rows = await session.execute(
                select(DeploymentReplica.id, Node.name).join(
                    Node, Node.id == DeploymentReplica.node_id
                )
            )
            batch = [
                UsageSample(
                    node=node, replica_id=replica, usage=simulated_usage(replica, REQUEST, 0)
                )
                for replica, node in rows
            ]
        rounds = []
        for _ in range(2):
            async with sessions() as session, session.begin():
                rounds.append(await _timed(lambda: usage.record(session, batch)))
        figures["record_batch"] = {
            "samples": len(batch),
            "first_ms": round(1000 * rounds[0]),
            "again_ms": round(1000 * rounds[1]),
        }
        async with sessions() as session:
            figures["top_deployments"] = _milliseconds(
                [await _timed(lambda: usage.top_deployments(session, namespace=None))]
            )
            figures["top_nodes"] = _milliseconds(
                [await _timed(lambda: usage.top_nodes(session, namespace=None))]
            )
    finally:
        await engine.dispose()
    return figures
