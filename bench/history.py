"""The `history` scenario (issue 15 item 6): `fogctl history NS/NAME` over 100 million rows.

Every status change is kept, about five rows per replica lifetime, so a large fleet's history
tables reach hundreds of millions of rows. The issue's target: `fogctl history NAMESPACE/NAME`
answers in under 10 ms (p99) with 100 million history rows (`make bench`; --quick: 100,000).

What this scenario writes, straight into a fresh database with one INSERT ... SELECT over
generate_series per table (the rows are the shape the triggers write, without running them):
deployments of 40 replica lifetimes each (10 replicas replaced 4 times over), 5 transitions
per lifetime (pending, starting, running, stopping, stopped) and 4 of the deployment itself,
spread over 24 months, so that every deployment's story touches every monthly partition: the
worst case for an unbounded per-deployment query. Rows are written in the order the product
writes them: replicas as they are created (lifetime by lifetime, all deployments interleaved)
and history in time order, so that a deployment's rows lie one per page among everyone else's,
as the triggers leave them. Indexes are dropped for the load and built
again from their own definitions afterwards (one sort per index instead of 100 million random
inserts), then the tables are vacuumed and analysed as autovacuum would have by then.

Then it times, through the product's own function (controller/db/history.py
`deployment_history`, what `fogctl history` runs: three statements and the rows made into
entries), a sample of random deployments per run, each run on a new connection, and EXPLAINs
the statements once, for a deployment not queried before, to report how many partitions
each touches, with which scans and indexes, how many rows it fetched from the tables (heap
fetches: none when the scans are index-only, migration 0014) and how many pages it found in
shared buffers or had to read.

Only PostgreSQL is used; no operator or agent runs.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import time
from datetime import timedelta
from typing import Any

import psycopg
from kubernetes_asyncio import client
from report import percentile, summary
from scenarios import Sizes
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL

from controller.db import engine as db_engine
from controller.db import history
from controller.db.partitions import create_statement
from controller.model.partitions import HISTORY_TABLES, MONTHS_AHEAD, Month, Partition
from controller.sandbox.harness import Servers

NAMESPACE = "bench"
# Issue 15's "about five rows per replica lifetime", 40 lifetimes per deployment (10 replicas,
# each replaced four times over the months), and 4 rows of the deployment's own status.
ROWS_PER_LIFETIME = 5
LIFETIMES_PER_DEPLOYMENT = 40
DEPLOYMENT_ROWS = 4
ROWS_PER_DEPLOYMENT = ROWS_PER_LIFETIME * LIFETIMES_PER_DEPLOYMENT + DEPLOYMENT_ROWS
# Two years of monthly partitions (and the months ahead the operator keeps).
MONTHS = 24
# Nodes the replicas ran on (the history's node column, joined for its name).
NODES = 1000
# Memory for the index builds after the load (PostgreSQL's default, 64 MB, spills to disk).
MAINTENANCE_WORK_MEM = "512MB"

_SETUP = (
    "INSERT INTO users (name) VALUES (%(namespace)s)",
    "INSERT INTO nodes (name, cpu_cores, memory_mb, gpu_units, storage_gb)"
    " SELECT 'n' || i, 64, 262144, 0, 4000 FROM generate_series(0, %(nodes)s - 1) i",
    "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision,"
    " status, created_at)"
    " SELECT u.id, 'd' || i, 'bench:1', 10, 'r1', 'running', now() - %(span)s"
    " FROM users u, generate_series(0, %(deployments)s - 1) i WHERE u.name = %(namespace)s",
    "INSERT INTO deployment_replicas (deployment_id, ordinal, status, revision,"
    " cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
    " SELECT d.id, j, 'stopped', 'r1', 500, 512, 0, 1, 'operator'"
    " FROM deployments d, generate_series(0, %(lifetimes)s - 1) j ORDER BY j",
)
# Lifetime j of each deployment starts at a random moment of its j-th slice of the span; its
# five transitions follow a few seconds apart. Node: any of the NODES, by the replica's id.
_REPLICA_ROWS = """
INSERT INTO replica_status_history (replica_id, deployment_id, old_status, new_status, node_id,
    actor, changed_at)
  SELECT r.id, r.deployment_id,
    (ARRAY[NULL, 'pending', 'starting', 'running', 'stopping'])[s + 1]::replicastatus,
    (ARRAY['pending', 'starting', 'running', 'stopping', 'stopped'])[s + 1]::replicastatus,
    n.id, CASE WHEN s IN (1, 2, 4) THEN 'agent:' || n.name ELSE 'operator' END,
    d.created_at + %(span)s * ((r.ordinal + random()) / %(lifetimes)s)
      + make_interval(secs => 3 * s)
  FROM deployment_replicas r
    JOIN deployments d ON d.id = r.deployment_id
    JOIN nodes n ON n.name = 'n' || (abs(hashtext(r.id::text)) %% %(nodes)s),
    generate_series(0, %(per_lifetime)s - 1) s
  ORDER BY 7
