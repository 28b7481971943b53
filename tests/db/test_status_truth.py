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

from controller.db import deployments
from controller.db import engine as db_engine
from controller.db.store import Store
from controller.db.tables import Deployment
from controller.kube.resource import parse_spec
from controller.model.placement import Strategy
from controller.model.restarts import RestartPolicy
from controller.model.simulation import Simulator
from controller.model.states import ReplicaStatus
from controller.model.strategy import DEFAULT_PROGRESS_DEADLINE_SECONDS
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
        base_delay=timedelta(minutes=20), max_delay=timedelta(hours=1), failure_limit=3
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
    # Creating the two replicas posts nothing (a new object); every later one replaced a
    # failed replica, and none of those reads as scaling.
    assert driver.events.count("ScaledUp") == 0
    assert driver.events.count("Replaced") >= 1

    driver.bump()
    good = spec(2, image="good:1")
    fixed = await reconcile(driver, good)
    # The new revision's replicas are placed in the same reconcile, nothing waits (the only
    # wake-up is the new rollout's progress deadline, not the old backoff's 20 minutes), and
    # the old verdict is gone at the new generation.
    assert fixed.requeue_after == DEFAULT_PROGRESS_DEADLINE_SECONDS
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


async def test_the_capacity_message_names_what_the_closest_node_lacks_on_every_reconcile(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # 1 core per replica: edge-1 takes two, edge-2 one, and then has half a core left.
    await add_node(sessions, "edge-1", cpu=2)
    await add_node(sessions, "edge-2", cpu=1.5)
    driver = Driver(sessions)
    body = spec(4, cpu=1.0)
    messages = []
    for _ in range(4):
        await reconcile(driver, body)
        stalled = condition(driver.status, "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "InsufficientCapacity")
        messages.append(stalled["message"])
        await run_agents(sessions, agents("edge-1", "edge-2"))
    assert set(messages) == {
        "need 1.0 CPU, 512 MiB memory, 0 GPU, 1 GB storage per replica; 3 of 4 replicas placed;"
        " closest node edge-2 is short of 0.5 CPU"
    }
    assert driver.status["unplacedReplicas"] == 1


async def test_the_capacity_message_blames_the_selector_only_when_no_node_matches(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", labels={"zone": "a"})
    driver = Driver(sessions)
    body = {**spec(1), "nodeSelector": {"zone": "b"}}
    for _ in range(2):
        await reconcile(driver, body)
        assert condition(driver.status, "Stalled")["message"].endswith(
            "0 of 1 replicas placed; no schedulable node matches the node selector"
        )


async def test_full_nodes_come_after_those_with_room_closest_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "roomy", cpu=4)
    await add_node(sessions, "half-core", cpu=0.5)  # half of the request's core
    await add_node(sessions, "little-memory", cpu=4, memory=256)  # a quarter of its memory
    await add_node(sessions, "tiny", cpu=0.25)
    request = parse_spec("web", spec(1, cpu=1.0)).request

    async def read(*, closest: bool, limit: int = 10) -> list[str]:
        async with sessions() as session:
            found = await deployments.candidate_nodes(
                session,
                node_selector={},
                request=request,
                strategy=Strategy.SPREAD,
                limit=limit,
                lock=False,
                closest=closest,
            )
        return [node.name for node in found]

    assert await read(closest=False) == ["roomy"]
    assert await read(closest=True) == ["roomy", "half-core", "little-memory", "tiny"]
    assert await read(closest=True, limit=2) == ["roomy", "half-core"]


async def test_only_a_reconcile_with_nothing_to_do_or_wait_for_is_settled(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """`settled` lets the resync pass an object by: never while it waits for room or agents."""
    driver = Driver(sessions)
    body = spec(2)
    starved = await reconcile(driver, body)  # no node yet
    assert starved.unplaced == 2
    assert not starved.settled
    await add_node(sessions, "edge-1")
    placed = await reconcile(driver, body)
    assert placed.status["phase"] == "Scheduled"
    assert not placed.settled  # it placed them; the agents have yet to run them
    await run_agents(sessions, agents("edge-1"))
    ready = await reconcile(driver, body)
    assert ready.status["ready"] == "2/2"
    assert ready.settled
    assert (await reconcile(driver, body)).settled
    driver.bump()
    scaled = await reconcile(driver, spec(3))
    assert not scaled.settled
