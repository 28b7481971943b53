"""Small reusable SELECTs over the seed's tables."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import AliasedClass
from sqlalchemy.sql.selectable import TableValuedAlias

from controller.db.tables import Deployment, User


def live(
    user_id: uuid.UUID | ColumnElement[uuid.UUID],
    deployment: type[Deployment] | AliasedClass[Deployment] = Deployment,
) -> ColumnElement[bool]:
    """Whether `deployment` is one of the tenant's that are not soft-deleted.

    Served by the `(user_id, deleted_at)` index; one definition, so that what the CLI lists and
    what a quota counts as a live deployment cannot drift apart.
    """
    return and_(deployment.user_id == user_id, deployment.deleted_at.is_(None))


def active_deployments(user_id: uuid.UUID) -> Select[Deployment]:
    """A tenant's deployments that are not soft-deleted, by name."""
    return select(Deployment).where(live(user_id)).order_by(Deployment.name)


async def ensure_user(session: AsyncSession, namespace: str) -> uuid.UUID:
    """The tenant row of a namespace, created on first use.

    ON CONFLICT DO NOTHING, then a read: an upsert that updates would lock the row and make
    every first reconcile of a namespace's deployments queue (and deadlock) on it.
    """
    inserted: uuid.UUID | None = await session.scalar(
        pg_insert(User).values(name=namespace).on_conflict_do_nothing().returning(User.id)
    )
    if inserted is not None:
        return inserted
    existing: uuid.UUID = (
        await session.execute(select(User.id).where(User.name == namespace))
    ).scalar_one()
    return existing


def array_param(name: str, items: list[Any], item_type: Any) -> BindParameter[Any]:
    """One array parameter for a whole batch (`= ANY(...)`, `unnest(...)`).

    A statement then has one shape for any batch size, so it is compiled and prepared once,
    where an IN list or VALUES rows would make a new statement per size.
    """
    return bindparam(name, value=items, type_=ARRAY(item_type))


def unnested(name: str, columns: Mapping[str, tuple[list[Any], Any]]) -> TableValuedAlias:
    """A batch as rows of a table `name(column, ...)`: one array parameter per column, unnested.

    For the batched UPDATEs of agents' reports: as with `array_param`, the statement has one
    shape for any batch size, where a VALUES list would be a new statement per size (compiling
    one of hundreds of rows was a quarter of the agent's CPU). Each column travels as an array
    of its type and comes out as a column of that type.
    """
    return (
        func.unnest(
            *(
                array_param(f"{name}_{key}", values, type_)
                for key, (values, type_) in columns.items()
            )
        )
        .table_valued(*(column(key, type_) for key, (_, type_) in columns.items()))
        .render_derived(name=name)
    )
