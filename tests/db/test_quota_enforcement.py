"""Quota enforcement against real PostgreSQL: concurrent reconciles, rank, history, wakeups.

Each reconcile is its own transaction on its own connection, as in the operator, so the
concurrent ones here race for the quota rows for real; the sums are read back from the
database afterwards.
"""

from __future__ import annotations

import asyncio

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, agents, condition, sessions, spec

from controller.db.quotas import QuotaRecord
from controller.db.store import Store
from controller.db.tables import Deployment, DeploymentReplica, QuotaHistory, User
from controller.model.quota import QuotaAmounts

NAMESPACE = "team-a"
__all__ = ["sessions"]  # the fixture, shared with test_reconciler


async def set_quota(sessions: async_sessionmaker[AsyncSession], **hard: int) -> None:
    await Store(sessions).save_quota(
        QuotaRecord(
            namespace=NAMESPACE,
            name="q",
            uid="uid-q",
            generation=1,
            hard=QuotaAmounts(**hard),
            actor="kubectl-patch",
        )
    )


async def placed(sessions: async_sessionmaker[AsyncSession], namespace: str = NAMESPACE) -> int:
    """Replicas of the namespace holding a node, counted in the database."""
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(DeploymentReplica)
            .join(Deployment)
            .join(User)
            .where(
                User.name == namespace,
                DeploymentReplica.node_id.is_not(None),
                DeploymentReplica.status.in_(("pending", "starting", "running", "stopping")),
            )
        )
        return int(count or 0)


async def test_concurrent_reconciles_in_one_namespace_never_pass_the_quota(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for name in ("edge-1", "edge-2", "edge-3"):
        await add_node(sessions, name, cpu=8)
    await set_quota(sessions, replicas=5, cpu_millis=5000)
    drivers = [Driver(sessions, name=f"racer-{index}") for index in range(8)]
    others = [Driver(sessions, name=f"free-{index}", ns="team-b") for index in range(2)]
    for _ in range(3):  # several rounds: later ones see what the first left
        await asyncio.gather(*(d.reconcile(spec(2)) for d in drivers + others))
    assert await placed(sessions) == 5
    assert await placed(sessions, "team-b") == 4  # a namespace without quota is not limited
    reasons = [condition(d.status, "Stalled")["reason"] for d in drivers]
    assert reasons.count("QuotaExceeded") >= 5  # 5 units over 8 deployments of 2


async def test_raising_the_quota_places_the_waiting_replicas(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=8)
    await set_quota(sessions, cpu_millis=2000)
    driver = Driver(sessions)
    status = await driver.reconcile(spec(4, cpu=1.0))
    stalled = condition(status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "QuotaExceeded")
    assert stalled["message"].startswith("quota q: cpuCores 2/2 used, 2 more requested")
    assert status["unplacedReplicas"] == 2
    await set_quota(sessions, cpu_millis=4000)
    await agents(sessions)
    status = await driver.reconcile(spec(4, cpu=1.0))
    assert status["unplacedReplicas"] == 0
    assert await placed(sessions) == 4


async def test_fog_deployments_admits_the_oldest_and_deleting_one_admits_the_next(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=8)
    await set_quota(sessions, fog_deployments=1)
    first, second = Driver(sessions, name="first"), Driver(sessions, name="second")
    await first.reconcile(spec(1))
    status = await second.reconcile(spec(1))
    assert condition(status, "Stalled")["message"].startswith(
        "quota q: fogDeployments 1/1 used, 1 more requested"
    )
    assert await placed(sessions) == 1
    await first.reconciler.finalize(ref=first.ref)
    status = await second.reconcile(spec(1))
    assert status["unplacedReplicas"] == 0


async def test_quota_changes_are_recorded_with_their_actor(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await set_quota(sessions, gpu_units=2)
    await set_quota(sessions, gpu_units=2)  # the same limits again: no change recorded
    await set_quota(sessions, gpu_units=4)
    await Store(sessions).remove_quota(namespace=NAMESPACE, name="q", actor="operator")
    async with sessions() as session:
        rows = (
            await session.execute(
                select(QuotaHistory.old_hard, QuotaHistory.new_hard, QuotaHistory.actor).order_by(
                    QuotaHistory.changed_at
                )
            )
        ).all()
    changes = [
        ((old or {}).get("gpu_units"), (new or {}).get("gpu_units"), actor)
        for old, new, actor in rows
    ]
    assert changes == [
        (None, 2, "kubectl-patch"),
        (2, 4, "kubectl-patch"),
        (4, None, "operator"),
    ]


async def test_a_stop_that_frees_room_wakes_the_waiting_deployments(
    sessions: async_sessionmaker[AsyncSession], database_url: URL
) -> None:
    await add_node(sessions, "edge-1", cpu=8)
    await set_quota(sessions, replicas=1)
    first, second = Driver(sessions, name="first"), Driver(sessions, name="second")
    await first.reconcile(spec(1))
    await second.reconcile(spec(1))  # waits on the quota
    await agents(sessions)
    async with sessions() as session:
        waiting = await session.scalar(select(Deployment.id).where(Deployment.name == "second"))
    url = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN fog_deployment_changed")
        await first.reconcile(spec(0))  # stopping: still holds the room
        await agents(sessions)  # stopped: the room is free
        # Bounded: a notification is delivered at commit, which is already over; the timeout
        # only ends a wait for one that was never sent.
        woken = any(n.payload == str(waiting) for n in listener.notifies(timeout=10))
    assert woken
    async with sessions() as session:
        reason = await session.scalar(
            text("SELECT status_reason FROM deployments WHERE name = 'second'")
        )
    assert reason == "QuotaExceeded"
