"""The reconciler against real PostgreSQL: observe -> plan -> apply, with the simulated agent.

These exercise the whole database path of a reconcile without the API server; the end-to-end
tests in tests/e2e run the same through kopf and kubectl.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import rows
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import deployments
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db.history import deployment_history
from controller.db.store import Store
from controller.db.tables import Deployment, DeploymentReplica, Node
from controller.kube.resource import ObjectRef, parse_spec
from controller.model.placement import Strategy
from controller.model.resources import Resources
from controller.model.simulation import Simulator
from controller.model.states import DeploymentStatus, ReplicaStatus
from controller.operator.reconciler import Outcome, Reconciler, Request
from controller.sandbox.dbagent import tick


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


async def add_node(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    cpu: float = 4,
    memory: int = 8192,
    *,
    labels: dict[str, str] | None = None,
) -> None:
    async with sessions() as session, session.begin():
        await db_nodes.register(
            session,
            name=name,
            capacity=Resources.from_cores(
                cpu_cores=cpu, memory_mb=memory, gpu_units=0, storage_gb=100
            ),
            labels={"zone": "a"} if labels is None else labels,
        )


def spec(replicas: int = 3, image: str = "nginx:1.27", cpu: float = 1.0) -> dict[str, Any]:
    return {
        "image": image,
        "replicas": replicas,
        "resources": {"cpuCores": cpu, "memoryMB": 512, "storageGB": 1},
    }


class Driver:
    """Reconciles one object the way kopf would: with its live status fed back in."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], name: str = "web", ns: str = "team-a"
    ) -> None:
        self.reconciler = Reconciler(Store(sessions))
        self.sessions = sessions
        self.ref = ObjectRef(namespace=ns, name=name, uid=str(uuid.uuid4()), generation=1)
        self.status: dict[str, Any] = {}
        self.events: list[str] = []

    async def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        outcome = await self.reconciler.reconcile(
            ref=self.ref, spec=parse_spec(self.ref.name, body), live_status=self.status
        )
        self.status = outcome.status
        self.events.extend(event.reason for event in outcome.events)
        return self.status

    def bump(self) -> None:
        self.ref = ObjectRef(
            namespace=self.ref.namespace,
            name=self.ref.name,
            uid=self.ref.uid,
            generation=self.ref.generation + 1,
        )

    async def replicas(self) -> list[tuple[ReplicaStatus, str]]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(DeploymentReplica.status, DeploymentReplica.revision)
                .join(Deployment)
                .where(Deployment.name == self.ref.name, Deployment.deleted_at.is_(None))
                .order_by(DeploymentReplica.ordinal)
            )
            return [(row.status, row.revision) for row in rows]

    async def active(self) -> int:
        return sum(
            1
            for status, _ in await self.replicas()
            if status in (ReplicaStatus.PENDING, ReplicaStatus.STARTING, ReplicaStatus.RUNNING)
        )


async def reconcile_many(
    reconciler: Reconciler, requests: Sequence[Request]
) -> list[Outcome | Exception]:
    """What the operator's worker does with a batch: `reconcile_batch`, then each key it left
    alone (`reconcile_alone`); every key gets its outcome or its error."""
    batched = await reconciler.reconcile_batch(requests)
    return [
        await reconciler.reconcile_alone(request) if result is None else result
        for request, result in zip(requests, batched, strict=True)
    ]


async def agents(sessions: async_sessionmaker[AsyncSession], rounds: int = 1) -> None:
    simulator = Simulator(start_delay=0)
    async with sessions() as session:
        names = [node.name for node in await db_nodes.list_nodes(session)]
    for _ in range(rounds):
        await tick(sessions, simulator, names)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


async def converge(driver: Driver, body: dict[str, Any], rounds: int = 10) -> dict[str, Any]:
    """Reconcile and let agents act until the status stops changing."""
    status = await driver.reconcile(body)
    for _ in range(rounds):
        await agents(driver.sessions)
        status = await driver.reconcile(body)
        if condition(status, "Ready")["status"] == "True":
            break
    return status


