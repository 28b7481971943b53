"""What `fogctl cost` reads: replica histories, the replicas' requests, and the nodes' labels.

Nothing is written: the replica history already records, in the statement that took or
released each allocation, every status a replica entered with its node and the database's
clock (docs/design/capacity-and-history.md), and `assigned_at` the one moment it does not
(migration 0009); controller.model.cost turns that into time held and money. Two statements,
whatever the number of replicas.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from controller.db.tables import Deployment, DeploymentReplica, Node, ReplicaStatusHistory, User
from controller.model.cost import NodeRecord, ReplicaRecord, Transition, Window
from controller.model.resources import Resources
from controller.model.states import TERMINAL_REPLICA_STATUSES, ReplicaStatus


@dataclass(frozen=True, slots=True)
class CostInput:
    """Everything the cost model needs, read at one moment of the database's clock."""

    window: Window
    replicas: list[ReplicaRecord]
    nodes: dict[uuid.UUID, NodeRecord]


def _with_assignment(
    history: list[Transition], assigned_at: datetime | None, node: uuid.UUID | None
) -> tuple[Transition, ...]:
    """The history, plus the row it lacks: pending, given its node at `assigned_at` (0009).

    `node` is the replica's node now; if that node was removed since (the column was then
    cleared), the node its later history rows name: every status change records the node.
    """
    if assigned_at is None:
        return tuple(history)
    node = node or next((t.node_id for t in history if t.node_id is not None), None)
    return (*history, Transition(status=ReplicaStatus.PENDING, node_id=node, at=assigned_at))


async def read(
    session: AsyncSession, *, namespace: str | None, since: timedelta | None
) -> CostInput:
    """The histories of the replicas (of one namespace, or all) that may overlap the window.

    The window ends at the database's clock now and starts `since` before it (None: at the
    beginning). A replica whose history ended before the window starts cannot overlap it and
    is not read: only replicas still not stopped or failed, or with a row inside the window.
    Deleted deployments are read too: they cost while they ran.
    """
    now: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    start = None if since is None else now - since
    history = ReplicaStatusHistory
    statement = (
        select(
            history.replica_id,
            history.new_status,
            history.node_id,
            history.changed_at,
            DeploymentReplica.cpu_millicores,
            DeploymentReplica.memory_mb,
            DeploymentReplica.gpu_units,
            DeploymentReplica.storage_gb,
            DeploymentReplica.assigned_at,
            DeploymentReplica.node_id.label("current_node"),
            Deployment.name.label("deployment"),
            User.name.label("namespace"),
        )
        .join(DeploymentReplica, DeploymentReplica.id == history.replica_id)
        .join(Deployment, Deployment.id == history.deployment_id)
        .join(User, User.id == Deployment.user_id)
        .order_by(history.replica_id, history.changed_at, history.id)
    )
    if namespace is not None:
        statement = statement.where(User.name == namespace)
    if start is not None:
        later = aliased(ReplicaStatusHistory, name="later")
        statement = statement.where(
            or_(
                DeploymentReplica.status.not_in(TERMINAL_REPLICA_STATUSES),
                exists().where(later.replica_id == DeploymentReplica.id, later.changed_at >= start),
            )
        )
    rows = (await session.execute(statement)).all()
    transitions: dict[uuid.UUID, list[Transition]] = defaultdict(list)
    for row in rows:
        transitions[row.replica_id].append(
            Transition(status=row.new_status, node_id=row.node_id, at=row.changed_at)
        )
    replicas = {
        row.replica_id: ReplicaRecord(
            namespace=row.namespace,
            deployment=row.deployment,
            request=Resources(
                cpu_millis=row.cpu_millicores,
                memory_mb=row.memory_mb,
                gpu_units=row.gpu_units,
                storage_gb=row.storage_gb,
            ),
            transitions=_with_assignment(
                transitions[row.replica_id], row.assigned_at, row.current_node
            ),
        )
        for row in rows
    }
    node_ids = {row.node_id for row in rows if row.node_id is not None}
    nodes = await session.execute(
        select(Node.id, Node.name, Node.labels).where(Node.id.in_(node_ids))
    )
    return CostInput(
        window=Window(start=start, end=now),
        replicas=list(replicas.values()),
        nodes={row.id: NodeRecord(name=row.name, labels=row.labels) for row in nodes},
    )
