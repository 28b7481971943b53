"""Measured usage in PostgreSQL: agents' samples in, `fogctl top` and history summaries out.

A batch of samples is checked whole (every sample is of a running replica on the node that
sent it; nothing is written otherwise) and written with four statements whatever its size:
the latest sample per replica (`replica_usage`, an upsert) and the hour's rollups per
deployment and per node (upserts that add counts and sums and keep the maxima, as
`controller.model.usage.Rollup.merge` does). Samples wake no reconcile: `.status.usage` is
refreshed by the reconciles that happen anyway (docs/design/capacity-and-history.md, "Usage",
says why).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Insert, Integer, Select, and_, any_, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.queries import array_slot, core, unnested_slots, unnested_values
from controller.db.reports import refusals
from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    DeploymentUsageHourly,
    Node,
    NodeUsageHourly,
    ReplicaUsage,
    User,
)
from controller.model.protocol import K8S_NAME_MAX, ReportResult, UsageSample
from controller.model.states import ReplicaStatus
from controller.model.usage import Rollup, Sampled, Usage, fold


@dataclass(frozen=True, slots=True)
class _Replica:
    deployment_id: uuid.UUID
    node_id: uuid.UUID | None
    node: str | None
    status: ReplicaStatus
    node_capacity: Usage | None


def _why_refused(sample: UsageSample, replica: _Replica | None) -> str | None:
    """Why a sample cannot be recorded, or None."""
    if replica is None:
        return "unknown replica"
    if replica.node != sample.node:
        return f"replica is not on node {str(sample.node)[:K8S_NAME_MAX]}"
    if replica.status is not ReplicaStatus.RUNNING:
        return f"replica is {replica.status}, not running: only running replicas have usage"
    capacity = replica.node_capacity
    if capacity is not None and (
        sample.usage.cpu_millis > capacity.cpu_millis or sample.usage.memory_mb > capacity.memory_mb
    ):
        return (
            f"usage ({sample.usage.cpu_cores:g} cores, {sample.usage.memory_mb} MB) is more "
            f"than the node has ({capacity.cpu_cores:g} cores, {capacity.memory_mb} MB)"
        )
    return None


async def record(session: AsyncSession, samples: Sequence[UsageSample]) -> ReportResult:
    """Write the batch if every sample may be recorded; else refuse the bad ones, write nothing.

    The caller's transaction rolls back on a refusal (the agent API raises on one), so
    `accepted` is the whole batch or 0.
    """
    if not samples:
        return ReportResult(accepted=0)
    ids = sorted({sample.replica_id for sample in samples})
    rows = (await session.execute(_SAMPLED, {"sampled_ids": ids})).all()
    replicas = {
        replica_id: _Replica(
            deployment_id=deployment_id,
            node_id=node_id,
            node=node,
            status=status,
            node_capacity=None
            if node is None
            else Usage.from_cores(cpu_cores=cpu_cores, memory_mb=memory_mb),
        )
        for replica_id, deployment_id, node_id, status, node, cpu_cores, memory_mb in rows
    }
    refused = refusals(
        samples, lambda sample: _why_refused(sample, replicas.get(sample.replica_id)), noun="sample"
    )
    if refused:
        return ReportResult(accepted=0, refused=refused)
    await _write_latest(session, samples, replicas)
    located = [(replicas[s.replica_id], s.usage) for s in samples]
    await _upsert_rollups(
        session, _DEPLOYMENT_ROLLUPS, fold((r.deployment_id, u) for r, u in located)
    )
    await _upsert_rollups(
        session, _NODE_ROLLUPS, fold((r.node_id, u) for r, u in located if r.node_id)
    )
    return ReportResult(accepted=len(samples))


async def _write_latest(
    session: AsyncSession, samples: Sequence[UsageSample], replicas: dict[uuid.UUID, _Replica]
) -> None:
    """Upsert each replica's latest sample."""
    ordered = sorted(samples, key=lambda sample: sample.replica_id)  # lock rows in one order
    columns: dict[str, list[Any]] = {
        "replica_id": [s.replica_id for s in ordered],
        "deployment_id": [replicas[s.replica_id].deployment_id for s in ordered],
        "node_id": [replicas[s.replica_id].node_id for s in ordered],
        "cpu_millicores": [s.usage.cpu_millis for s in ordered],
        "memory_mb": [s.usage.memory_mb for s in ordered],
    }
    await session.execute(_LATEST, unnested_values("sample", columns))


async def _upsert_rollups(session: AsyncSession, statement: Insert, rollups: list[Rollup]) -> None:
    """Add `rollups` to the current hour's rows (Rollup.merge, in SQL): `_rollups_statement`."""
    if not rollups:
        return
    columns: dict[str, list[Any]] = {
        "key": [r.key for r in rollups],
        "samples": [r.samples for r in rollups],
        "cpu_sum": [r.cpu_millis_sum for r in rollups],
        "cpu_max": [r.cpu_millis_max for r in rollups],
        "memory_sum": [r.memory_mb_sum for r in rollups],
        "memory_max": [r.memory_mb_max for r in rollups],
    }
    await session.execute(statement, unnested_values("rollup", columns))


