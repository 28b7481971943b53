"""A deployment's revision rows (migration 0011), for the reconcile and `fogctl rollout`.

The reconcile reads and writes them; `fogctl rollout history` lists them, and `fogctl rollout
undo` reads the template it goes back to.

The reconcile reads the rows (one statement) and applies model/revisions.py's decision in the
same transaction as the placement, so a revision number and the replicas created for it are
committed together. A deployment has few rows (spec.revisionHistoryLimit, 10 by default, plus
those still running), so each write is a statement of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.tables import Deployment, DeploymentReplica, DeploymentRevision, User
from controller.model.revisions import KnownRevision, RevisionPlan
from controller.model.states import CAPACITY_HOLDING_STATUSES


async def known(session: AsyncSession, deployment_id: uuid.UUID) -> tuple[KnownRevision, ...]:
    """The deployment's revision rows, oldest number first."""
    rows = await session.execute(
        select(
            DeploymentRevision.number,
            DeploymentRevision.hash,
            DeploymentRevision.completed_at.is_not(None).label("completed"),
        )
        .where(DeploymentRevision.deployment_id == deployment_id)
        .order_by(DeploymentRevision.number)
    )
    return tuple(KnownRevision(row.number, row.hash, row.completed) for row in rows)


async def record(
    session: AsyncSession,
    *,
    deployment_id: uuid.UUID,
    plan: RevisionPlan,
    revision: str,
    template: Mapping[str, Any],
    actor: str | None,
) -> None:
    """Apply `plan` to the rows: prune, then create or renumber, then complete.

    Pruned rows go first: the number they free is never the one given out (always the highest
    plus one), but deleting first keeps each statement's view simple.
    """
    own = (DeploymentRevision.deployment_id == deployment_id,)
    if plan.prune:
        await session.execute(
            delete(DeploymentRevision).where(*own, DeploymentRevision.number.in_(plan.prune))
        )
    if plan.create:
        await session.execute(
            insert(DeploymentRevision).values(
                deployment_id=deployment_id,
                number=plan.number,
                hash=revision,
                template=dict(template),
                created_by=actor,
            )
        )
    elif plan.renumber_from is not None:
        # Reused: renumbered as the newest, its rollout not completed yet. Created and by whom
        # become this return's (history lists when and by whom each revision last became the
        # spec's), and the template is refreshed: the same hash may be spelled differently.
        await session.execute(
            update(DeploymentRevision)
            .where(*own, DeploymentRevision.number == plan.renumber_from)
            .values(
                number=plan.number,
                template=dict(template),
                created_at=func.now(),
                created_by=actor,
                completed_at=None,
            )
        )
    if plan.complete:
        await session.execute(
            update(DeploymentRevision)
            .where(*own, DeploymentRevision.number == plan.number)
            .values(completed_at=func.now())
        )


@dataclass(frozen=True, slots=True)
class Revision:
    """One row of `fogctl rollout history`."""

    number: int
    hash: str
    template: Mapping[str, Any] | None  # None: older than the table, never stored
    created_at: datetime
    created_by: str | None
    completed_at: datetime | None
    replicas: int  # live replicas that run it
    current: bool  # the spec's revision (the highest number)


async def history(session: AsyncSession, *, namespace: str, name: str) -> list[Revision] | None:
    """The live deployment's revisions, oldest number first; None if there is no such deployment.

    Two statements: the rows, and the live replicas per hash (one indexed group).
    """
    deployment_id = await session.scalar(
        select(Deployment.id)
        .join(User, User.id == Deployment.user_id)
        .where(User.name == namespace, Deployment.name == name, Deployment.deleted_at.is_(None))
    )
    if deployment_id is None:
        return None
    counted = await session.execute(
        select(DeploymentReplica.revision, func.count())
        .where(
            DeploymentReplica.deployment_id == deployment_id,
            DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
        )
        .group_by(DeploymentReplica.revision)
    )
    counts: dict[str, int] = {revision: count for revision, count in counted}
    rows = (
        await session.execute(
            select(DeploymentRevision)
            .where(DeploymentRevision.deployment_id == deployment_id)
            .order_by(DeploymentRevision.number)
        )
    ).scalars()
    found = list(rows)
    newest = max((row.number for row in found), default=None)
    return [
        Revision(
            number=row.number,
            hash=row.hash,
            template=row.template,
            created_at=row.created_at,
            created_by=row.created_by,
            completed_at=row.completed_at,
            replicas=counts.get(row.hash, 0),
            current=row.number == newest,
        )
        for row in found
    ]