async def test_apply_places_replicas_then_ready_when_running(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for name in ("edge-1", "edge-2", "edge-3"):
        await add_node(sessions, name)
    driver = Driver(sessions)
    first = await driver.reconcile(spec(3))
    assert first["phase"] == "Scheduled"
    assert first["observedGeneration"] == 1
    assert condition(first, "Ready")["status"] == "False"
    assert [s for s, _ in await driver.replicas()] == [ReplicaStatus.PENDING] * 3

    await agents(sessions)
    second = await driver.reconcile(spec(3))
    assert second["phase"] == "Running"
    assert second["ready"] == "3/3"
    [revision] = {revision for _, revision in await driver.replicas()}  # as stored
    assert condition(second, "Ready") | {"lastTransitionTime": "x"} == {
        "type": "Ready",
        "status": "True",
        "reason": "AllReplicasReady",
        "message": f"3 of 3 replicas running revision {revision[:12]}",  # as status.revision
        "observedGeneration": 1,
        "lastTransitionTime": "x",
    }
    assert driver.events == ["Ready"]  # no event repeats the creation (issue 15)

    # Spread: one replica per node.
    async with sessions() as session:
        per_node = await session.execute(
            select(Node.name, Node.allocated_cpu_millicores).order_by(Node.name)
        )
        assert [tuple(row) for row in per_node] == [
            ("edge-1", 1000),
            ("edge-2", 1000),
            ("edge-3", 1000),
        ]

    # Level-triggered and idempotent: nothing more to do, no event, same status.
    again = await driver.reconcile(spec(3))
    assert again == second
    assert driver.events == ["Ready"]


async def test_scale_up_down_and_to_zero(sessions: async_sessionmaker[AsyncSession]) -> None:
    await add_node(sessions, "edge-1", cpu=16)
    driver = Driver(sessions)
    await converge(driver, spec(2))
    driver.bump()
    up = await converge(driver, spec(5))
    assert up["ready"] == "5/5"
    driver.bump()
    down = await converge(driver, spec(1))
    assert down["ready"] == "1/1"
    assert await driver.active() == 1
    driver.bump()
    stopped = await converge(driver, spec(0))
    assert stopped["phase"] == "Stopped"
    assert await driver.active() == 0
    assert "ScaledDown" in driver.events


async def test_image_change_rolls_within_the_unavailability_budget(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=16)
    driver = Driver(sessions)
    old = await converge(driver, spec(8, image="app:1"))
    driver.bump()
    body = spec(8, image="app:2")
    seen_running: list[int] = []
    status = await driver.reconcile(body)
    for _ in range(20):
        rows = await driver.replicas()
        seen_running.append(sum(1 for s, _ in rows if s is ReplicaStatus.RUNNING))
        await agents(sessions)
        status = await driver.reconcile(body)
        if condition(status, "Ready")["status"] == "True":
            break
    assert status["revision"] != old["revision"]
    assert status["updatedReplicas"] == 8
    assert min(seen_running) >= 8 - 2  # 25% of 8 unavailable at most
    assert "RollingUpdate" in driver.events


async def test_insufficient_capacity_then_recovery_when_a_node_appears(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=2)
    driver = Driver(sessions)
    short = await converge(driver, spec(3), rounds=2)
    stalled = condition(short, "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "InsufficientCapacity"
    assert "2 of 3" in stalled["message"]
    assert short["unplacedReplicas"] == 1
    assert "InsufficientCapacity" in driver.events

    await add_node(sessions, "edge-2", cpu=2)
    recovered = await converge(driver, spec(3))
    assert recovered["ready"] == "3/3"
    assert condition(recovered, "Stalled")["status"] == "False"


async def test_two_deployments_racing_for_one_node_never_overcommit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=4)
    drivers = [Driver(sessions, name=f"d{i}") for i in range(4)]
    async with asyncio.TaskGroup() as group:  # a failure cancels the rest: nothing leaks
        for driver in drivers:
            group.create_task(driver.reconcile(spec(3)))
    async with sessions() as session:
        allocated = await session.scalar(select(Node.allocated_cpu_millicores))
        placed = await session.scalar(
            select(func.count()).where(DeploymentReplica.node_id.isnot(None))
        )
    assert allocated == 4000
    assert placed == 4


async def test_delete_soft_deletes_with_history_and_the_name_is_reusable(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    await converge(driver, spec(2))
    await driver.reconciler.finalize(ref=driver.ref)
    async with sessions() as session:
        row = (await session.execute(select(Deployment.status, Deployment.deleted_at))).one()
        assert row.status == DeploymentStatus.DELETED
        assert row.deleted_at is not None
        history = await deployment_history(session, namespace="team-a", name="web")
    replica_steps = [(e.old_status, e.new_status) for e in history if e.replica]
    assert replica_steps.count((ReplicaStatus.RUNNING, ReplicaStatus.STOPPING)) == 2
    assert [(e.old_status, e.new_status) for e in history if e.replica is None][-1] == (
        DeploymentStatus.RUNNING,
        DeploymentStatus.DELETED,
    )

    again = Driver(sessions)
    recreated = await converge(again, spec(1))
    assert recreated["ready"] == "1/1"
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Deployment)) == 2