# The statements of `record`, built once at Core level (queries.core, unnested_slots), executed
# with a batch's values as parameters: an agent API records every running replica's samples.


def _sampled_statement() -> Select[Any]:
    """The sampled replicas (parameter `sampled_ids`), each with its node's name and size."""
    replicas, nodes = core(DeploymentReplica), core(Node)
    return (
        select(
            replicas.c.id,
            replicas.c.deployment_id,
            replicas.c.node_id,
            replicas.c.status,
            nodes.c.name,
            nodes.c.cpu_cores,
            nodes.c.memory_mb,
        )
        .outerjoin(nodes, nodes.c.id == replicas.c.node_id)
        .where(replicas.c.id == any_(array_slot("sampled_ids", UUID(as_uuid=True))))
    )


def _latest_statement() -> Insert:
    """The upsert of each replica's latest sample: arrays unnested, one shape for any batch."""
    batch = unnested_slots(
        "sample",
        {
            "replica_id": UUID(as_uuid=True),
            "deployment_id": UUID(as_uuid=True),
            "node_id": UUID(as_uuid=True),
            "cpu_millicores": Integer(),
            "memory_mb": Integer(),
        },
    )
    statement = pg_insert(core(ReplicaUsage)).from_select(
        [batch_column.key for batch_column in batch.c], select(batch)
    )
    return statement.on_conflict_do_update(
        index_elements=["replica_id"],
        set_={
            "node_id": statement.excluded.node_id,
            "cpu_millicores": statement.excluded.cpu_millicores,
            "memory_mb": statement.excluded.memory_mb,
            "sampled_at": func.now(),
        },
    )


def _rollups_statement(
    entity: type[DeploymentUsageHourly] | type[NodeUsageHourly], key: str
) -> Insert:
    """The upsert adding a batch's rollups to the current hour's rows of `entity`, by `key`."""
    table = core(entity)
    batch = unnested_slots(
        "rollup",
        {
            "key": UUID(as_uuid=True),
            "samples": Integer(),
            "cpu_sum": BigInteger(),
            "cpu_max": Integer(),
            "memory_sum": BigInteger(),
            "memory_max": Integer(),
        },
    )
    # The hour on the database's clock, as sampled_at: one clock for every stored time.
    hour = func.date_trunc("hour", func.now())
    statement = pg_insert(table).from_select(
        [
            key,
            "hour",
            "samples",
            "cpu_millicores_sum",
            "cpu_millicores_max",
            "memory_mb_sum",
            "memory_mb_max",
        ],
        select(
            batch.c.key,
            hour,
            batch.c.samples,
            batch.c.cpu_sum,
            batch.c.cpu_max,
            batch.c.memory_sum,
            batch.c.memory_max,
        ),
    )
    excluded, current = statement.excluded, table.c
    return statement.on_conflict_do_update(
        index_elements=[key, "hour"],
        set_={
            "samples": current.samples + excluded.samples,
            "cpu_millicores_sum": current.cpu_millicores_sum + excluded.cpu_millicores_sum,
            "cpu_millicores_max": func.greatest(
                current.cpu_millicores_max, excluded.cpu_millicores_max
            ),
            "memory_mb_sum": current.memory_mb_sum + excluded.memory_mb_sum,
            "memory_mb_max": func.greatest(current.memory_mb_max, excluded.memory_mb_max),
        },
    )


_SAMPLED = _sampled_statement()
_LATEST = _latest_statement()
_DEPLOYMENT_ROLLUPS = _rollups_statement(DeploymentUsageHourly, "deployment_id")
_NODE_ROLLUPS = _rollups_statement(NodeUsageHourly, "node_id")


# -- reading ---------------------------------------------------------------------------------


async def latest(session: AsyncSession, *, deployment_id: uuid.UUID) -> dict[uuid.UUID, Sampled]:
    """The latest sample of each replica of a deployment (the status sums the running ones)."""
    rows = await session.execute(
        select(
            ReplicaUsage.replica_id,
            ReplicaUsage.cpu_millicores,
            ReplicaUsage.memory_mb,
            ReplicaUsage.sampled_at,
        ).where(ReplicaUsage.deployment_id == deployment_id)
    )
    return {
        row.replica_id: Sampled(Usage(row.cpu_millicores, row.memory_mb), row.sampled_at)
        for row in rows
    }


@dataclass(frozen=True, slots=True)
class TopRow:
    """One line of `fogctl top`: what running replicas use, what they requested, and when."""

    name: str
    namespace: str | None  # None for a node
    running: int  # running replicas
    sampled: int  # of them, with a sample
    usage: Usage
    # The running replicas' requests, each the one it was placed with (during a rolling
    # update old and new replicas differ), not the deployment's current spec.
    requested: Usage
    capacity: Usage | None  # a node's; None for a deployment
    sampled_at: datetime | None  # the oldest sample summed


