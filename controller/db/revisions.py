"""A deployment's revision rows (migration 0011), for the reconcile and `fogctl rollout`.

The reconcile reads and writes them; `fogctl rollout history` lists them, and `fogctl rollout
undo` reads the template it goes back to.

The reconcile reads the rows (one statement) and applies model/revisions.py's decision in the
same transaction as the placement, so a revision number and the replicas created for it are
committed together. A batched reconcile reads the rows of all its deployments in one statement
and writes the common changes (a first revision, a completed rollout) in one statement each.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, any_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.queries import array_param, core, unnested
from controller.db.tables import Deployment, DeploymentReplica, DeploymentRevision, User
from controller.model.revisions import KnownRevision, RevisionPlan
from controller.model.states import CAPACITY_HOLDING_STATUSES

_revisions = core(DeploymentRevision)


async def known_many(
    session: AsyncSession, deployment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[KnownRevision, ...]]:
    """Each deployment's revision rows, oldest number first: one statement for the batch."""
    rows = await session.execute(
        select(
            DeploymentRevision.deployment_id,
            DeploymentRevision.number,
            DeploymentRevision.hash,
            DeploymentRevision.completed_at.is_not(None).label("completed"),
            DeploymentRevision.promoted_at.is_not(None).label("promoted"),
            DeploymentRevision.abort_reason,
            DeploymentRevision.template,
        )
        .where(
            DeploymentRevision.deployment_id
            == any_(array_param("revision_owners", list(deployment_ids), UUID()))
        )
        .order_by(DeploymentRevision.deployment_id, DeploymentRevision.number)
    )
    known: dict[uuid.UUID, list[KnownRevision]] = {owner: [] for owner in deployment_ids}
    for row in rows:
        known[row.deployment_id].append(
            KnownRevision(
                row.number,
                row.hash,
                row.completed,
                promoted=row.promoted,
                aborted=row.abort_reason,
                template=row.template,
            )
        )
    return {owner: tuple(revisions) for owner, revisions in known.items()}


@dataclass(frozen=True, slots=True)
class Record:
    """One deployment's revision-row plan, for `record_many`."""

    deployment_id: uuid.UUID
    plan: RevisionPlan
    revision: str
    template: Mapping[str, Any]
    actor: str | None


async def record_many(session: AsyncSession, records: Sequence[Record]) -> None:
    """Apply each plan to its deployment's rows: prune, then create or renumber, then complete.

    Pruned rows go first: the number they free is never the one given out (always the highest
    plus one), but deleting first keeps each statement's view simple. The new rows of the
    whole batch are one INSERT and the completions one UPDATE (a first reconcile creates, a
    finished rollout completes: the common writes); a prune or a renumber (an undo, a return to
    an older template) is a statement per deployment.
    """
    for record in records:
        if record.plan.prune:
            await session.execute(
                delete(DeploymentRevision).where(
                    DeploymentRevision.deployment_id == record.deployment_id,
                    DeploymentRevision.number.in_(record.plan.prune),
                )
            )
    created = [
        {
            "deployment_id": record.deployment_id,
            "number": record.plan.number,
            "hash": record.revision,
            "template": dict(record.template),
            "created_by": record.actor,
        }
        for record in records
        if record.plan.create
    ]
    if created:
        # At Core level on the table, every column named: the ORM's bulk INSERT sent the rows
        # with and without an actor (created_by NULL) as two statements of two shapes.
        await session.execute(insert(_revisions), created)
    for record in records:
        if not record.plan.create and record.plan.renumber_from is not None:
            await _renumber(session, record)
    completed = sorted((r for r in records if r.plan.complete), key=lambda r: str(r.deployment_id))
    if completed:
        rows = unnested(
            "completed",
            {
                "deployment_id": ([r.deployment_id for r in completed], UUID()),
                "number": ([r.plan.number for r in completed], Integer()),
            },
        )
        await session.execute(
            update(DeploymentRevision)
            .where(
                DeploymentRevision.deployment_id == rows.c.deployment_id,
                DeploymentRevision.number == rows.c.number,
            )
            .values(completed_at=func.now())
        )


async def _renumber(session: AsyncSession, record: Record) -> None:
    """Renumber a reused row as the newest, its rollout not completed yet.

    Nor promoted, nor aborted: this is a new rollout of it (model/canary.py). Created and by
    whom become this return's (history lists when and by whom each revision last became the
    spec's), and the template is refreshed: the same hash may be spelled differently.
    """
    await session.execute(
        update(DeploymentRevision)
        .where(
            DeploymentRevision.deployment_id == record.deployment_id,
            DeploymentRevision.number == record.plan.renumber_from,
        )
        .values(
            number=record.plan.number,
            template=dict(record.template),
            created_at=func.now(),
            created_by=record.actor,
            completed_at=None,
            promoted_at=None,
            promoted_by=None,
            aborted_at=None,
            abort_reason=None,
        )
    )


