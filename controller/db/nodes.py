"""Fog nodes in Postgres: registration, heartbeats, and the listing `fogctl node list` shows.

A node is a row an agent keeps alive through its lease (`node_leases`, one row per node that
only heartbeats write; see migration 0003). Registration is an upsert, so an agent that restarts
simply registers again; capacity may change (a disk added), labels are replaced, and the
allocation totals, which belong to the replicas, are never touched here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Interval,
    Select,
    String,
    any_,
    delete,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from controller.db.errors import DatabaseError, InvalidValueError, refused
from controller.db.notify import notify, notify_waiting
from controller.db.queries import array_slot, core
from controller.db.tables import ACTOR_MAX, DeploymentReplica, Node, NodeLease
from controller.model import actors
from controller.model.nodes import NodeStatus
from controller.model.resources import Resources
from controller.model.restarts import NODE_LOST
from controller.model.states import CAPACITY_HOLDING_STATUSES, ReplicaStatus

# A node's agent writes history as `agent:<node>` into actor columns of ACTOR_MAX characters,
# so a node name may use what the prefix leaves of them (249), not all of the column's 253.
NODE_NAME_MAX = ACTOR_MAX - len(actors.AGENT_PREFIX)


class NodeNotFoundError(DatabaseError):
    """No node of that name."""


class NodeBusyError(DatabaseError):
    """The node still holds replicas."""


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
    # How long ago, on the database's clock (the one that stamped it), not the reader's.
    heartbeat_age: timedelta | None


def capacity_of(row: Any) -> Resources:
    """A node row's (or result row's) capacity."""
    return Resources.from_cores(
        cpu_cores=row.cpu_cores,
        memory_mb=row.memory_mb,
        gpu_units=row.gpu_units,
        storage_gb=row.storage_gb,
    )


def allocated_of(row: Any) -> Resources:
    """What a node row (or result row) has allocated to replicas."""
    return Resources(
        cpu_millis=row.allocated_cpu_millicores,
        memory_mb=row.allocated_memory_mb,
        gpu_units=row.allocated_gpu_units,
        storage_gb=row.allocated_storage_gb,
    )


async def register(
    session: AsyncSession, *, name: str, capacity: Resources, labels: Mapping[str, str]
) -> uuid.UUID:
    """Create or update a node; it is online from now on (registration is a heartbeat).

    A value the schema refuses (a name too long, a number out of range, a NUL character, a
    capacity below what the node's replicas hold) is an InvalidValueError naming the node.
    """
    if len(name) > NODE_NAME_MAX:
        raise InvalidValueError(
            f"node name {name[:20]!r}... is {len(name)} characters; at most {NODE_NAME_MAX}"
        )
    # Names are shown in tables, logs and history actors: one printable line, not empty.
    if not name or not name.isprintable():
        raise InvalidValueError(f"node name {name!r} must be printable characters, at least one")
    values = {
        "cpu_cores": capacity.cpu_cores,
        "memory_mb": capacity.memory_mb,
        "gpu_units": capacity.gpu_units,
        "storage_gb": capacity.storage_gb,
        "labels": dict(labels),
        "status": NodeStatus.ONLINE,
    }
    statement = (
        pg_insert(Node)
        .values(name=name, **values)
        .on_conflict_do_update(
            index_elements=[Node.name], set_={**values, "updated_at": func.now()}
        )
        .returning(Node.id)
    )
    try:
        node_id: uuid.UUID = (await session.execute(statement)).scalar_one()
    except (IntegrityError, DataError) as exc:
        raise refused(exc, subject=f"node {name}") from None
    await session.execute(
        pg_insert(NodeLease)
        .values(node_id=node_id)
        .on_conflict_do_update(index_elements=[NodeLease.node_id], set_={"renewed_at": func.now()})
    )
    await notify_waiting(session)
    return node_id


async def heartbeat(session: AsyncSession, *, names: Sequence[str]) -> int:
    """Record that these nodes' agents are alive; return how many leases were renewed.

    Only lease rows are written, and only heartbeats write them: reading the node rows by name
    takes no lock, so the heartbeat never waits for a placement that holds them, and no node is
    ever skipped. A node the check had taken offline is brought back online here (a placement
    never locks an offline node, which is not a candidate), and deployments waiting for room
    are woken, since room has just come back.
    """
    renewed, woken = (await session.execute(_HEARTBEAT, {"names": list(names)})).one()
    if woken:
        await notify_waiting(session)
    return int(renewed)


def _heartbeat_statement() -> Select[int, int]:
    """One statement renewing the named nodes' leases and bringing offline ones back online.

    Built once, at Core level, executed with the names as its one parameter: an agent API
    heartbeating 500 nodes twice a second runs it constantly. One array, not an IN list (5,000
    bind parameters per statement were most of the heartbeat's time in `make bench`), sent
    once for both updates; each update is a data-modifying CTE, and the select counts their rows.
    """
    leases, nodes = core(NodeLease), core(Node)
    named = nodes.c.name == any_(array_slot("names", String()))
    renewed = (
        update(leases)
        .where(leases.c.node_id == nodes.c.id, named)
        .values(renewed_at=func.now())
        .returning(leases.c.node_id)
        .cte("renewed")
    )
    woken = (
        update(nodes)
        .where(named, nodes.c.status == NodeStatus.OFFLINE)
        .values(status=NodeStatus.ONLINE)
        .returning(nodes.c.id)
        .cte("woken")
    )
    return select(
        select(func.count()).select_from(renewed).scalar_subquery(),
        select(func.count()).select_from(woken).scalar_subquery(),
    )


_HEARTBEAT = _heartbeat_statement()


async def node_names(session: AsyncSession) -> list[str]:
    """Every registered node's name (what an agent serving all nodes polls for)."""
    return list(await session.scalars(select(Node.name).order_by(Node.name)))


async def list_nodes(session: AsyncSession, *, names: Sequence[str] = ()) -> list[NodeRecord]:
    """Every node (or the named ones), by name."""
    statement = (
        select(Node, NodeLease.renewed_at, type_coerce(func.now() - NodeLease.renewed_at, Interval))
        .outerjoin(NodeLease, NodeLease.node_id == Node.id)
        .order_by(Node.name)
    )
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
            capacity=capacity_of(node),
            allocated=allocated_of(node),
            last_heartbeat_at=renewed_at,
            heartbeat_age=age,
        )
        for node, renewed_at, age in await session.execute(statement)
    ]


