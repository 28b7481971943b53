"""What `fogctl cost` reads: replica histories, the replicas' requests, and the nodes' labels.

Nothing is written: the replica history already records, in the statement that took or
released each allocation, every status a replica entered with its node and the database's
clock (docs/design/capacity-and-history.md), and the replica row the rest (`assigned_at`, the
moment it does not record, migration 0009; its status since creation, for rows a retention
dropped); controller.model.cost turns that into time held and money. Two statements, whatever
the number of replicas.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from controller.db.tables import (
    REPLICA_REQUEST,
    Deployment,
    DeploymentReplica,
    Node,
    ReplicaStatusHistory,
    User,
    request_of,
)
from controller.model.cost import (
    NodeRecord,
    ReplicaNow,
    ReplicaRecord,
    Transition,
    Window,
    complete_history,
)
from controller.model.states import (
    CAPACITY_HOLDING_STATUSES,
    TERMINAL_REPLICA_STATUSES,
    ReplicaStatus,
)


@dataclass(frozen=True, slots=True)
class CostInput:
    """Everything the cost model needs, read at one moment of the database's clock."""

    window: Window
    replicas: list[ReplicaRecord]
    nodes: dict[uuid.UUID, NodeRecord]


async def read(
    session: AsyncSession, *, namespace: str | None, since: timedelta | None
) -> CostInput:
    """The histories of the replicas (of one namespace, or all) that may overlap the window.

    The window ends at the database's clock now and starts `since` before it (None: at the
    beginning). A replica whose history ended before the window starts cannot overlap it and
    is not read: only replicas still not stopped or failed, or with a row inside the window.
    A replica still holding capacity is read even if a history retention dropped all its
    rows. Deleted deployments are read too: they cost while they ran.
    """
    now: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    start = None if since is None else now - since
    history = ReplicaStatusHistory
    replica = DeploymentReplica
    statement = (
        select(
            replica.id,
            replica.status,
            replica.node_id.label("current_node"),
            replica.created_at,
            replica.assigned_at,
            *REPLICA_REQUEST,
            Deployment.name.label("deployment"),
            User.name.label("namespace"),
            history.old_status,
            history.new_status,
            history.node_id,
            history.changed_at,
        )
        .join(Deployment, Deployment.id == replica.deployment_id)
        .join(User, User.id == Deployment.user_id)
        .outerjoin(history, history.replica_id == replica.id)
        .where(
            or_(
                history.replica_id.is_not(None),
                and_(
                    replica.node_id.is_not(None),
                    replica.status.in_(CAPACITY_HOLDING_STATUSES),
                ),
            )
        )
        .order_by(replica.id, history.changed_at, history.id)
    )
    if namespace is not None:
        statement = statement.where(User.name == namespace)
    if start is not None:
        later = aliased(ReplicaStatusHistory, name="later")
        statement = statement.where(
            or_(
                replica.status.not_in(TERMINAL_REPLICA_STATUSES),
                exists().where(later.replica_id == replica.id, later.changed_at >= start),
            )
        )
    rows = (await session.execute(statement)).all()
    retained: dict[uuid.UUID, list[Transition]] = defaultdict(list)
    before_first: dict[uuid.UUID, ReplicaStatus | None] = {}
    for row in rows:
        if row.changed_at is None:
            continue  # no row left: what the replica row says stands in (complete_history)
        before_first.setdefault(row.id, row.old_status)
        retained[row.id].append(
            Transition(status=row.new_status, node_id=row.node_id, at=row.changed_at)
        )
    replicas = {
        row.id: ReplicaRecord(
            namespace=row.namespace,
            deployment=row.deployment,
            request=request_of(row),
            transitions=complete_history(
                ReplicaNow(
                    status=row.status,
                    node_id=row.current_node,
                    created_at=row.created_at,
                    assigned_at=row.assigned_at,
                ),
                retained[row.id],
                before_first.get(row.id),
            ),
        )
        for row in rows
    }
    node_ids = {
        t.node_id for r in replicas.values() for t in r.transitions if t.node_id is not None
    }
    nodes = await session.execute(
        select(Node.id, Node.name, Node.labels).where(Node.id.in_(node_ids))
    )
    return CostInput(
        window=Window(start=start, end=now),
        replicas=list(replicas.values()),
        nodes={row.id: NodeRecord(name=row.name, labels=row.labels) for row in nodes},
    )
