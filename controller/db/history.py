"""A deployment's whole story: its own status changes and its replicas', in time order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    DeploymentStatusHistory,
    Node,
    ReplicaStatusHistory,
    User,
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One transition: of the deployment (replica None) or of one replica."""

    changed_at: datetime
    deployment_id: uuid.UUID
    replica: str | None
    node: str | None
    old_status: str | None
    new_status: str
    actor: str | None
    reason: str | None


def statements(
    *, namespace: str, name: str
) -> tuple[Select[DeploymentStatusHistory], Select[ReplicaStatusHistory, int, str]]:
    """The two reads of `fogctl history NAMESPACE/NAME`: the deployments' rows, the replicas'.

    Each is one scan of the `(deployment_id, changed_at)` index of every monthly partition of
    its table (migration 0010); there is no time bound to prune on, since the whole story is
    asked for. The benchmark EXPLAINs these very statements (bench/history.py).
    """
    ids = (
        select(Deployment.id)
        .join(User, User.id == Deployment.user_id)
        .where(User.name == namespace, Deployment.name == name)
        .scalar_subquery()
    )
    own = select(DeploymentStatusHistory).where(DeploymentStatusHistory.deployment_id.in_(ids))
    replicas = (
        select(ReplicaStatusHistory, DeploymentReplica.ordinal, Node.name)
        .join(DeploymentReplica, DeploymentReplica.id == ReplicaStatusHistory.replica_id)
        .outerjoin(Node, Node.id == ReplicaStatusHistory.node_id)
        .where(ReplicaStatusHistory.deployment_id.in_(ids))
    )
    return own, replicas


async def deployment_history(session: AsyncSession, *, namespace: str, name: str) -> list[Entry]:
    """Every transition of every deployment of this name in this namespace (deleted ones too).

    Two statements (`statements`), each an index scan per monthly partition.
    """
    own_query, replicas_query = statements(namespace=namespace, name=name)
    own = await session.execute(own_query)
    entries = [
        Entry(
            changed_at=row.changed_at,
            deployment_id=row.deployment_id,
            replica=None,
            node=None,
            old_status=row.old_status,
            new_status=row.new_status,
            actor=row.actor,
            reason=row.reason,
        )
        for row in own.scalars()
    ]
    replicas = await session.execute(replicas_query)
    entries.extend(
        Entry(
            changed_at=row.changed_at,
            deployment_id=row.deployment_id,
            replica=f"{name}-{ordinal}",
            node=node,
            old_status=row.old_status,
            new_status=row.new_status,
            actor=row.actor,
            reason=row.reason,
        )
        for row, ordinal, node in replicas
    )
    return sorted(entries, key=lambda entry: entry.changed_at)