async def mark_lost(session: AsyncSession, *, grace: timedelta) -> list[str]:
    """Take nodes silent for longer than `grace` offline and fail their active replicas.

    Two statements whatever the number of nodes and replicas. The failed rows release their
    capacity (allocation trigger) and wake their deployments' reconciles (notify trigger),
    which place replacements elsewhere. Returns the names of the nodes taken offline.

    Replicas are failed on every offline node, not only the ones taken offline now: a
    placement that read its candidates without locks (the reconciler's second read) can
    commit a replica onto a node just taken offline, and nothing else would ever move it.
    """
    lost = await session.execute(
        update(Node)
        .where(
            Node.status == NodeStatus.ONLINE,
            NodeLease.node_id == Node.id,
            NodeLease.renewed_at < func.now() - grace,
        )
        .values(status=NodeStatus.OFFLINE)
        .returning(Node.id, Node.name)
    )
    rows = list(lost)
    offline = select(Node.id).where(Node.status == NodeStatus.OFFLINE).scalar_subquery()
    await _fail_replicas_on(session, offline)
    return [row.name for row in rows]


async def _fail_replicas_on(
    session: AsyncSession, node_ids: Sequence[uuid.UUID] | ScalarSelect[uuid.UUID]
) -> None:
    """Fail every replica holding capacity on these nodes, as lost with them."""
    await session.execute(
        update(DeploymentReplica)
        .where(
            DeploymentReplica.node_id.in_(node_ids),
            DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
        )
        .values(
            status=ReplicaStatus.FAILED,
            status_reason=NODE_LOST,
            status_actor=actors.NODE_LIFECYCLE,
            stopped_at=func.now(),
        )
    )


async def _set_flags(session: AsyncSession, name: str, **flags: bool) -> None:
    result = await session.execute(update(Node).where(Node.name == name).values(**flags))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NodeNotFoundError(f"no node named {name!r}")


async def cordon(session: AsyncSession, *, name: str) -> None:
    """No new replicas go to this node; the ones there stay."""
    await _set_flags(session, name, cordoned=True)


async def uncordon(session: AsyncSession, *, name: str) -> None:
    """The node takes new replicas again (and is no longer being drained)."""
    await _set_flags(session, name, cordoned=False, draining=False)
    await notify_waiting(session)


async def drain(session: AsyncSession, *, name: str) -> list[uuid.UUID]:
    """Cordon the node and mark it draining; return the deployments with replicas there.

    The operator then replaces those replicas elsewhere within each deployment's rolling
    limit, as for an image change.
    """
    await _set_flags(session, name, cordoned=True, draining=True)
    rows = await session.scalars(
        select(DeploymentReplica.deployment_id)
        .join(Node, Node.id == DeploymentReplica.node_id)
        .where(Node.name == name, DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES))
        .distinct()
    )
    affected = list(rows)
    await notify(session, affected)
    return affected


async def remove(session: AsyncSession, *, name: str, force: bool) -> int:
    """Delete a node; refused while replicas hold capacity there unless `force`.

    With `force` those replicas fail with reason NodeLost (and are replaced), then the row
    goes; their history stays. Returns how many replicas were failed.
    """
    node_id = await session.scalar(select(Node.id).where(Node.name == name).with_for_update())
    if node_id is None:
        raise NodeNotFoundError(f"no node named {name!r}")
    holding = (
        DeploymentReplica.node_id == node_id,
        DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
    )
    count = int(await session.scalar(select(func.count()).where(*holding)) or 0)
    if count and not force:
        raise NodeBusyError(f"node {name} still holds {count} replicas: drain it first, or --force")
    if count:
        await _fail_replicas_on(session, [node_id])
    await session.execute(delete(Node).where(Node.id == node_id))
    return count
