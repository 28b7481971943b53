"""`fogctl history NS/NAME`'s reads (controller/db/history.py) on a real PostgreSQL.

The whole story across monthly partitions, in time order; and the plan that keeps it fast at
100 million rows (migration 0014): the deployment found through its name index, every
partition and the replicas' names read by index-only scans, which a column selected but not
carried by the index would silently turn back into a random read of the table per row.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import rows
from sqlalchemy import Select, func, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import history
from controller.model.partitions import HISTORY_TABLES, Month

_REPLICA_ROW = text(
    "INSERT INTO replica_status_history (replica_id, deployment_id, old_status, new_status,"
    " node_id, actor, changed_at)"
    " VALUES (:replica, :deployment, 'pending', CAST(:status AS replicastatus), :node,"
    " 'agent:edge-1', :at)"
)
_OWN_ROW = text(
    "INSERT INTO deployment_status_history (deployment_id, old_status, new_status, actor,"
    " changed_at)"
    " VALUES (:deployment, 'pending', CAST(:status AS deploymentstatus), 'operator', :at)"
)
# The partitions holding a deployment's rows, both tables together.
_PARTITIONS = text(
    "SELECT count(DISTINCT tableoid) FROM ("
    " SELECT tableoid FROM replica_status_history WHERE deployment_id = ANY(:ids)"
    " UNION ALL"
    " SELECT tableoid FROM deployment_status_history WHERE deployment_id = ANY(:ids)) found"
)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _in(month: Month, hours: int) -> datetime:
    """A moment `hours` into `month`."""
    return month.start + timedelta(hours=hours)


async def test_every_row_of_a_name_across_partitions_in_time_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A deleted `web` and the live one, rows from last month to three months ahead."""
    async with sessions() as session, session.begin():
        owner = await rows.user(session)
        edge = await rows.node(session)
        gone = await rows.deployment(session, owner, deleted_at=func.now())
        gone_replica = await rows.replica(session, gone, 0, node_id=edge.id)
        web = await rows.deployment(session, owner)
        web_replica = await rows.replica(session, web, 1, node_id=edge.id)
        api = await rows.deployment(session, owner, name="api")
        api_replica = await rows.replica(session, api, 0, node_id=edge.id)
        this = Month.of(await session.scalar(text("SELECT now()")))
        written = [
            (gone_replica, "starting", _in(this.plus(-1), 1)),
            (web_replica, "running", _in(this.plus(1), 2)),
            (web_replica, "stopping", _in(this.plus(2), 3)),
            (web_replica, "stopped", _in(this.plus(3), 4)),
        ]
        others = [(api_replica, "running", _in(this.plus(1), 5))]
        for replica, status, at in written + others:
            await session.execute(
                _REPLICA_ROW,
                {
                    "replica": replica.id,
                    "deployment": replica.deployment_id,
                    "status": status,
                    "node": edge.id,
                    "at": at,
                },
            )
        await session.execute(
            _OWN_ROW, {"deployment": web.id, "status": "running", "at": _in(this.plus(2), 1)}
        )
        spread = await session.scalar(_PARTITIONS, {"ids": [gone.id, web.id]})
    # Replica rows in five months (last, this, three ahead), the deployment's own in two.
    assert spread == 7

    async with sessions() as session:
        found = await history.deployment_history(session, namespace="team-a", name="web")

    # Every row written above but `api`'s, and the triggers' (first statuses, stamped with
    # clock_timestamp() as each row was flushed, so in the order of the flushes).
    assert [(e.deployment_id, e.replica, e.node, e.new_status) for e in found] == [
        (gone.id, "web-0", "edge-1", "starting"),
        (gone.id, None, None, "pending"),
        (gone.id, "web-0", "edge-1", "pending"),
        (web.id, None, None, "pending"),
        (web.id, "web-1", "edge-1", "pending"),
        (web.id, "web-1", "edge-1", "running"),
        (web.id, None, None, "running"),
        (web.id, "web-1", "edge-1", "stopping"),
        (web.id, "web-1", "edge-1", "stopped"),
    ]
    times = [e.changed_at for e in found]
    assert times == sorted(times)
    assert {at for _, _, at in written} | {_in(this.plus(2), 1)} <= set(times)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _plan(session: AsyncSession, statement: Select[Any]) -> list[dict[str, Any]]:
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    value = (await session.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"))).scalar()
    return _nodes((json.loads(value) if isinstance(value, str) else value)[0]["Plan"])


async def test_each_partition_is_an_index_only_scan(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        owner = await rows.user(session)
        web = await rows.deployment(session, owner)
        await rows.replica(session, web, 0, node_id=(await rows.node(session)).id)
    async with sessions() as session:
        # A test database is a few rows, where reading a whole partition is rightly cheaper
        # than any index: take those plans away to see which index the planner would use.
        await session.execute(text("SET enable_seqscan = off"))
        await session.execute(text("SET enable_bitmapscan = off"))
        own, replicas, ordinals = history.statements(namespace="team-a", name="web")
        for statement in (own, replicas):
            nodes = await _plan(session, statement)
            partitions = [n for n in nodes if n.get("Relation Name", "").startswith(HISTORY_TABLES)]
            # Every partition, this month's and the ones ahead, without a row or with one.
            assert len(partitions) == len(await _month_partitions(session))
            assert {n["Node Type"] for n in partitions} == {"Index Only Scan"}
            assert _lookups(nodes) == {"ix_deployments_user_id_name"}
        nodes = await _plan(session, ordinals)
        assert [
            (n["Node Type"], n["Index Name"])
            for n in nodes
            if n.get("Relation Name") == "deployment_replicas"
        ] == [("Index Only Scan", "uq_deployment_replicas_deployment_id_ordinal")]
        assert _lookups(nodes) == {"ix_deployments_user_id_name"}


def _lookups(nodes: list[dict[str, Any]]) -> set[str]:
    """The indexes through which a plan finds the deployments by name."""
    return {n["Index Name"] for n in nodes if n.get("Relation Name") == "deployments"}


async def _month_partitions(session: AsyncSession) -> list[str]:
    """The partitions of one history table (both have the same months)."""
    query = text(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = CAST(:table AS regclass)"
    )
    return list((await session.scalars(query, {"table": HISTORY_TABLES[0]})).all())
