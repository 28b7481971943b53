"""Status that tells the truth (#12), reconciled against real PostgreSQL with simulated agents.

A crash loop fixed by a new image must not stay Failed, and the capacity message must name the
short resource on every reconcile, not only the first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_node_lifecycle import agents, let_time_pass, run_agents
from test_reconciler import Driver, add_node, condition, spec

from controller.agent.simulate import Simulator
from controller.db import engine as db_engine
from controller.db.store import Store
from controller.db.tables import Deployment
from controller.kube.resource import parse_spec
from controller.model.restarts import RestartPolicy
from controller.model.states import ReplicaStatus
from controller.operator.reconciler import Outcome, Reconciler


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


async def reconcile(driver: Driver, body: dict[str, Any]) -> Outcome:
    """One reconcile with the live status fed back, keeping the whole outcome."""
    outcome = await driver.reconciler.reconcile(
        ref=driver.ref, spec=parse_spec(driver.ref.name, body), live_status=driver.status
    )
    driver.status = outcome.status
    driver.events.extend(event.reason for event in outcome.events)
    return outcome


async def failures(sessions: async_sessionmaker[AsyncSession]) -> int | None:
    async with sessions() as session:
        return await session.scalar(select(Deployment.consecutive_failures))


async def test_a_crash_loop_fixed_by_a_new_image_starts_clean_and_is_ready_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    # An hour between attempts once stalled: an inherited backoff could not go unnoticed.
    policy = RestartPolicy(
        base_delay=timedelta(minutes=20), max_delay=timedelta(hours=1), failure_limit=2
    )
    driver = Driver(sessions)
    driver.reconciler = Reconciler(Store(sessions), restarts=policy)
    crashing = {"edge-1": Simulator(start_delay=0, fail_image="bad:*")}
    bad = spec(2, image="bad:1")
    await reconcile(driver, bad)
    for _ in range(10):
        await run_agents(sessions, crashing)
        outcome = await reconcile(driver, bad)
        if condition(driver.status, "Stalled")["reason"] == "CrashLoopBackOff":
            break
        await let_time_pass(sessions, outcome.requeue_after or 0)
    assert driver.status["phase"] == "Failed"
    assert outcome.requeue_after is not None  # the broken revision waits for its backoff
    assert (await failures(sessions) or 0) >= policy.failure_limit

    driver.bump()
    good = spec(2, image="good:1")
    fixed = await reconcile(driver, good)
    # The new revision's replicas are placed in the same reconcile, nothing waits, and the
    # old verdict is gone at the new generation.
    assert fixed.requeue_after is None
    assert await failures(sessions) == 0
    revision = parse_spec("web", good).revision
    new = [status for status, of in await driver.replicas() if of == revision]
    assert new == [ReplicaStatus.PENDING] * 2
    assert fixed.status["phase"] == "Scheduled"
    assert fixed.status["updatedReplicas"] == 2
    assert condition(fixed.status, "Stalled")["status"] == "False"
    assert condition(fixed.status, "Reconciling")["observedGeneration"] == 2
    # Running one agent round later, with no time passing: Ready.
    await run_agents(sessions, agents("edge-1"))
    ready = await reconcile(driver, good)
    assert (ready.status["phase"], ready.status["ready"]) == ("Running", "2/2")
    assert condition(ready.status, "Ready")["status"] == "True"
