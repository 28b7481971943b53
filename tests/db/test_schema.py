"""The seed's eight database tests, plus the triggers that keep capacity and history honest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import rows
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db.queries import active_deployments
from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    DeploymentResource,
    DeploymentStatusHistory,
    Node,
    ReplicaStatusHistory,
    User,
)
from controller.model.states import DeploymentStatus, ReplicaStatus


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        yield session


# 1. Create a deployment with resources.
async def test_create_deployment_with_resources(session: AsyncSession) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner)
    await rows.resources(session, deployment, cpu_cores=1.5)
    await session.commit()

    loaded = await session.scalar(
        select(DeploymentResource).where(DeploymentResource.deployment_id == deployment.id)
    )
    assert loaded is not None
    assert loaded.cpu_cores == 1.5  # fractional cores survive the round trip
    assert deployment.status == DeploymentStatus.PENDING  # the server default
    assert deployment.deleted_at is None


async def test_resources_are_one_to_one(session: AsyncSession) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner)
    await rows.resources(session, deployment)
    with pytest.raises(IntegrityError, match="uq_deployment_resources_deployment_id"):
        await rows.resources(session, deployment)


# 2. Create replicas for a deployment.
async def test_create_replicas(session: AsyncSession) -> None:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    for ordinal in range(3):
        await rows.replica(
            session, deployment, ordinal, node_id=edge.id, container_id=f"c{ordinal}"
        )
    await session.commit()

    statuses = await session.scalars(
        select(DeploymentReplica.status).where(DeploymentReplica.deployment_id == deployment.id)
    )
    assert list(statuses) == [ReplicaStatus.PENDING] * 3


# 3. The active-deployments query honours soft delete.
async def test_active_deployments_query_honours_soft_delete(session: AsyncSession) -> None:
    owner = await rows.user(session)
    other = await rows.user(session, "team-b")
    kept = await rows.deployment(session, owner, "kept")
    gone = await rows.deployment(session, owner, "gone")
    await rows.deployment(session, other, "elsewhere")
    gone.deleted_at = datetime.now(UTC)
    gone.status = DeploymentStatus.DELETED
    await session.commit()

    active = list(await session.scalars(active_deployments(owner.id)))
    assert [d.id for d in active] == [kept.id]


# 4. Status changes are recorded in history.
async def test_status_changes_write_history_rows(session: AsyncSession) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner, status_actor="operator")
    await session.commit()
    for new, reason in (
        (DeploymentStatus.SCHEDULED, "Placed"),
        (DeploymentStatus.RUNNING, "Ready"),
    ):
        deployment.status = new
        deployment.status_reason = reason
        deployment.status_changed_by = owner.id
        await session.commit()
    deployment.target_replicas = 5  # not a status change: no history row
    await session.commit()

    history = list(
        await session.execute(
            select(
                DeploymentStatusHistory.old_status,
                DeploymentStatusHistory.new_status,
                DeploymentStatusHistory.reason,
                DeploymentStatusHistory.changed_by,
            )
            .where(DeploymentStatusHistory.deployment_id == deployment.id)
            .order_by(DeploymentStatusHistory.changed_at)
        )
    )
    assert [tuple(row) for row in history] == [
        (None, DeploymentStatus.PENDING, None, None),
        (DeploymentStatus.PENDING, DeploymentStatus.SCHEDULED, "Placed", owner.id),
        (DeploymentStatus.SCHEDULED, DeploymentStatus.RUNNING, "Ready", owner.id),
    ]


async def test_replica_transitions_write_history_with_actor_and_reason(
    session: AsyncSession,
) -> None:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    replica = await rows.replica(session, deployment, 0, node_id=edge.id, status_reason="ScaledUp")
    await session.commit()
    replica.status = ReplicaStatus.STARTING
    replica.status_actor = "agent:edge-1"
    replica.status_reason = "Pulled"
    await session.commit()

    history = list(
        await session.execute(
            select(
                ReplicaStatusHistory.old_status,
                ReplicaStatusHistory.new_status,
                ReplicaStatusHistory.actor,
                ReplicaStatusHistory.reason,
                ReplicaStatusHistory.node_id,
            )
            .where(ReplicaStatusHistory.replica_id == replica.id)
            .order_by(ReplicaStatusHistory.changed_at)
        )
    )
    assert [tuple(row) for row in history] == [
        (None, ReplicaStatus.PENDING, "test", "ScaledUp", edge.id),
        (ReplicaStatus.PENDING, ReplicaStatus.STARTING, "agent:edge-1", "Pulled", edge.id),
    ]


# 5. Cascades.
async def _count(session: AsyncSession, table: type[object], where: object) -> int:
    return int(await session.scalar(select(func.count()).select_from(table).where(where)) or 0)  # type: ignore[arg-type]


async def test_deleting_a_deployment_cascades_to_replicas_resources_history(
    session: AsyncSession,
) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner)
    await rows.resources(session, deployment)
    await rows.replica(session, deployment, 0)
    await session.commit()
    deployment_id = deployment.id

    await session.execute(delete(Deployment).where(Deployment.id == deployment_id))
    await session.commit()

    for table, column in (
        (DeploymentReplica, DeploymentReplica.deployment_id),
        (DeploymentResource, DeploymentResource.deployment_id),
        (DeploymentStatusHistory, DeploymentStatusHistory.deployment_id),
        (ReplicaStatusHistory, ReplicaStatusHistory.deployment_id),
    ):
        assert await _count(session, table, column == deployment_id) == 0, table


async def test_deleting_a_node_detaches_its_replicas(session: AsyncSession) -> None:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    replica = await rows.replica(session, deployment, 0, node_id=edge.id)
    await session.commit()

    await session.execute(delete(Node).where(Node.id == edge.id))
    await session.commit()
    await session.refresh(replica)
    assert replica.node_id is None


async def test_deleting_a_user_deletes_deployments_but_keeps_history_it_authored(
    session: AsyncSession,
) -> None:
    owner = await rows.user(session)
    auditor = await rows.user(session, "auditors")
    deployment = await rows.deployment(session, owner)
    await session.commit()
    deployment.status = DeploymentStatus.SCHEDULED
    deployment.status_changed_by = auditor.id
    await session.commit()

    await session.execute(delete(User).where(User.id == auditor.id))
    await session.commit()
    changed_by = list(
        await session.scalars(
            select(DeploymentStatusHistory.changed_by).where(
                DeploymentStatusHistory.deployment_id == deployment.id
            )
        )
    )
    assert changed_by == [None, None]  # both rows kept; the author is gone

    await session.execute(delete(User).where(User.id == owner.id))
    await session.commit()
    assert await _count(session, Deployment, Deployment.user_id == owner.id) == 0


# 6. Unique (user, name) among non-deleted rows; the name is reusable after a soft delete.
async def test_name_unique_per_user_among_active_and_reusable_after_soft_delete(
    session: AsyncSession,
) -> None:
    owner = await rows.user(session)
    other = await rows.user(session, "team-b")
    first = await rows.deployment(session, owner, "web")
    await rows.deployment(session, other, "web")  # same name, other tenant: fine
    await session.commit()
    first_id = first.id

    with pytest.raises(IntegrityError, match="uq_deployments_user_id_name_active"):
        async with session.begin_nested():
            await rows.deployment(session, owner, "web")

    await session.execute(
        update(Deployment)
        .where(Deployment.id == first_id)
        .values(deleted_at=func.now(), status=DeploymentStatus.DELETED)
    )
    again = await rows.deployment(session, owner, "web")
    await session.commit()
    assert again.id != first_id


# 7. Resource limits are enforced by the database too.
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("cpu_cores", 0.49),
        ("cpu_cores", 32.01),
        ("memory_mb", 511),
        ("memory_mb", 65537),
        ("gpu_units", -1),
        ("gpu_units", 9),
        ("storage_gb", 0),
        ("storage_gb", 1001),
    ],
)
async def test_resource_limits_refused_by_database(
    session: AsyncSession, column: str, value: float
) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner)
    with pytest.raises(IntegrityError, match=f"ck_deployment_resources_{column}_range"):
        await rows.resources(session, deployment, **{column: value})


async def test_resource_limits_accept_the_bounds(session: AsyncSession) -> None:
    owner = await rows.user(session)
    low = await rows.deployment(session, owner, "low")
    high = await rows.deployment(session, owner, "high")
    await rows.resources(session, low, cpu_cores=0.5, memory_mb=512, gpu_units=0, storage_gb=1)
    await rows.resources(session, high, cpu_cores=32, memory_mb=65536, gpu_units=8, storage_gb=1000)
    await session.commit()
    assert await _count(session, DeploymentResource, DeploymentResource.id.isnot(None)) == 2


# 8. An invalid status value is refused by the database.
async def test_invalid_status_value_refused_by_database(session: AsyncSession) -> None:
    owner = await rows.user(session)
    deployment = await rows.deployment(session, owner)
    await session.commit()
    with pytest.raises(DBAPIError, match="invalid input value for enum deploymentstatus"):
        async with session.begin_nested():
            await session.execute(
                text("UPDATE deployments SET status = 'exploded' WHERE id = :id"),
                {"id": deployment.id},
            )
    with pytest.raises(DBAPIError, match="invalid input value for enum replicastatus"):
        await session.execute(
            text(
                "INSERT INTO deployment_replicas (deployment_id, status, ordinal, revision,"
                " cpu_millicores, memory_mb, gpu_units, storage_gb)"
                " VALUES (:id, 'zombie', 0, 'r1', 500, 512, 0, 1)"
            ),
            {"id": deployment.id},
        )


# Capacity bookkeeping (trigger) and over-commit protection (CHECK constraints).
async def _allocated(session: AsyncSession, node_id: object) -> tuple[int, int, int, int]:
    row = (
        await session.execute(
            select(
                Node.allocated_cpu_millicores,
                Node.allocated_memory_mb,
                Node.allocated_gpu_units,
                Node.allocated_storage_gb,
            ).where(Node.id == node_id)
        )
    ).one()
    return (row[0], row[1], row[2], row[3])


async def test_node_allocation_follows_replicas_that_hold_capacity(session: AsyncSession) -> None:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    unplaced = await rows.replica(session, deployment, 0)  # no node: holds nothing
    placed = await rows.replica(session, deployment, 1, node_id=edge.id)
    await session.commit()
    assert await _allocated(session, edge.id) == (1500, 1024, 0, 10)

    unplaced.node_id = edge.id
    await session.commit()
    assert await _allocated(session, edge.id) == (3000, 2048, 0, 20)

    placed.status = ReplicaStatus.STOPPING  # still running: still holds
    await session.commit()
    assert await _allocated(session, edge.id) == (3000, 2048, 0, 20)

    placed.status = ReplicaStatus.STOPPED
    await session.commit()
    assert await _allocated(session, edge.id) == (1500, 1024, 0, 10)

    await session.execute(delete(DeploymentReplica).where(DeploymentReplica.id == unplaced.id))
    await session.commit()
    assert await _allocated(session, edge.id) == (0, 0, 0, 0)


DIMENSIONS = ("cpu", "memory", "gpu", "storage")


@pytest.mark.parametrize(
    ("dimension", "capacity", "first", "too_much", "rest"),
    [
        ("cpu", {"cpu_cores": 2.0}, {"cpu_millicores": 1500}, 600, 500),
        ("memory", {"memory_mb": 2048}, {"memory_mb": 1024}, 1025, 1024),
        ("gpu", {"gpu_units": 1}, {"gpu_units": 1}, 1, 0),
        ("storage", {"storage_gb": 20}, {"storage_gb": 10}, 11, 10),
    ],
)
async def test_database_refuses_to_overcommit_a_node(
    session: AsyncSession,
    dimension: str,
    capacity: dict[str, float],
    first: dict[str, int],
    too_much: int,
    rest: int,
) -> None:
    owner = await rows.user(session)
    # Plenty of everything else (8 cores, 16 GiB, 100 GB; no GPU unless asked for).
    edge = await rows.node(session, **capacity)
    deployment = await rows.deployment(session, owner)
    await rows.replica(session, deployment, 0, node_id=edge.id, **first)
    await session.commit()
    column = next(iter(first))
    with pytest.raises(IntegrityError, match=f"ck_nodes_{dimension}_not_overcommitted"):
        async with session.begin_nested():
            await rows.replica(session, deployment, 1, node_id=edge.id, **{column: too_much})
    # What is left fills the node exactly, which is allowed.
    await rows.replica(session, deployment, 2, node_id=edge.id, **{column: rest})
    await session.commit()
    held = dict(zip(DIMENSIONS, await _allocated(session, edge.id), strict=True))
    assert held[dimension] == {"cpu": 2000, "memory": 2048, "gpu": 1, "storage": 20}[dimension]


@pytest.mark.parametrize(
    ("column", "shrunk", "constraint"),
    [
        ("cpu_cores", 1.0, "ck_nodes_cpu_not_overcommitted"),
        ("memory_mb", 1000, "ck_nodes_memory_not_overcommitted"),
        ("storage_gb", 5, "ck_nodes_storage_not_overcommitted"),
    ],
)
async def test_capacity_cannot_shrink_below_what_replicas_hold(
    session: AsyncSession, column: str, shrunk: float, constraint: str
) -> None:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    await rows.replica(session, deployment, 0, node_id=edge.id)  # 1.5 cores, 1 GiB, 10 GB
    await session.commit()
    with pytest.raises(IntegrityError, match=constraint):
        await session.execute(update(Node).where(Node.id == edge.id).values({column: shrunk}))
