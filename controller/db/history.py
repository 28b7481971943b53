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
from controller.model.states import DeploymentStatus, ReplicaHealth, ReplicaStatus


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
    # A replica's health before and after (migration 0012); a health transition keeps the
    # status (old = new). Always None for the deployment's own rows.
    old_health: str | None = None
    new_health: str | None = None

    @property
    def transition(self) -> str:
        """What changed, as `fogctl history` shows it: `old -> new`, of the health if only it."""
        if self.old_status == self.new_status and self.old_health != self.new_health:
            return f"{self.old_health or '-'} -> {self.new_health}"
        return f"{self.old_status or '-'} -> {self.new_status}"


# A row of each statement: time, deployment, old and new status, actor, reason (and for a
# replica its health, its id and its node's name); the deployment's replicas: id, ordinal.
OwnRows = Select[
    datetime, uuid.UUID, DeploymentStatus | None, DeploymentStatus, str | None, str | None
]
ReplicaRows = Select[
    datetime,
    uuid.UUID,
    ReplicaStatus | None,
    ReplicaStatus,
    str | None,
    str | None,
    ReplicaHealth | None,
    ReplicaHealth | None,
    uuid.UUID,
    str,
]
OrdinalRows = Select[uuid.UUID, int]


def statements(*, namespace: str, name: str) -> tuple[OwnRows, ReplicaRows, OrdinalRows]:
    """The reads of `fogctl history NS/NAME`: its own rows, its replicas' rows, their ordinals.

    The deployments of that name, deleted ones too, are found through `(user_id, name)`; then
    each history statement reads the `(deployment_id, changed_at)` index of every monthly
    partition of its table, and nothing else of it: the index carries the columns selected here
    (migration 0014), so each partition is an index-only scan of the one or two leaf pages that
    hold the deployment's rows of that month. A column selected here must be in that index's
    INCLUDE list, or every row becomes a random read of the table again (tests/db/
    test_history_queries.py checks the plan). There is no time bound to prune on, since the
    whole story is asked for. The ordinals are read once per replica through `(deployment_id,
    ordinal)`, which carries the id, rather than once per history row by primary key (a random
    read each, five or more per replica). The benchmark EXPLAINs these very statements
    (bench/history.py).
    """
    ids = (
        select(Deployment.id)
        .join(User, User.id == Deployment.user_id)
        .where(User.name == namespace, Deployment.name == name)
        .scalar_subquery()
    )
    own = select(
        DeploymentStatusHistory.changed_at,
        DeploymentStatusHistory.deployment_id,
        DeploymentStatusHistory.old_status,
        DeploymentStatusHistory.new_status,
        DeploymentStatusHistory.actor,
        DeploymentStatusHistory.reason,
    ).where(DeploymentStatusHistory.deployment_id.in_(ids))
    replicas = (
        select(
            ReplicaStatusHistory.changed_at,
            ReplicaStatusHistory.deployment_id,
            ReplicaStatusHistory.old_status,
            ReplicaStatusHistory.new_status,
            ReplicaStatusHistory.actor,
            ReplicaStatusHistory.reason,
            ReplicaStatusHistory.old_health,
            ReplicaStatusHistory.new_health,
            ReplicaStatusHistory.replica_id,
            Node.name.label("node"),
        )
        .outerjoin(Node, Node.id == ReplicaStatusHistory.node_id)
        .where(ReplicaStatusHistory.deployment_id.in_(ids))
    )
    ordinals = select(DeploymentReplica.id, DeploymentReplica.ordinal).where(
        DeploymentReplica.deployment_id.in_(ids)
    )
    return own, replicas, ordinals


async def deployment_history(session: AsyncSession, *, namespace: str, name: str) -> list[Entry]:
    """Every transition of every deployment of this name in this namespace (deleted ones too).

    Three statements (`statements`): two index-only scans per monthly partition, one of the
    replicas' index.
    """
    own_query, replicas_query, ordinals_query = statements(namespace=namespace, name=name)
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
        for row in own
    ]
    replicas = await session.execute(replicas_query)
    # Read after the rows, so that every replica they name is there (replicas are never deleted
    # but with their deployment, by hand: the rows of one deleted meanwhile are left out).
    ordinals = dict((await session.execute(ordinals_query)).all())
    entries.extend(
        Entry(
            changed_at=row.changed_at,
            deployment_id=row.deployment_id,
            replica=f"{name}-{ordinals[row.replica_id]}",
            node=row.node,
            old_status=row.old_status,
            new_status=row.new_status,
            actor=row.actor,
            reason=row.reason,
            old_health=row.old_health,
            new_health=row.new_health,
        )
        for row in replicas
        if row.replica_id in ordinals
    )
    return sorted(entries, key=lambda entry: entry.changed_at)