async def test_history_has_one_row_per_transition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    await converge(driver, spec(1))
    async with sessions() as session:
        history = await deployment_history(session, namespace="team-a", name="web")
    assert [(e.replica, e.old_status, e.new_status, e.actor) for e in history] == [
        (None, None, DeploymentStatus.PENDING, "operator"),
        ("web-0", None, ReplicaStatus.PENDING, "operator"),
        (None, DeploymentStatus.PENDING, DeploymentStatus.SCHEDULED, "operator"),
        ("web-0", ReplicaStatus.PENDING, ReplicaStatus.STARTING, "agent:edge-1"),
        ("web-0", ReplicaStatus.STARTING, ReplicaStatus.RUNNING, "agent:edge-1"),
        (None, DeploymentStatus.SCHEDULED, DeploymentStatus.RUNNING, "operator"),
    ]


async def test_scale_up_from_zero_goes_through_pending(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    stopped = await converge(driver, spec(0))
    assert (stopped["phase"], stopped["ready"]) == ("Stopped", "0/0")
    assert await driver.replicas() == []
    driver.bump()
    first = await driver.reconcile(spec(2))
    assert first["phase"] == "Scheduled"
    assert [s for s, _ in await driver.replicas()] == [ReplicaStatus.PENDING] * 2
    up = await converge(driver, spec(2))
    assert (up["phase"], up["ready"], up["observedGeneration"]) == ("Running", "2/2", 2)
    async with sessions() as session:
        history = await deployment_history(session, namespace="team-a", name="web")
    pending, scheduled = DeploymentStatus.PENDING, DeploymentStatus.SCHEDULED
    running, stopped = DeploymentStatus.RUNNING, DeploymentStatus.STOPPED
    assert [(e.old_status, e.new_status) for e in history if e.replica is None] == [
        (None, pending),
        (pending, stopped),
        (stopped, pending),  # stopped may only go to pending (or deleted)
        (pending, scheduled),
        (scheduled, running),
    ]
    assert driver.events.count("ScaledUp") == 1


HALF_CORE = Resources(cpu_millis=500, memory_mb=512, gpu_units=0, storage_gb=1)


async def _candidates(
    sessions: async_sessionmaker[AsyncSession],
    strategy: Strategy,
    selector: dict[str, str],
    request: Resources = HALF_CORE,
) -> list[str]:
    async with sessions() as session:
        found = await deployments.candidate_nodes(
            session,
            node_selector=selector,
            request=request,
            strategy=strategy,
            limit=10,
            lock=False,
        )
    return [node.name for node in found]


async def test_candidate_nodes_carry_the_selector_and_follow_the_strategy(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Four cores and 8 GiB each; "half" and "most" hold 50% and 75% of both.
    await add_node(sessions, "empty", labels={"zone": "a"})
    await add_node(sessions, "half", labels={"zone": "a", "disk": "ssd"})
    await add_node(sessions, "most", labels={"zone": "a", "disk": "ssd"})
    await add_node(sessions, "other-zone", labels={"zone": "b", "disk": "ssd"})
    await add_node(sessions, "unlabelled", labels={})
    async with sessions() as session, session.begin():
        owner = await rows.user(session)
        filler = await rows.deployment(session, owner, "filler")
        ids = {n.name: n.id for n in await db_nodes.list_nodes(session)}
        await rows.replica(
            session, filler, 0, ids["half"], cpu_millicores=2000, memory_mb=4096, storage_gb=1
        )
        await rows.replica(
            session, filler, 1, ids["most"], cpu_millicores=3000, memory_mb=6144, storage_gb=1
        )
    zone_a = {"zone": "a"}
    assert await _candidates(sessions, Strategy.SPREAD, zone_a) == ["empty", "half", "most"]
    assert await _candidates(sessions, Strategy.BIN_PACK, zone_a) == ["most", "half", "empty"]
    ssd_a = {"zone": "a", "disk": "ssd"}  # every label must match
    assert await _candidates(sessions, Strategy.BIN_PACK, ssd_a) == ["most", "half"]
    assert await _candidates(sessions, Strategy.SPREAD, {"zone": "c"}) == []
    everything = await _candidates(sessions, Strategy.BIN_PACK, {})
    assert everything[:2] == ["most", "half"]
    assert sorted(everything[2:]) == ["empty", "other-zone", "unlabelled"]
    # A node without room for one more replica is not a candidate: "most" has 1 core left.
    big = Resources(cpu_millis=1500, memory_mb=512, gpu_units=0, storage_gb=1)
    assert await _candidates(sessions, Strategy.BIN_PACK, zone_a, big) == ["half", "empty"]
    roomy = Resources(cpu_millis=500, memory_mb=2049, gpu_units=0, storage_gb=1)  # 2048 left
    assert await _candidates(sessions, Strategy.BIN_PACK, zone_a, roomy) == ["half", "empty"]
