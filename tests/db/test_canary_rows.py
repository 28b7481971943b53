"""Canaries and automatic revert against real PostgreSQL (issue 16 item 5, migration 0015).

The decisions are model/canary.py's (unit-tested in tests/unit/test_canary.py); here the
reconcile stores a promotion and an abort on the revision row, `promote_newest` is what
`fogctl rollout promote` runs, the 0015 trigger wakes the reconcile, and a replica the revert
creates is of the old revision and is assigned the old image although the spec names the new.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, condition, converge, sessions, spec

from controller.db import reports
from controller.db import revisions as db_revisions
from controller.db.revisions import PromoteOutcome
from controller.db.tables import Deployment, DeploymentReplica, DeploymentRevision
from controller.model.simulation import Simulator
from controller.model.states import ReplicaStatus
from controller.sandbox.dbagent import tick

__all__ = ["sessions"]  # the fixture, shared with test_reconciler


def with_strategy(body: dict[str, Any], **strategy: Any) -> dict[str, Any]:
    return {**body, "strategy": strategy}


async def rows_by_image(driver: Driver) -> dict[tuple[str, str], int]:
    """Active replicas counted by (image their revision runs, status)."""
    async with driver.sessions() as session:
        found = await session.execute(
            select(DeploymentRevision.template["image"].astext, DeploymentReplica.status)
            .join(Deployment, Deployment.id == DeploymentReplica.deployment_id)
            .join(
                DeploymentRevision,
                (DeploymentRevision.deployment_id == Deployment.id)
                & (DeploymentRevision.hash == DeploymentReplica.revision),
            )
            .where(
                Deployment.name == driver.ref.name,
                DeploymentReplica.status.in_(
                    [ReplicaStatus.PENDING, ReplicaStatus.STARTING, ReplicaStatus.RUNNING]
                ),
            )
        )
        counted: dict[tuple[str, str], int] = {}
        for image, status in found:
            counted[image, str(status)] = counted.get((image, str(status)), 0) + 1
        return counted


async def promote(sessions: async_sessionmaker[AsyncSession]) -> tuple[PromoteOutcome, int | None]:
    async with sessions() as session:
        return await db_revisions.promote_newest(
            session, namespace="team-a", name="web", actor="fogctl"
        )


async def test_canaries_wait_until_promote_newest_and_the_trigger_wakes_the_reconcile(
    sessions: async_sessionmaker[AsyncSession], database_url: URL
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    canary = {"canary": {"replicas": 1}}
    assert await promote(sessions) == (PromoteOutcome.UNKNOWN, None)
    await converge(driver, with_strategy(spec(3, image="app:1", cpu=0.5), **canary))
    assert await promote(sessions) == (PromoteOutcome.DONE, 1)

    body = with_strategy(spec(3, image="app:2", cpu=0.5), **canary)
    driver.bump()
    status = await converge(driver, body)
    assert condition(status, "Reconciling")["reason"] == "CanaryWaiting"
    assert status["canary"] == {"revision": 2, "replicas": 1, "available": 1}
    assert await rows_by_image(driver) == {("app:1", "running"): 3, ("app:2", "running"): 1}

    listen = database_url.set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(listen, autocommit=True) as connection:
        connection.execute("LISTEN fog_deployment_changed")
        assert await promote(sessions) == (PromoteOutcome.PROMOTED, 2)
        woken = [note.payload for note in connection.notifies(timeout=5, stop_after=1)]
    async with sessions() as session:
        deployment_id = await session.scalar(select(Deployment.id).where(Deployment.name == "web"))
    assert woken == [str(deployment_id)]
    assert await promote(sessions) == (PromoteOutcome.ALREADY, 2)

    status = await converge(driver, body)
    assert condition(status, "Ready")["status"] == "True"
    assert "canary" not in {key for key, value in status.items() if value is not None}
    assert await rows_by_image(driver) == {("app:2", "running"): 3}


async def test_a_failing_canary_is_aborted_and_the_old_revision_refilled_from_its_template(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    reverting = {"canary": {"replicas": 1}, "autoRevert": True}
    await converge(driver, with_strategy(spec(3, image="app:1", cpu=0.5), **reverting))
    body = with_strategy(spec(3, image="bad:1", cpu=0.5), **reverting)
    driver.bump()
    await driver.reconcile(body)
    await tick(sessions, Simulator(start_delay=0, fail_image="bad:*"), ["edge-1"])
    status = await driver.reconcile(body)
    assert (condition(status, "Stalled")["reason"], status["phase"]) == (
        "RolloutAborted",
        "Failed",
    )
    assert "RolloutAborted" in driver.events
    async with sessions() as session:
        listed = await db_revisions.history(session, namespace="team-a", name="web")
    assert listed is not None
    assert [(row.number, row.abort_reason) for row in listed] == [
        (1, None),
        (2, "NewRevisionFailed"),
    ]
    assert await promote(sessions) == (PromoteOutcome.ABORTED, 2)

    # An old replica is lost: its replacement is of revision 1, assigned the old image.
    async with sessions() as session, session.begin():
        victim = await session.scalar(
            select(DeploymentReplica.id)
            .where(DeploymentReplica.status == ReplicaStatus.RUNNING)
            .limit(1)
        )
        await session.execute(
            update(DeploymentReplica)
            .where(DeploymentReplica.id == victim)
            .values(status=ReplicaStatus.FAILED, status_actor="agent:edge-1", status_reason="Lost")
        )
    status = await driver.reconcile(body)
    assert condition(status, "Stalled")["reason"] == "RolloutAborted"
    async with sessions() as session:
        assigned = await reports.assignments(session, nodes=["edge-1"])
    pending = [item for item in assigned if item.status == ReplicaStatus.PENDING]
    assert [item.image for item in pending] == ["app:1"]
    status = await converge(driver, body)
    assert await rows_by_image(driver) == {("app:1", "running"): 3}
    assert status["readyReplicas"] == 3
