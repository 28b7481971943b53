"""Fog nodes on real Postgres: heartbeats and loss, return, cordon, drain, remove, crashes."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, condition, reconcile_many, spec

from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db import reports
from controller.db.errors import WriteConflictError
from controller.db.store import Store
from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    Node,
    NodeLease,
    ReplicaStatusHistory,
)
from controller.kube.resource import parse_spec
from controller.model.protocol import Report
from controller.model.restarts import RestartPolicy
from controller.model.simulation import Simulator
from controller.model.states import ReplicaStatus
from controller.operator.reconciler import Outcome, Request
from controller.sandbox.dbagent import tick

GRACE = timedelta(seconds=40)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


async def silence(sessions: async_sessionmaker[AsyncSession], node: str, seconds: int) -> None:
    """Make a node's last heartbeat `seconds` old, as if its agent had gone quiet."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(NodeLease)
            .where(NodeLease.node_id == Node.id, Node.name == node)
            .values(renewed_at=func.now() - timedelta(seconds=seconds))
        )


async def mark_lost(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session, session.begin():
        return await db_nodes.mark_lost(session, grace=GRACE)


async def placement(sessions: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """Node name -> statuses of the replicas there."""
    async with sessions() as session:
        rows = await session.execute(
            select(Node.name, DeploymentReplica.status)
            .join(Node, Node.id == DeploymentReplica.node_id)
            .order_by(Node.name)
        )
        found: dict[str, list[str]] = {}
        for name, status in rows:
            found.setdefault(name, []).append(str(status))
        return found


async def run_agents(
    sessions: async_sessionmaker[AsyncSession], simulators: dict[str, Simulator], rounds: int = 1
) -> None:
    for _ in range(rounds):
        for node, simulator in simulators.items():
            await tick(sessions, simulator, [node])


async def converge(
    driver: Driver,
    body: dict[str, Any],
    simulators: dict[str, Simulator],
    rounds: int = 15,
) -> dict[str, Any]:
    status = await driver.reconcile(body)
    for _ in range(rounds):
        await run_agents(driver.sessions, simulators)
        status = await driver.reconcile(body)
        if condition(status, "Ready")["status"] == "True":
            break
    return status


def agents(*names: str) -> dict[str, Simulator]:
    return {name: Simulator(start_delay=0) for name in names}


async def test_silent_node_goes_offline_and_its_replicas_are_replaced(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for name in ("edge-1", "edge-2", "edge-3"):
        await add_node(sessions, name)
    simulators = agents("edge-1", "edge-2", "edge-3")
    driver = Driver(sessions)
    await converge(driver, spec(3), simulators)
    assert await mark_lost(sessions) == []

    await silence(sessions, "edge-2", seconds=41)
    assert await mark_lost(sessions) == ["edge-2"]
    assert await placement(sessions) == {
        "edge-1": ["running"],
        "edge-2": ["failed"],
        "edge-3": ["running"],
    }
    async with sessions() as session:
        node = await session.scalar(select(Node).where(Node.name == "edge-2"))
        assert node is not None
        assert (node.status, node.allocated_cpu_millicores) == ("offline", 0)
        lost = (
            await session.execute(
                select(ReplicaStatusHistory.actor, ReplicaStatusHistory.reason).where(
                    ReplicaStatusHistory.new_status == ReplicaStatus.FAILED
                )
            )
        ).all()
        assert [tuple(row) for row in lost] == [("node-lifecycle", "NodeLost")]
        failures = await session.scalar(select(Deployment.consecutive_failures))
        assert failures == 0  # a lost node is not the replica's fault

    del simulators["edge-2"]  # its agent is silent
    status = await converge(driver, spec(3), simulators)
    assert status["ready"] == "3/3"
    running = await placement(sessions)
    assert sorted(running["edge-1"] + running["edge-3"]) == ["running"] * 3


async def test_heartbeat_renews_a_lease_while_a_placement_holds_the_node(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A placement's lock on the node row neither delays nor skips the heartbeat.

    The placement's candidate read locks node rows FOR NO KEY UPDATE until it commits; the
    heartbeat used to skip such rows, so a node under sustained placement could be declared
    lost. A lock timeout turns any wait into an error instead of a hang.
    """
    await add_node(sessions, "edge-1")
    await silence(sessions, "edge-1", seconds=30)
    async with sessions() as placing, placing.begin():
        await placing.execute(
            select(Node.id).where(Node.name == "edge-1").with_for_update(key_share=True)
        )
        async with sessions() as beating, beating.begin():
            await beating.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert await db_nodes.heartbeat(beating, names=["edge-1"]) == 1
        async with sessions() as reading:
            age = await reading.scalar(select(func.now() - NodeLease.renewed_at))
        assert age is not None
        assert age < timedelta(seconds=5)  # renewed now, not left 30 s old
    assert await mark_lost(sessions) == []


async def test_a_node_taken_offline_is_online_again_at_its_next_heartbeat(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    await silence(sessions, "edge-1", seconds=41)
    assert await mark_lost(sessions) == ["edge-1"]
    async with sessions() as session, session.begin():
        assert await db_nodes.heartbeat(session, names=["edge-1"]) == 1
    async with sessions() as session:
        assert await session.scalar(select(Node.status)) == "online"
    assert await mark_lost(sessions) == []


async def test_node_coming_back_never_runs_a_replica_twice(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    await add_node(sessions, "edge-2")
    simulators = agents("edge-1", "edge-2")
    driver = Driver(sessions)
    await converge(driver, spec(2), simulators)
    returning = simulators.pop("edge-2")
    assert len(returning.started) == 1  # it runs one replica

    await silence(sessions, "edge-2", seconds=60)
    await mark_lost(sessions)
    await converge(driver, spec(2), simulators)

    # The node's agent speaks again: heartbeat, then it learns its replica is not its own,
    # from its complete list only (a tick that reads just the work to do cannot tell).
    await tick(sessions, returning, ["edge-2"], complete=False)
    assert returning.orphans_stopped == []
    await tick(sessions, returning, ["edge-2"])
    assert len(returning.orphans_stopped) == 1
    assert returning.started == {}
    async with sessions() as session:
        node = await session.scalar(select(Node.status).where(Node.name == "edge-2"))
        running = await session.scalar(
            select(func.count()).where(DeploymentReplica.status == ReplicaStatus.RUNNING)
        )
    assert node == "online"
    assert running == 2
    # A stale agent's report for the failed replica is refused by the state machine.
    failed_id = returning.orphans_stopped[0]
    async with sessions() as session, session.begin():
        result = await reports.report(
            session,
            [
                Report(
                    node="edge-2",
                    replica_id=failed_id,
                    status=ReplicaStatus.RUNNING,
                    reason="Started",
                )
            ],
        )
    assert result.accepted == 0
    assert "failed -> running" in result.refused[0][1]


async def test_reports_from_the_wrong_node_are_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    await add_node(sessions, "edge-2", cpu=0.5)
    driver = Driver(sessions)
    await driver.reconcile(spec(1))
    async with sessions() as session, session.begin():
        replica_id = await session.scalar(select(DeploymentReplica.id))
        assert replica_id is not None
        result = await reports.report(
            session,
            [
                Report(
                    node="edge-2", replica_id=replica_id, status=ReplicaStatus.STARTING, reason="x"
                ),
                Report(
                    node="edge-1",
                    replica_id=uuid.uuid4(),
                    status=ReplicaStatus.STARTING,
                    reason="x",
                ),
            ],
        )
    assert result.accepted == 0
    assert [why for _, why in result.refused] == [
        "replica is not on node edge-2",
        "unknown replica",
    ]


async def test_cordon_stops_new_placements_and_uncordon_resumes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    async with sessions() as session, session.begin():
        await db_nodes.cordon(session, name="edge-1")
    driver = Driver(sessions)
    status = await driver.reconcile(spec(2))
    assert status["unplacedReplicas"] == 2
    assert condition(status, "Stalled")["reason"] == "InsufficientCapacity"
    assert "no schedulable node" in condition(status, "Stalled")["message"]
    async with sessions() as session, session.begin():
        await db_nodes.uncordon(session, name="edge-1")
    status = await converge(driver, spec(2), agents("edge-1"))
    assert status["ready"] == "2/2"


async def test_drain_moves_replicas_within_the_rolling_limit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=16)
    simulators = agents("edge-1")
    driver = Driver(sessions)
    await converge(driver, spec(8), simulators)
    await add_node(sessions, "edge-2", cpu=16)
    simulators.update(agents("edge-2"))

    async with sessions() as session, session.begin():
        assert len(await db_nodes.drain(session, name="edge-1")) == 1
    lowest = 8
    status = await driver.reconcile(spec(8))
    for _ in range(20):
        here = await placement(sessions)
        lowest = min(lowest, sum(s == "running" for v in here.values() for s in v))
        await run_agents(sessions, simulators)
        status = await driver.reconcile(spec(8))
        if "running" not in (await placement(sessions)).get("edge-1", []) and (
            condition(status, "Ready")["status"] == "True"
        ):
            break
    assert lowest >= 8 - 2  # max(1, 25% of 8) unavailable at a time
    final = await placement(sessions)
    assert final["edge-2"].count("running") == 8
    assert "running" not in final["edge-1"]


async def test_remove_is_refused_while_busy_unless_forced(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    await converge(driver, spec(1), agents("edge-1"))
    async with sessions() as session, session.begin():
        with pytest.raises(db_nodes.NodeBusyError, match="holds 1 replicas"):
            await db_nodes.remove(session, name="edge-1", force=False)
    async with sessions() as session, session.begin():
        assert await db_nodes.remove(session, name="edge-1", force=True) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Node)) == 0
        statuses = list(await session.scalars(select(DeploymentReplica.status)))
    assert statuses == [ReplicaStatus.FAILED]


async def let_time_pass(sessions: async_sessionmaker[AsyncSession], seconds: float) -> None:
    """Move the stored failure time back, as if `seconds` had passed, instead of sleeping.

    The reconciler compares stored times with the database's own now() (one clock), so time
    passing is the stored time ageing, as `silence` ages a heartbeat.
    """
    async with sessions() as session, session.begin():
        await session.execute(
            update(Deployment).values(
                last_failure_at=Deployment.last_failure_at - timedelta(seconds=seconds)
            )
        )


async def test_crash_backoff_grows_then_stalled_then_recovers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    policy = RestartPolicy(
        base_delay=timedelta(seconds=30),
        max_delay=timedelta(minutes=10),
        failure_limit=3,
    )
    driver = Driver(sessions)
    driver.reconciler = type(driver.reconciler)(Store(sessions), restarts=policy)
    crashing = {"edge-1": Simulator(start_delay=0, fail_image="bad:*")}
    requeues: list[float] = []
    holds: list[tuple[int, float]] = []  # (failures so far, the wait asked for then)
    # The rollout's progress deadline asks for a wake-up too: an hour, so that any wait up to
    # the policy's longest is the backoff's.
    bad = {**spec(1, image="bad:1"), "progressDeadlineSeconds": 3600}
    longest = policy.max_delay.total_seconds()
    status = await driver.reconcile(bad)
    for _ in range(40):
        await run_agents(sessions, crashing)
        outcome = await driver.reconciler.reconcile(
            ref=driver.ref,
            spec=parse_spec("web", bad),
            live_status=driver.status,
        )
        driver.status = status = outcome.status
        if outcome.requeue_after is not None and outcome.requeue_after <= longest:
            requeues.append(outcome.requeue_after)
            async with sessions() as session:
                failures = await session.scalar(select(Deployment.consecutive_failures))
            holds.append((failures or 0, outcome.requeue_after))
            # The work queue's requeue, without the wait.
            await let_time_pass(sessions, outcome.requeue_after)
        if condition(status, "Stalled")["reason"] == "CrashLoopBackOff":
            break
    assert condition(status, "Stalled")["status"] == "True"
    assert status["phase"] == "Failed"
    assert len(requeues) >= 2
    assert requeues[-1] > requeues[0]  # the wait grows
    # Each replacement waited 30 s, then 60 s ... after its failure, measured on the
    # database's clock (the test's own steps take real milliseconds, hence the tolerance).
    assert [failures for failures, _ in holds] == [1, 2, 3]
    for failures, wait in holds:
        assert wait == pytest.approx(30 * 2 ** (failures - 1), abs=5), holds
    # A fixed image runs: Ready again, the count starts over.
    driver.bump()
    healthy = agents("edge-1")
    status = await driver.reconcile(spec(1, image="good:1"))
    for _ in range(40):
        await run_agents(sessions, healthy)
        outcome = await driver.reconciler.reconcile(
            ref=driver.ref,
            spec=parse_spec("web", spec(1, image="good:1")),
            live_status=driver.status,
        )
        driver.status = status = outcome.status
        if condition(status, "Ready")["status"] == "True":
            break
        await let_time_pass(sessions, outcome.requeue_after or 0)
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Stalled")["status"] == "False"
    async with sessions() as session:
        assert await session.scalar(select(Deployment.consecutive_failures)) == 0


# Batched: the drivers reconcile in batches of four (Reconciler.reconcile_batch, then
# reconcile_alone, issue 15 item 1), two batches and the agents racing; lone: each driver
# on its own.
@pytest.mark.parametrize("batched", [False, True], ids=["lone", "batched"])
async def test_capacity_is_never_overcommitted_with_concurrent_agents_and_reconciles(
    sessions: async_sessionmaker[AsyncSession], batched: bool
) -> None:
    names = [f"edge-{i}" for i in range(6)]
    for name in names:
        await add_node(sessions, name, cpu=4, memory=4096)
    simulators = {name: Simulator(start_delay=0) for name in names}
    drivers = [Driver(sessions, name=f"app-{i}") for i in range(8)]
    rng = random.Random(7)  # fixed seed: the interleaving varies, the workload does not
    bodies = [spec(rng.randint(1, 6), cpu=rng.choice([0.5, 1.0, 1.5])) for _ in drivers]
    rounds = 15
    gave_up: list[str] = []  # reconciles that hit 5 conflicts in a row (the queue retries)
    excess: list[tuple[str, int, int]] = []  # more active replicas than the spec asked for

    async def agent_loop(name: str) -> None:
        for _ in range(rounds):
            await tick(sessions, simulators[name], [name])
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:  # a failure cancels the rest: nothing leaks
        for name in names:
            group.create_task(agent_loop(name))
        steps = [[rng.choice([-1, 0, 1]) for _ in range(rounds)] for _ in drivers]
        if batched:
            for first in range(0, len(drivers), 4):
                group.create_task(
                    _batch_loop(
                        drivers[first : first + 4],
                        bodies[first : first + 4],
                        steps[first : first + 4],
                        gave_up,
                        excess,
                    )
                )
        else:
            for driver, body, moves in zip(drivers, bodies, steps, strict=True):
                group.create_task(_operator_loop(driver, body, moves, gave_up, excess))
    # Conflicts are retried inside the store; giving up must stay the exception.
    assert len(gave_up) <= len(drivers) * rounds // 10, gave_up
    assert excess == [], "replicas created twice over"
    async with sessions() as session:
        started_in_race = await session.scalar(
            select(func.count()).where(ReplicaStatusHistory.new_status == ReplicaStatus.RUNNING)
        )
    assert started_in_race >= len(drivers), "the race placed and started (almost) nothing"

    # Back to the first replica counts (18.5 of the 24 cores): every deployment converges.
    statuses = await _settle(drivers, bodies, simulators)
    assert [status["ready"] for status in statuses] == [
        f"{body['replicas']}/{body['replicas']}" for body in bodies
    ]
    await _assert_nothing_placed_twice(sessions, sum(body["replicas"] for body in bodies))
    await _assert_allocation_matches_replicas(sessions)


async def _operator_loop(
    driver: Driver,
    body: dict[str, Any],
    steps: list[int],
    gave_up: list[str],
    excess: list[tuple[str, int, int]],
) -> None:
    """Reconcile once per step, the replica count moved by the step each time."""
    for step in steps:
        body = {**body, "replicas": max(0, body["replicas"] + step)}
        try:
            await driver.reconcile(body)
        except WriteConflictError:  # kopf would retry it a second later
            gave_up.append(driver.ref.name)
        else:  # agents only move replicas on, so the count stays as the reconcile left it
            active = await driver.active()
            if active > body["replicas"]:
                excess.append((driver.ref.name, active, body["replicas"]))
        await asyncio.sleep(0)


async def _batch_loop(
    drivers: list[Driver],
    bodies: list[dict[str, Any]],
    steps: list[list[int]],
    gave_up: list[str],
    excess: list[tuple[str, int, int]],
) -> None:
    """`_operator_loop` for several drivers at once: one batch per step."""
    reconciler = drivers[0].reconciler
    for moves in zip(*steps, strict=True):
        bodies = [
            {**body, "replicas": max(0, body["replicas"] + move)}
            for body, move in zip(bodies, moves, strict=True)
        ]
        results = await reconcile_many(
            reconciler,
            [
                Request(driver.ref, parse_spec(driver.ref.name, body), driver.status)
                for driver, body in zip(drivers, bodies, strict=True)
            ],
        )
        for driver, body, result in zip(drivers, bodies, results, strict=True):
            if isinstance(result, WriteConflictError):  # kopf would retry it a second later
                gave_up.append(driver.ref.name)
                continue
            assert isinstance(result, Outcome), result
            driver.status = result.status
            active = await driver.active()
            if active > body["replicas"]:
                excess.append((driver.ref.name, active, body["replicas"]))
        await asyncio.sleep(0)


async def _settle(
    drivers: list[Driver], bodies: list[dict[str, Any]], simulators: dict[str, Simulator]
) -> list[dict[str, Any]]:
    """Reconcile every deployment, then let every agent act, until all are Ready (10 rounds)."""
    for _ in range(10):
        statuses = [
            await driver.reconcile(body) for driver, body in zip(drivers, bodies, strict=True)
        ]
        if all(condition(status, "Ready")["status"] == "True" for status in statuses):
            break
        await run_agents(drivers[0].sessions, simulators)
    return statuses


async def _assert_nothing_placed_twice(
    sessions: async_sessionmaker[AsyncSession], desired: int
) -> None:
    """No replica started twice or on two nodes; exactly the desired replicas run."""
    async with sessions() as session:
        per_replica = (
            await session.execute(
                select(
                    ReplicaStatusHistory.replica_id,
                    func.count().filter(ReplicaStatusHistory.new_status == ReplicaStatus.STARTING),
                    func.count(func.distinct(ReplicaStatusHistory.node_id)),
                ).group_by(ReplicaStatusHistory.replica_id)
            )
        ).all()
        running = await session.scalar(
            select(func.count()).where(DeploymentReplica.status == ReplicaStatus.RUNNING)
        )
    assert per_replica, "no replica history at all"
    assert all(starts <= 1 for _, starts, _ in per_replica), "a replica started twice"
    assert all(nodes <= 1 for _, _, nodes in per_replica), "a replica moved between nodes"
    assert running == desired


async def _assert_allocation_matches_replicas(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT n.name, n.allocated_cpu_millicores, round(n.cpu_cores * 1000),"
                " n.allocated_memory_mb, n.memory_mb,"
                " coalesce(sum(r.cpu_millicores) FILTER (WHERE r.status IN"
                "   ('pending','starting','running','stopping')), 0),"
                " coalesce(sum(r.memory_mb) FILTER (WHERE r.status IN"
                "   ('pending','starting','running','stopping')), 0)"
                " FROM nodes n LEFT JOIN deployment_replicas r ON r.node_id = n.id"
                " GROUP BY n.id ORDER BY n.name"
            )
        )
        for name, cpu, cpu_cap, mem, mem_cap, cpu_sum, mem_sum in rows:
            assert cpu <= cpu_cap, name
            assert mem <= mem_cap, name
            assert (cpu, mem) == (cpu_sum, mem_sum), f"{name}: totals drifted from replicas"