async def stamp(
    session: AsyncSession,
    *,
    deployment_id: uuid.UUID,
    revision: str,
    promoted_by: str | None = None,
    abort_reason: str | None = None,
) -> None:
    """Stamp the revision promoted past its canaries (by whom) and/or its rollout aborted (why).

    model/canary.py decides both (autoPromote, autoRevert); a stamp already there stays, the
    first promotion or abort being the one that happened.
    """
    stamps: list[tuple[Any, dict[str, Any]]] = []
    if promoted_by is not None:
        stamps.append(
            (
                DeploymentRevision.promoted_at,
                {"promoted_at": func.now(), "promoted_by": promoted_by},
            )
        )
    if abort_reason is not None:
        stamps.append(
            (
                DeploymentRevision.aborted_at,
                {"aborted_at": func.now(), "abort_reason": abort_reason},
            )
        )
    for unset, values in stamps:
        await session.execute(
            update(DeploymentRevision)
            .where(
                DeploymentRevision.deployment_id == deployment_id,
                DeploymentRevision.hash == revision,
                unset.is_(None),
            )
            .values(**values)
        )


async def _live_deployment(session: AsyncSession, *, namespace: str, name: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await session.scalar(
        select(Deployment.id)
        .join(User, User.id == Deployment.user_id)
        .where(User.name == namespace, Deployment.name == name, Deployment.deleted_at.is_(None))
    )
    return found


class PromoteOutcome(StrEnum):
    """What `fogctl rollout promote` found: the CLI says each in one line."""

    PROMOTED = "promoted"
    UNKNOWN = "unknown"  # no such live deployment in the database
    NO_REVISION = "no-revision"  # the deployment has no revision row yet
    DONE = "done"  # the newest revision's rollout already completed
    ALREADY = "already"  # already promoted
    ABORTED = "aborted"  # its rollout was aborted: a new spec starts a new one


async def promote_newest(
    session: AsyncSession, *, namespace: str, name: str, actor: str
) -> tuple[PromoteOutcome, int | None]:
    """Promote the deployment's newest revision (the spec's): the outcome and its number.

    The row is locked (FOR UPDATE) so that a concurrent reconcile's abort or completion and
    this promotion do not both act on what the other did not see. The 0015 trigger then
    wakes the deployment's reconcile.
    """
    deployment_id = await _live_deployment(session, namespace=namespace, name=name)
    if deployment_id is None:
        return PromoteOutcome.UNKNOWN, None
    row = await session.scalar(
        select(DeploymentRevision)
        .where(DeploymentRevision.deployment_id == deployment_id)
        .order_by(DeploymentRevision.number.desc())
        .limit(1)
        .with_for_update()
    )
    if row is None:
        return PromoteOutcome.NO_REVISION, None
    if row.aborted_at is not None:
        return PromoteOutcome.ABORTED, row.number
    if row.completed_at is not None:
        return PromoteOutcome.DONE, row.number
    if row.promoted_at is not None:
        return PromoteOutcome.ALREADY, row.number
    number = row.number  # read before the commit expires the row's attributes
    row.promoted_at = await session.scalar(select(func.now()))
    row.promoted_by = actor
    await session.commit()
    return PromoteOutcome.PROMOTED, number


@dataclass(frozen=True, slots=True)
class Revision:
    """One row of `fogctl rollout history`."""

    number: int
    hash: str
    template: Mapping[str, Any] | None  # None: older than the table, never stored
    created_at: datetime
    created_by: str | None
    completed_at: datetime | None
    promoted_at: datetime | None
    promoted_by: str | None
    aborted_at: datetime | None
    abort_reason: str | None
    replicas: int  # live replicas that run it
    current: bool  # the spec's revision (the highest number)


async def history(session: AsyncSession, *, namespace: str, name: str) -> list[Revision] | None:
    """The live deployment's revisions, oldest number first; None if there is no such deployment.

    Two statements: the rows, and the live replicas per hash (one indexed group).
    """
    deployment_id = await _live_deployment(session, namespace=namespace, name=name)
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
            promoted_at=row.promoted_at,
            promoted_by=row.promoted_by,
            aborted_at=row.aborted_at,
            abort_reason=row.abort_reason,
            replicas=counts.get(row.hash, 0),
            current=row.number == newest,
        )
        for row in found
    ]
