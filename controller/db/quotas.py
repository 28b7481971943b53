"""FogQuotas in PostgreSQL: the stored limits, and a namespace's usage read under their lock.

A placement in a namespace that has quotas calls `gates` inside its own transaction, before it
reads candidate nodes (a batch calls it once for all its namespaces): `gates` locks the
namespace's quota rows (FOR UPDATE, in name order, so two placements take them in one order)
and only then reads the usage. Under READ COMMITTED that
read sees everything committed by the placement that held the lock before, so two placements
of one namespace serialise and the second sees what the first took; the lock is held to commit.
Namespaces without a quota never call it (the snapshot says whether there is one), so they pay
nothing. Lock order across a reconcile: the deployment's advisory lock, then the quota rows,
then node rows (SKIP LOCKED, and the triggers' updates of them); nobody takes them the other
way round, so they cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from controller.db import queries
from controller.db.tables import (
    QUOTA_LIMIT_COLUMNS,
    REPLICA_REQUEST,
    Deployment,
    DeploymentReplica,
    Quota,
    User,
)
from controller.model.quota import NamespaceQuotas, QuotaAmounts
from controller.model.quota import Quota as QuotaLimits
from controller.model.resources import Resources
from controller.model.states import CAPACITY_HOLDING_STATUSES

_LIMITS = tuple(getattr(Quota, name) for name in QUOTA_LIMIT_COLUMNS)


def has_quota(user_id: ColumnElement[uuid.UUID]) -> ColumnElement[bool]:
    """Whether the tenant has a quota: one index probe, for the deployment snapshot.

    At Core level (queries.core), as the snapshot's statement that holds it.
    """
    quota = queries.core(Quota)
    return select(quota.c.id).where(quota.c.user_id == user_id).exists()


def _amounts(row: object) -> QuotaAmounts:
    return QuotaAmounts(*(getattr(row, name) for name in QUOTA_LIMIT_COLUMNS))


async def usage(session: AsyncSession, user_id: uuid.UUID) -> QuotaAmounts:
    """What the tenant holds: requests of replicas holding capacity, their count, deployments.

    Replicas of deleted deployments count while they still stop: they still hold the room.
    """
    live = aliased(Deployment)  # the deployments counted, apart from the replicas' join
    sums = (
        select(
            *(func.coalesce(func.sum(column), 0) for column in REPLICA_REQUEST),
            func.count(DeploymentReplica.id),
            select(func.count())
            .select_from(live)
            .where(queries.live(user_id, live))
            .scalar_subquery(),
        )
        .select_from(DeploymentReplica)
        .join(Deployment, Deployment.id == DeploymentReplica.deployment_id)
        .where(
            Deployment.user_id == user_id,
            DeploymentReplica.node_id.is_not(None),
            DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
        )
    )
    row = tuple((await session.execute(sums)).one())
    return QuotaAmounts.usage(
        held=Resources(*(int(amount) for amount in row[:4])),
        replicas=int(row[4]),
        fog_deployments=int(row[5]),
    )


async def gates(
    session: AsyncSession, wanted: Mapping[uuid.UUID, Collection[uuid.UUID]]
) -> dict[uuid.UUID, NamespaceQuotas]:
    """Lock the tenants' quotas; read their usage and the age rank of the deployments given.

    One lock statement for every tenant, in (tenant, name) order: a lone reconcile locks one
    tenant's rows in name order, a batch several tenants' in the same order, so no two
    placements take them in opposite orders. A tenant without a quota (any more) is absent.
    The rank counts the live deployments older than each one, by (created_at, id).
    """
    rows = await session.execute(
        select(Quota.user_id, Quota.name, *_LIMITS)
        .where(Quota.user_id.in_(sorted(wanted)))
        .order_by(Quota.user_id, Quota.name)
        .with_for_update()
    )
    limits: dict[uuid.UUID, list[QuotaLimits]] = defaultdict(list)
    for row in rows:
        limits[row.user_id].append(QuotaLimits(name=row.name, hard=_amounts(row)))
    ids = [deployment_id for tenant in limits for deployment_id in wanted[tenant]]
    ranks = await _ranks(session, ids) if ids else {}
    return {
        tenant: NamespaceQuotas(
            quotas=tuple(quotas),
            used=await usage(session, tenant),
            ranks={deployment_id: ranks[deployment_id] for deployment_id in wanted[tenant]},
        )
        for tenant, quotas in limits.items()
    }


async def _ranks(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many live deployments of its tenant are older than each deployment, by id."""
    mine, older = aliased(Deployment), aliased(Deployment)
    statement = (
        select(mine.id, func.count(older.id))
        .select_from(mine)
        .outerjoin(
            older,
            and_(
                queries.live(mine.user_id, older),
                tuple_(older.created_at, older.id) < tuple_(mine.created_at, mine.id),
            ),
        )
        .where(mine.id.in_(ids))
        .group_by(mine.id)
    )
    return {row[0]: int(row[1]) for row in await session.execute(statement)}


@dataclass(frozen=True, slots=True)
class QuotaRecord:
    """What the quotas row of one FogQuota says: which object, its limits, who set them."""

    namespace: str
    name: str
    uid: str
    generation: int
    hard: QuotaAmounts
    actor: str


async def save(session: AsyncSession, record: QuotaRecord) -> QuotaAmounts:
    """Store the FogQuota's limits (history by trigger); return the namespace's usage.

    Nothing is written when nothing changed (no history row, no wakeup of waiting
    deployments), so the watch events of our own status patches and the periodic refresh cost
    a row lock of a few milliseconds and the usage read.
    """
    user_id = await queries.ensure_user(session, record.namespace)
    limits = dict(zip(QUOTA_LIMIT_COLUMNS, record.hard.values(), strict=True))
    values = {"k8s_uid": record.uid, "observed_generation": record.generation, **limits}
    statement = pg_insert(Quota).values(
        user_id=user_id, name=record.name, actor=record.actor, **values
    )
    excluded = statement.excluded
    changed = tuple_(*(getattr(Quota, key) for key in values)).is_distinct_from(
        tuple_(*(getattr(excluded, key) for key in values))
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Quota.user_id, Quota.name],
            set_={**values, "actor": record.actor, "updated_at": func.now()},
            where=changed,
        )
    )
    return await usage(session, user_id)


async def remove(session: AsyncSession, *, namespace: str, name: str, actor: str) -> None:
    """Forget a deleted FogQuota (history by trigger, with `actor`); waiting replicas wake."""
    tenant = select(User.id).where(User.name == namespace).scalar_subquery()
    where = and_(Quota.user_id == tenant, Quota.name == name)
    # The trigger records the row's actor: say who deleted it before it goes.
    await session.execute(update(Quota).where(where).values(actor=actor))
    await session.execute(delete(Quota).where(where))
