"""Fog nodes on real Postgres: heartbeats and loss, return, cordon, drain, remove, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, condition, spec

from controller.agent.simulate import Simulator, tick
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db import reports
from controller.db.errors import WriteConflictError
from controller.db.store import Store
from controller.db.tables import Deployment, DeploymentReplica, Node, ReplicaStatusHistory
from controller.kube.resource import parse_spec
from controller.model.restarts import RestartPolicy
from controller.model.states import ReplicaStatus

GRACE = timedelta(seconds=40)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


async def silence(sessions: async_sessionmaker[AsyncSession], node: str, seconds: int) -> None:
    """Make a node's last heartbeat `seconds` old, as if its agent had gone quiet."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Node)
            .where(Node.name == node)
            .values(last_heartbeat_at=func.now() - timedelta(seconds=seconds))
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
                reports.Report(
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
                reports.Report(
                    node="edge-2", replica_id=replica_id, status=ReplicaStatus.STARTING, reason="x"
                ),
                reports.Report(
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


async def test_crash_backoff_grows_then_stalled_then_recovers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    policy = RestartPolicy(
        base_delay=timedelta(milliseconds=200),
        max_delay=timedelta(seconds=5),
        failure_limit=3,
    )
    driver = Driver(sessions)
    driver.reconciler = type(driver.reconciler)(Store(sessions), restarts=policy)
    crashing = {"edge-1": Simulator(start_delay=0, fail_image="bad:*")}
    holds: list[float] = []
    status = await driver.reconcile(spec(1, image="bad:1"))
    for _ in range(40):
        await run_agents(sessions, crashing)
        outcome = await driver.reconciler.reconcile(
            ref=driver.ref,
            spec=parse_spec("web", spec(1, image="bad:1")),
            live_status=driver.status,
        )
        driver.status = status = outcome.status
        if outcome.requeue_after is not None:
            holds.append(outcome.requeue_after)
            await asyncio.sleep(outcome.requeue_after)
        if condition(status, "Stalled")["reason"] == "CrashLoopBackOff":
            break
    assert condition(status, "Stalled")["status"] == "True"
    assert status["phase"] == "Failed"
    assert len(holds) >= 2
    assert holds[-1] > holds[0]  # the wait grows
    # A fixed image runs: Ready again, the count starts over.
    driver.bump()
    healthy = agents("edge-1")
    status = await driver.reconcile(spec(1, image="good:1"))
    for _ in range(40):
        await run_agents(sessions, healthy)
        status = await driver.reconcile(spec(1, image="good:1"))
        if condition(status, "Ready")["status"] == "True":
            break
        await asyncio.sleep(0.2)
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Stalled")["status"] == "False"
    async with sessions() as session:
        assert await session.scalar(select(Deployment.consecutive_failures)) == 0


async def test_capacity_is_never_overcommitted_with_concurrent_agents_and_reconciles(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    names = [f"edge-{i}" for i in range(6)]
    for name in names:
        await add_node(sessions, name, cpu=4, memory=4096)
    simulators = {name: Simulator(start_delay=0) for name in names}
    drivers = [Driver(sessions, name=f"app-{i}") for i in range(8)]
    rng = random.Random(7)  # fixed seed: the interleaving varies, the workload does not
    bodies = [spec(rng.randint(1, 6), cpu=rng.choice([0.5, 1.0, 1.5])) for _ in drivers]

    async def agent_loop(name: str) -> None:
        for _ in range(15):
            await tick(sessions, simulators[name], [name])
            await asyncio.sleep(0)

    async def operator_loop(driver: Driver, body: dict[str, Any]) -> None:
        for _ in range(15):
            body = {**body, "replicas": max(0, body["replicas"] + rng.choice([-1, 0, 1]))}
            with contextlib.suppress(WriteConflictError):  # kopf would retry it a second later
                await driver.reconcile(body)
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:  # a failure cancels the rest: nothing leaks
        for name in names:
            group.create_task(agent_loop(name))
        for driver, body in zip(drivers, bodies, strict=True):
            group.create_task(operator_loop(driver, body))
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
