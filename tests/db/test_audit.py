"""`fogctl check`'s database rules on real Postgres: a healthy history passes, each fault is named.

The healthy record comes from the product itself (reconciles, agents, a node loss, a scale to
zero, a delete); each fault is then injected by hand, as a bug or a broken constraint would
leave it, and the audit must name exactly the offending row and rule.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_node_lifecycle import agents, converge, mark_lost, silence
from test_reconciler import Driver, add_node, spec

from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db.audit import audit
from controller.db.tables import Deployment, DeploymentReplica, Node
from controller.model.invariants import Rule, Violation
from controller.model.states import ReplicaStatus

GRACE = timedelta(seconds=40)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


@pytest.fixture
async def healthy(sessions: async_sessionmaker[AsyncSession]) -> Driver:
    """Two deployments' worth of real history: placed, run, a node lost, scaled, one deleted."""
    for name in ("edge-1", "edge-2", "edge-3"):
        await add_node(sessions, name)
    simulators = agents("edge-1", "edge-2", "edge-3")
    web = Driver(sessions)
    await converge(web, spec(3), simulators)
    await silence(sessions, "edge-2", seconds=41)
    assert await mark_lost(sessions) == ["edge-2"]
    del simulators["edge-2"]
    await converge(web, spec(3), simulators)
    web.bump()
    await converge(web, spec(1), simulators)
    batch = Driver(sessions, name="batch")
    await converge(batch, spec(2, cpu=0.5), simulators)
    batch.bump()
    await converge(batch, spec(0), simulators)
    await batch.reconciler.finalize(ref=batch.ref)
    await converge(web, spec(1), simulators)
    return web


async def found(sessions: async_sessionmaker[AsyncSession]) -> list[Violation]:
    return (await audit(sessions, grace=GRACE)).violations


async def a_running_replica(sessions: async_sessionmaker[AsyncSession]) -> DeploymentReplica:
    async with sessions() as session:
        replica = await session.scalar(
            select(DeploymentReplica).where(DeploymentReplica.status == ReplicaStatus.RUNNING)
        )
    assert replica is not None
    return replica


async def test_the_products_own_history_breaks_no_rule(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    result = await audit(sessions, grace=GRACE)
    assert result.violations == []
    assert (result.nodes, result.deployments) == (3, 2)
    assert result.replicas >= 6
    # The deleted deployment is not in the record compared with the API server.
    assert [(r.namespace, r.name) for r in result.recorded] == [("team-a", "web")]
    assert sum(result.recorded[0].active_by_revision.values()) == 1


async def test_allocation_totals_that_drift_from_the_replicas_are_named(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(Node)
            .where(Node.name == "edge-3")
            .values(allocated_memory_mb=Node.allocated_memory_mb + 1)
        )
    (violation,) = await found(sessions)
    assert (violation.rule, violation.subject) == (Rule.ALLOCATION, "node/edge-3")


async def test_an_overcommitted_node_is_named_even_without_its_constraint(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            text("ALTER TABLE nodes DROP CONSTRAINT ck_nodes_cpu_not_overcommitted")
        )
        await session.execute(update(Node).where(Node.name == "edge-1").values(cpu_cores=0.1))
    violations = await found(sessions)
    assert {(v.rule, v.subject) for v in violations} == {(Rule.OVERCOMMITTED, "node/edge-1")}
    assert any("cpu_millis allocated" in v.detail for v in violations)


async def test_a_status_written_past_the_history_triggers_is_named(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    replica = await a_running_replica(sessions)
    async with sessions() as session, session.begin():
        # Triggers off for this transaction, as a bulk fix-up by hand would do.
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(
            update(DeploymentReplica)
            .where(DeploymentReplica.id == replica.id)
            .values(status=ReplicaStatus.STOPPING)
        )
    (violation,) = [v for v in await found(sessions) if v.rule == Rule.REPLICA_HISTORY]
    assert violation.subject == f"replica/{replica.id}"
    assert violation.detail == "history ends at running but the status is stopping"


async def test_an_illegal_edge_in_the_history_is_named(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    replica = await a_running_replica(sessions)
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO replica_status_history (replica_id, deployment_id, old_status,"
                " new_status, actor) VALUES (:id, :deployment, 'running', 'pending', 'test'),"
                " (:id, :deployment, 'pending', 'running', 'test')"
            ),
            {"id": replica.id, "deployment": replica.deployment_id},
        )
    violations = await found(sessions)
    assert [(v.rule, v.subject) for v in violations] == [
        (Rule.REPLICA_HISTORY, f"replica/{replica.id}")
    ]
    assert "running -> pending is not an allowed transition" in violations[0].detail


async def test_active_replicas_of_a_deleted_deployment_are_named(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    replica = await a_running_replica(sessions)
    async with sessions() as session, session.begin():
        await session.execute(
            update(Deployment)
            .where(Deployment.id == replica.deployment_id)
            .values(deleted_at=text("now()"))
        )
    (violation,) = await found(sessions)
    assert (violation.rule, violation.subject) == (Rule.ACTIVE_ON_DELETED, f"replica/{replica.id}")


async def test_replicas_on_a_node_silent_for_two_graces_are_named(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    replica = await a_running_replica(sessions)
    async with sessions() as session:
        node = await session.scalar(select(Node.name).where(Node.id == replica.node_id))
    assert node is not None
    await silence(sessions, node, seconds=79)  # silent, but not yet two graces
    assert await found(sessions) == []
    await silence(sessions, node, seconds=81)  # the node check should have failed it by now
    (violation,) = await found(sessions)
    assert (violation.rule, violation.subject) == (
        Rule.ACTIVE_ON_LOST_NODE,
        f"replica/{replica.id}",
    )
    # Once the node check runs, the rule holds again.
    await mark_lost(sessions)
    assert await found(sessions) == []


async def test_a_replica_placed_on_a_node_already_offline_is_failed_by_the_next_check(
    sessions: async_sessionmaker[AsyncSession], healthy: Driver
) -> None:
    """The race the checker's rule exposed: a placement that read its candidates without locks
    commits onto a node the node check has just taken offline. The next check fails it."""
    await silence(sessions, "edge-3", seconds=41)
    assert await mark_lost(sessions) == ["edge-3"]
    async with sessions() as session, session.begin():
        node_id = await session.scalar(select(Node.id).where(Node.name == "edge-3"))
        web = await session.scalar(select(Deployment).where(Deployment.name == "web"))
        assert web is not None
        session.add(
            DeploymentReplica(
                deployment_id=web.id,
                node_id=node_id,
                ordinal=99,
                revision=web.revision,
                cpu_millicores=1000,
                memory_mb=512,
                gpu_units=0,
                storage_gb=1,
                status_actor="operator",
            )
        )
    assert await mark_lost(sessions) == []  # no node newly lost ...
    async with sessions() as session:
        status = await session.scalar(
            select(DeploymentReplica.status).where(DeploymentReplica.ordinal == 99)
        )
    assert status == ReplicaStatus.FAILED  # ... but the stray replica is failed all the same
    async with sessions() as session, session.begin():
        assert await db_nodes.heartbeat(session, names=["edge-3"]) == 1
    assert await found(sessions) == []
