"""A deployment's whole story: its own status changes and its replicas', in time order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
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


async def deployment_history(session: AsyncSession, *, namespace: str, name: str) -> list[Entry]:
    """Every transition of every deployment of this name in this namespace (deleted ones too).

    Two index scans, on `(deployment_id, changed_at)` of each history table.
    """
    ids = (
        select(Deployment.id)
        .join(User, User.id == Deployment.user_id)
        .where(User.name == namespace, Deployment.name == name)
        .scalar_subquery()
    )
    own = await session.execute(
        select(DeploymentStatusHistory).where(DeploymentStatusHistory.deployment_id.in_(ids))
    )
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
    replicas = await session.execute(
        select(ReplicaStatusHistory, DeploymentReplica.ordinal, Node.name)
        .join(DeploymentReplica, DeploymentReplica.id == ReplicaStatusHistory.replica_id)
        .outerjoin(Node, Node.id == ReplicaStatusHistory.node_id)
        .where(ReplicaStatusHistory.deployment_id.in_(ids))
    )
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