"""
_DEPLOYMENT_ROWS = """
INSERT INTO deployment_status_history (deployment_id, old_status, new_status, actor, changed_at)
  SELECT d.id,
    (ARRAY[NULL, 'pending', 'running', 'stopped'])[s + 1]::deploymentstatus,
    (ARRAY['pending', 'running', 'stopped', 'running'])[s + 1]::deploymentstatus,
    'operator', d.created_at + %(span)s * (s::float / %(rows)s)
  FROM deployments d, generate_series(0, %(rows)s - 1) s
  ORDER BY 5
"""
# Each index of a table, with the constraint it backs (the primary key), and its definition.
_INDEXES = """
SELECT i.indexrelid::regclass::text, c.conname, pg_get_indexdef(i.indexrelid),
    pg_get_constraintdef(c.oid)
FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
WHERE i.indrelid = %(table)s::regclass
"""


# The partitioned index each of these partitions' indexes belongs to.
_PARENT_INDEXES = text(
    "SELECT inhrelid::regclass::text, inhparent::regclass::text FROM pg_inherits"
    " WHERE inhrelid::regclass::text = ANY(:indexes)"
)


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _load(
    connection: psycopg.Connection[Any], figures: dict[str, Any], values: dict[str, Any]
) -> None:
    """Drop each history index, write the rows, build the indexes again from their definitions."""
    kept = []
    for table in HISTORY_TABLES:
        for index, constraint, definition, constraint_definition in connection.execute(
            _INDEXES.encode(), {"table": table}
        ).fetchall():
            if constraint:
                connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}".encode())
                rebuild = f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {constraint_definition}"
            else:
                connection.execute(f"DROP INDEX {index}".encode())
                # On the parent it reads `ON ONLY`: built on every partition, as migrated.
                rebuild = definition.replace(" ON ONLY ", " ON ")
            kept.append(rebuild)
    began = time.monotonic()
    connection.execute(_REPLICA_ROWS.encode(), values)
    connection.execute(_DEPLOYMENT_ROWS.encode(), {**values, "rows": DEPLOYMENT_ROWS})
    figures["insert_seconds"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    connection.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'".encode())
    for statement in kept:
        connection.execute(statement.encode())
    figures["index_seconds"] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    connection.execute(b"VACUUM ANALYZE deployment_status_history, replica_status_history")
    figures["vacuum_seconds"] = round(time.monotonic() - began, 1)


def _generate(url: URL, *, rows: int) -> dict[str, Any]:
    """Nodes, deployments, replicas, and `rows` history rows over MONTHS monthly partitions."""
    deployments = max(1, rows // ROWS_PER_DEPLOYMENT)
    figures: dict[str, Any] = {"deployments": deployments, "months": MONTHS}
    values = {
        "namespace": NAMESPACE,
        "nodes": NODES,
        "deployments": deployments,
        "lifetimes": LIFETIMES_PER_DEPLOYMENT,
        "per_lifetime": ROWS_PER_LIFETIME,
        "span": timedelta(days=30 * MONTHS),
    }
    with psycopg.connect(_conninfo(url), autocommit=True) as connection:
        now = connection.execute(b"SELECT now()").fetchone()
        assert now is not None
        this = Month.of(now[0])
        for table in HISTORY_TABLES:
            for back in range(-MONTHS_AHEAD, MONTHS + 2):
                partition = Partition(table, this.plus(-back))
                connection.execute(create_statement(partition).encode())
        # No triggers (every history row is written here, as the triggers would write it) and
        # no per-row key checks: the rows are consistent by construction.
        connection.execute(b"SET session_replication_role = replica")
        for statement in _SETUP:
            connection.execute(statement.encode(), values)
        _load(connection, figures, values)
        counted = connection.execute(
            b"SELECT (SELECT count(*) FROM replica_status_history),"
            b" (SELECT count(*) FROM deployment_status_history),"
            b" (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            b"  WHERE inhparent IN ('replica_status_history'::regclass,"
            b"                      'deployment_status_history'::regclass)),"
            b" (SELECT count(*) FROM pg_inherits"
            b"  WHERE inhparent = 'replica_status_history'::regclass)"
        ).fetchone()
        assert counted is not None
        figures["rows"] = counted[0] + counted[1]
        figures["megabytes"] = round(counted[2] / 2**20)
        figures["partitions_per_table"] = counted[3]
    return figures


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _plan_nodes(child)
    return found


async def _explain(session: Any, statement: Any, table: str) -> dict[str, Any]:
    """Which partitions of `table` one statement reads, and how (EXPLAIN ANALYZE, BUFFERS)."""
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    value = (await session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))).scalar()
    plan = (json.loads(value) if isinstance(value, str) else value)[0]
    nodes = _plan_nodes(plan["Plan"])
    scans = [n for n in nodes if str(n.get("Relation Name", "")).startswith(table)]
    used = sorted({str(node["Index Name"]) for node in nodes if "Index Name" in node})
    # A partition's index is named after its month (or cut short by PostgreSQL); say instead
    # which of the parent table's indexes it is, so that 29 months read as one name.
    parents = dict((await session.execute(_PARENT_INDEXES, {"indexes": used})).all())
    return {
        "partitions_read": len({node["Relation Name"] for node in scans}),
        "scan_types": sorted({node["Node Type"] for node in scans}),
        "indexes": sorted({parents.get(index, index) for index in used}),
        "heap_fetches": sum(node.get("Heap Fetches", 0) for node in scans),
        "buffers_hit": plan["Plan"]["Shared Hit Blocks"],
        "buffers_read": plan["Plan"]["Shared Read Blocks"],
        "planning_ms": round(plan["Planning Time"], 2),
        "execution_ms": round(plan["Execution Time"], 2),
    }


async def history_scale(servers: Servers, sizes: Sizes, _api: client.ApiClient) -> dict[str, Any]:
    """`sizes.history_rows` rows of history; `fogctl history`'s query timed per run."""
    url = servers.fresh_database("history")
    figures = _generate(url, rows=sizes.history_rows)
    engine = db_engine.make_engine(url)
    sessions = db_engine.make_sessions(engine)
    chooser = random.Random(15)
    p50s, p99s, first, entries = [], [], [], []
    try:
        for _ in range(sizes.runs):
            seconds = []
            # The pool would hand the last run's connection back: each run starts on a new one.
            await engine.dispose()
            async with sessions() as session:
                # A new connection's first query also connects and loads the catalogue entries
                # of every partition and index (what each `fogctl history` process pays once):
                # timed apart, not mixed into the query's percentiles.
                name = f"d{chooser.randrange(figures['deployments'])}"
                began = time.perf_counter()
                await history.deployment_history(session, namespace=NAMESPACE, name=name)
                first.append(time.perf_counter() - began)
                # The benchmark process holds the harness, the API client and every sample:
                # a full collection of that heap (80 ms here, every 48 queries) is this
                # process's, not the query's. `fogctl history` runs one query per process.
                gc.collect()
                gc.disable()
                try:
                    for _ in range(sizes.history_samples):
                        name = f"d{chooser.randrange(figures['deployments'])}"
                        began = time.perf_counter()
                        found = await history.deployment_history(
                            session, namespace=NAMESPACE, name=name
                        )
                        seconds.append(time.perf_counter() - began)
                        entries.append(len(found))
                finally:
                    gc.enable()
            p50s.append(1000 * percentile(seconds, 50))
            p99s.append(1000 * percentile(seconds, 99))
        async with sessions() as session:
            name = f"d{chooser.randrange(figures['deployments'])}"
            own, replicas, ordinals = history.statements(namespace=NAMESPACE, name=name)
            read = {
                "deployment_status_history": own,
                "replica_status_history": replicas,
                "deployment_replicas": ordinals,
            }
            figures["explain"] = {
                table: await _explain(session, statement, table)
                for table, statement in read.items()
            }
    finally:
        await engine.dispose()
    figures["samples_per_run"] = sizes.history_samples
    figures["entries_per_query"] = round(statistics.mean(entries))
    figures["first_query_on_a_new_connection_ms"] = summary([1000 * f for f in first])
    figures["p50_ms"] = summary(p50s)
    figures["p99_ms"] = summary(p99s)
    return figures
