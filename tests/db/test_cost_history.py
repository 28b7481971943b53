"""`fogctl cost`'s reading against the real database: the history the triggers wrote, read back.

Replicas are moved the way the operator and node loss move them (status updates, the real
`mark_lost`), so the history rows are the triggers' own; the expected figures are worked out
by hand from the timestamps read back with plain SQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
import rows
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import cost as db_cost
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db.tables import Deployment, DeploymentReplica, NodeLease
from controller.model.cost import (
    PriceClass,
    PriceList,
    Prices,
    Selector,
    cost_report,
    holds,
)
from controller.model.resources import Resources
from controller.model.states import ReplicaStatus

R = ReplicaStatus
EDGE = Prices(cpu_core_hour=Decimal("0.03"), memory_gb_hour=Decimal("0.004"))
CORE = Prices(cpu_core_hour=Decimal("0.05"), storage_gb_hour=Decimal("0.0002"))
PRICES = PriceList(
    currency="EUR",
    classes=(
        PriceClass("edge", Selector({"tier": "edge"}), EDGE),
        PriceClass("core", Selector({"tier": "core"}), CORE),
    ),
)
OLD = {"cpu_millicores": 1500, "memory_mb": 1024, "gpu_units": 0, "storage_gb": 10}
NEW = {"cpu_millicores": 2000, "memory_mb": 2048, "gpu_units": 0, "storage_gb": 10}
# mark_lost's grace, and how long the test says the lost node has been silent: any pair with
# silence > grace does; these are the node lifecycle test's.
GRACE = timedelta(seconds=40)
SILENCE = timedelta(seconds=41)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


async def register(session: AsyncSession, name: str, tier: str) -> uuid.UUID:
    capacity = Resources(cpu_millis=8000, memory_mb=16384, gpu_units=0, storage_gb=100)
    return await db_nodes.register(session, name=name, capacity=capacity, labels={"tier": tier})


async def move(
    sessions: async_sessionmaker[AsyncSession], replica: uuid.UUID, *statuses: ReplicaStatus
) -> None:
    """Each status in its own transaction, as the operator and the agents write them."""
    for status in statuses:
        async with sessions() as session, session.begin():
            await session.execute(
                update(DeploymentReplica)
                .where(DeploymentReplica.id == replica)
                .values(status=status, status_actor="test")
            )


async def history(
    sessions: async_sessionmaker[AsyncSession], replica: uuid.UUID
) -> dict[str, datetime]:
    """When the replica entered each status, read with plain SQL."""
    async with sessions() as session:
        found = await session.execute(
            text(
                "SELECT new_status::text, changed_at FROM replica_status_history"
                " WHERE replica_id = :id"
            ),
            {"id": replica},
        )
        return {status: at for status, at in found.all()}


def hourly(prices: Prices, request: dict[str, int]) -> Fraction:
    return (
        Fraction(request["cpu_millicores"], 1000) * Fraction(prices.cpu_core_hour)
        + Fraction(request["memory_mb"], 1024) * Fraction(prices.memory_gb_hour)
        + request["storage_gb"] * Fraction(prices.storage_gb_hour)
    )


def held(start: datetime, end: datetime) -> Fraction:
    """Hours between two timestamps, exactly (to the microsecond)."""
    span = end - start
    return Fraction((span.days * 86400 + span.seconds) * 10**6 + span.microseconds, 3600 * 10**6)


async def scenario(sessions: async_sessionmaker[AsyncSession]) -> dict[str, uuid.UUID]:
    """A rollout on edge-1 and a replica lost with edge-2, in team-a; one replica in team-b.

    old: runs on edge-1 until the rollout stops it; new: the new revision on edge-1, still
    running; lost: on edge-2 until the node is lost; other: team-b's, on edge-1, running.
    """
    async with sessions() as session, session.begin():
        edge = await register(session, "edge-1", "edge")
        core = await register(session, "edge-2", "core")
        team_a = await rows.user(session, "team-a")
        web = await rows.deployment(session, team_a, "web", revision="r1")
        old = await rows.replica(session, web, 0, node_id=edge, revision="r1", **OLD)
        lost = await rows.replica(session, web, 1, node_id=core, revision="r1", **OLD)
        team_b = await rows.user(session, "team-b")
        api = await rows.deployment(session, team_b, "api")
        other = await rows.replica(session, api, 0, node_id=edge, **OLD)
    for replica in (old.id, lost.id, other.id):
        await move(sessions, replica, R.STARTING, R.RUNNING)
    async with sessions() as session, session.begin():
        new = await rows.replica(session, web, 2, node_id=edge, revision="r2", **NEW)
    await move(sessions, new.id, R.STARTING, R.RUNNING)
    await move(sessions, old.id, R.STOPPING, R.STOPPED)
    async with sessions() as session, session.begin():
        await session.execute(
            update(NodeLease)
            .where(NodeLease.node_id == core)
            .values(renewed_at=func.now() - SILENCE)
        )
        assert await db_nodes.mark_lost(session, grace=GRACE) == ["edge-2"]
    return {"old": old.id, "new": new.id, "lost": lost.id, "other": other.id}


async def read(
    sessions: async_sessionmaker[AsyncSession], namespace: str | None, since: timedelta | None
) -> db_cost.CostInput:
    async with sessions() as session:
        return await db_cost.read(session, namespace=namespace, since=since)


async def test_cost_read_back_matches_the_hand_computed_figure(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = await scenario(sessions)
    old, new, lost = [await history(sessions, ids[k]) for k in ("old", "new", "lost")]
    assert lost["failed"] > lost["running"]  # failed by mark_lost, as lost with its node

    found = await read(sessions, "team-a", None)
    assert {r.deployment for r in found.replicas} == {"web"}  # team-b is not read
    assert len(found.replicas) == 3
    assert found.window.start is None
    assert found.window.end >= new["running"]
    assert {n.name: dict(n.labels) for n in found.nodes.values()} == {
        "edge-1": {"tier": "edge"},
        "edge-2": {"tier": "core"},
    }
    report = cost_report(
        replicas=found.replicas, nodes=found.nodes, prices=PRICES, window=found.window
    )
    expected = (
        held(old["pending"], old["stopped"]) * hourly(EDGE, OLD)
        + held(lost["pending"], lost["failed"]) * hourly(CORE, OLD)
        + held(new["pending"], found.window.end) * hourly(EDGE, NEW)
    )
    assert report.deployments[("team-a", "web")].charge.total == expected
    assert report.total.unpriced == 0


async def test_since_reads_only_replicas_that_can_overlap_and_clips_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = await scenario(sessions)
    # Two days ago: `old` ran and stopped; `new` started and is running still.
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE replica_status_history SET changed_at = changed_at - interval '2 days'"
                " WHERE replica_id IN (:old, :new)"
            ),
            {"old": ids["old"], "new": ids["new"]},
        )
    lost = await history(sessions, ids["lost"])

    found = await read(sessions, None, timedelta(hours=1))
    assert found.window.start == found.window.end - timedelta(hours=1)
    deployments = {r.deployment for r in found.replicas}
    assert deployments == {"web", "api"}
    assert len(found.replicas) == 3  # not `old`: it stopped before the window
    report = cost_report(
        replicas=found.replicas, nodes=found.nodes, prices=PRICES, window=found.window
    )
    other = await history(sessions, ids["other"])
    # `new` held the whole hour; `lost` from its creation (inside the hour) to its failure.
    assert report.deployments[("team-a", "web")].charge.total == (
        Fraction(1) * hourly(EDGE, NEW) + held(lost["pending"], lost["failed"]) * hourly(CORE, OLD)
    )
    assert report.deployments[("team-b", "api")].charge.total == (
        held(other["pending"], found.window.end) * hourly(EDGE, OLD)
    )


async def web_and_edge(session: AsyncSession) -> tuple[uuid.UUID, Deployment]:
    """Node edge-1 (class edge) and deployment team-a/web, without replicas."""
    edge = await register(session, "edge-1", "edge")
    return edge, await rows.deployment(session, await rows.user(session, "team-a"), "web")


async def test_a_replica_that_waited_for_a_node_costs_from_its_assignment(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        edge, web = await web_and_edge(session)
        waiting = await rows.replica(session, web, 0, **OLD)  # no room: no node yet
    async with sessions() as session, session.begin():  # as the reconciler's assignment
        await session.execute(
            update(DeploymentReplica)
            .where(DeploymentReplica.id == waiting.id)
            .values(node_id=edge, status_reason="Scheduled")
        )
    await move(sessions, waiting.id, R.STARTING, R.RUNNING, R.STOPPING, R.STOPPED)
    async with sessions() as session:
        assigned = await session.scalar(
            text("SELECT assigned_at FROM deployment_replicas WHERE id = :id"), {"id": waiting.id}
        )
    when = await history(sessions, waiting.id)
    assert when["pending"] < assigned < when["starting"]  # stamped by the trigger (0009)

    found = await read(sessions, None, None)
    report = cost_report(
        replicas=found.replicas, nodes=found.nodes, prices=PRICES, window=found.window
    )
    amount = report.deployments[("team-a", "web")]
    assert amount.charge.total == held(assigned, when["stopped"]) * hourly(EDGE, OLD)
    # Removing the node clears the replica's column; the history still names the node.
    async with sessions() as session, session.begin():
        assert await db_nodes.remove(session, name="edge-1", force=False) == 0
    again = await read(sessions, None, None)
    assert again.replicas == found.replicas


async def test_replicas_whose_rows_a_retention_dropped_still_cost_from_their_creation(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        edge, web = await web_and_edge(session)
        forever = await rows.replica(session, web, 0, node_id=edge, **OLD)
        partial = await rows.replica(session, web, 1, node_id=edge, **OLD)
    await move(sessions, forever.id, R.STARTING, R.RUNNING)
    await move(sessions, partial.id, R.STARTING, R.RUNNING, R.STOPPING)
    # Both were created two days ago; a retention dropped every row of `forever` and the rows
    # of `partial` before it began stopping (as dropping a month of partitions would).
    async with sessions() as session, session.begin():
        await session.execute(
            text("UPDATE deployment_replicas SET created_at = created_at - interval '2 days'")
        )
        await session.execute(
            text(
                "DELETE FROM replica_status_history WHERE replica_id = :forever"
                " OR (replica_id = :partial AND new_status <> 'stopping')"
            ),
            {"forever": forever.id, "partial": partial.id},
        )
    async with sessions() as session:
        created = dict(
            (await session.execute(text("SELECT id, created_at FROM deployment_replicas"))).all()
        )

    everything = await read(sessions, None, None)
    found = sorted(
        (h.start, h.node_id, h.end) for r in everything.replicas for h in holds(r.transitions)
    )
    assert found == sorted((when, edge, None) for when in created.values())

    last_hour = await read(sessions, None, timedelta(hours=1))
    report = cost_report(
        replicas=last_hour.replicas, nodes=last_hour.nodes, prices=PRICES, window=last_hour.window
    )
    assert report.total.held == 2 * 3600 * 10**6  # both held the whole hour
    assert report.total.charge.total == 2 * hourly(EDGE, OLD)
