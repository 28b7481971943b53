"""Fog nodes in Postgres: registration, heartbeats, and the listing `fogctl node list` shows.

A node is a row an agent keeps alive. Registration is an upsert, so an agent that restarts
simply registers again; capacity may change (a disk added), labels are replaced, and the
allocation totals, which belong to the replicas, are never touched here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.tables import Node
from controller.model.nodes import NodeStatus
from controller.model.resources import Resources


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as listed: capacity, what is allocated, liveness and scheduling flags."""

    id: uuid.UUID
    name: str
    status: NodeStatus
    cordoned: bool
    draining: bool
    labels: Mapping[str, str]
    capacity: Resources
    allocated: Resources
    last_heartbeat_at: datetime | None


async def register(
    session: AsyncSession, *, name: str, capacity: Resources, labels: Mapping[str, str]
) -> uuid.UUID:
    """Create or update a node; it is online from now on (registration is a heartbeat)."""
    values = {
        "cpu_cores": capacity.cpu_cores,
        "memory_mb": capacity.memory_mb,
        "gpu_units": capacity.gpu_units,
        "storage_gb": capacity.storage_gb,
        "labels": dict(labels),
        "status": NodeStatus.ONLINE,
        "last_heartbeat_at": func.now(),
    }
    statement = (
        pg_insert(Node)
        .values(name=name, **values)
        .on_conflict_do_update(
            index_elements=[Node.name], set_={**values, "updated_at": func.now()}
        )
        .returning(Node.id)
    )
    node_id: uuid.UUID = (await session.execute(statement)).scalar_one()
    return node_id


async def heartbeat(session: AsyncSession, *, names: Sequence[str]) -> int:
    """Record that these nodes' agents are alive; return how many nodes are known."""
    result = await session.execute(
        update(Node)
        .where(Node.name.in_(names))
        .values(last_heartbeat_at=func.now(), status=NodeStatus.ONLINE)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def list_nodes(session: AsyncSession, *, names: Sequence[str] = ()) -> list[NodeRecord]:
    """Every node (or the named ones), by name."""
    statement = select(Node).order_by(Node.name)
    if names:
        statement = statement.where(Node.name.in_(names))
    return [
        NodeRecord(
            id=node.id,
            name=node.name,
            status=node.status,
            cordoned=node.cordoned,
            draining=node.draining,
            labels=node.labels,
            capacity=Resources.from_cores(
                cpu_cores=node.cpu_cores,
                memory_mb=node.memory_mb,
                gpu_units=node.gpu_units,
                storage_gb=node.storage_gb,
            ),
            allocated=Resources(
                cpu_millis=node.allocated_cpu_millicores,
                memory_mb=node.allocated_memory_mb,
                gpu_units=node.allocated_gpu_units,
                storage_gb=node.allocated_storage_gb,
            ),
            last_heartbeat_at=node.last_heartbeat_at,
        )
        for node in await session.scalars(statement)
    ]