def _running_usage() -> Any:
    """Running replicas with their latest sample (if any): what `top` sums."""
    return (
        select(
            DeploymentReplica.deployment_id,
            DeploymentReplica.node_id,
            DeploymentReplica.cpu_millicores.label("cpu_request"),
            DeploymentReplica.memory_mb.label("memory_request"),
            ReplicaUsage.cpu_millicores.label("cpu_used"),
            ReplicaUsage.memory_mb.label("memory_used"),
            ReplicaUsage.sampled_at,
        )
        .outerjoin(ReplicaUsage, ReplicaUsage.replica_id == DeploymentReplica.id)
        .where(DeploymentReplica.status == ReplicaStatus.RUNNING)
    )


def _sums(running: Any) -> list[Any]:
    return [
        func.count(running.c.deployment_id).label("running"),
        func.count(running.c.sampled_at).label("sampled"),
        func.coalesce(func.sum(running.c.cpu_used), 0).label("cpu_used"),
        func.coalesce(func.sum(running.c.memory_used), 0).label("memory_used"),
        func.coalesce(func.sum(running.c.cpu_request), 0).label("cpu_request"),
        func.coalesce(func.sum(running.c.memory_request), 0).label("memory_request"),
        func.min(running.c.sampled_at).label("sampled_at"),
    ]


async def top_deployments(session: AsyncSession, *, namespace: str | None) -> list[TopRow]:
    """Live deployments (of `namespace`, or all), with their running replicas' usage."""
    running = _running_usage().subquery()
    statement = (
        select(Deployment.name, User.name.label("namespace"), *_sums(running))
        .join(User, User.id == Deployment.user_id)
        .outerjoin(running, running.c.deployment_id == Deployment.id)
        .where(Deployment.deleted_at.is_(None))
        .group_by(User.name, Deployment.name)
        .order_by(User.name, Deployment.name)
    )
    if namespace is not None:
        statement = statement.where(User.name == namespace)
    return [_top_row(row, capacity=None) for row in await session.execute(statement)]


async def top_nodes(session: AsyncSession, *, namespace: str | None) -> list[TopRow]:
    """Every node, with the usage of the running replicas on it (of `namespace`, or all)."""
    running = _running_usage()
    if namespace is not None:
        running = running.join(Deployment, Deployment.id == DeploymentReplica.deployment_id).join(
            User, and_(User.id == Deployment.user_id, User.name == namespace)
        )
    on_node = running.subquery()
    statement = (
        select(Node.name, Node.cpu_cores, Node.memory_mb, *_sums(on_node))
        .outerjoin(on_node, on_node.c.node_id == Node.id)
        .group_by(Node.id)
        .order_by(Node.name)
    )
    return [
        _top_row(
            row,
            capacity=Usage.from_cores(cpu_cores=row.cpu_cores, memory_mb=row.memory_mb),
        )
        for row in await session.execute(statement)
    ]


def _top_row(row: Any, *, capacity: Usage | None) -> TopRow:
    return TopRow(
        name=row.name,
        namespace=getattr(row, "namespace", None),
        running=row.running,
        sampled=row.sampled,
        usage=Usage(int(row.cpu_used), int(row.memory_used)),
        requested=Usage(int(row.cpu_request), int(row.memory_request)),
        capacity=capacity,
        sampled_at=row.sampled_at,
    )


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A deployment's usage over a period, from its hourly rollups."""

    hours: int  # hours with samples
    samples: int
    cpu_millis_avg: float  # per replica sample
    cpu_millis_max: int  # the highest any replica used
    memory_mb_avg: float
    memory_mb_max: int


async def deployment_summary(
    session: AsyncSession, *, deployment_id: uuid.UUID, since: datetime
) -> UsageSummary:
    """Averages and peaks of a deployment's replicas since `since`: one primary-key range scan."""
    hourly = DeploymentUsageHourly
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(hourly.samples), 0),
                func.coalesce(func.sum(hourly.cpu_millicores_sum), 0),
                func.coalesce(func.max(hourly.cpu_millicores_max), 0),
                func.coalesce(func.sum(hourly.memory_mb_sum), 0),
                func.coalesce(func.max(hourly.memory_mb_max), 0),
            ).where(hourly.deployment_id == deployment_id, hourly.hour >= since)
        )
    ).one()
    hours, samples, cpu_sum, cpu_max, memory_sum, memory_max = (int(value) for value in row)
    return UsageSummary(
        hours=hours,
        samples=samples,
        cpu_millis_avg=cpu_sum / samples if samples else 0.0,
        cpu_millis_max=cpu_max,
        memory_mb_avg=memory_sum / samples if samples else 0.0,
        memory_mb_max=memory_max,
    )
