"""Small reusable SELECTs over the seed's tables."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.orm.util import AliasedClass
from sqlalchemy.sql.elements import Cast
from sqlalchemy.sql.selectable import TableValuedAlias

from controller.db.tables import Base, Deployment, User


def live(
    user_id: uuid.UUID | ColumnElement[uuid.UUID] | QueryableAttribute[uuid.UUID],
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
    """The tenant row of a namespace, created on first use (`ensure_users` of one)."""
    return (await ensure_users(session, [namespace]))[namespace]


async def ensure_users(session: AsyncSession, namespaces: Sequence[str]) -> dict[str, uuid.UUID]:
    """The tenant rows of the namespaces, those missing created: their ids by namespace.

    One INSERT ... ON CONFLICT DO NOTHING for all, then a read of those it did not insert: an
    upsert that updates would lock the row and make every first reconcile of a namespace's
    deployments queue (and deadlock) on it. The rows go in in name order: an insert waits for
    another transaction's uncommitted insert of the same name, so two batches creating the
    same new namespaces in opposite orders would each wait for the other (a deadlock); in one
    order the second just waits for the first.
    """
    names = sorted(set(namespaces))
    wanted = unnested("wanted", {"name": (names, String())})
    inserted = await session.execute(
        pg_insert(User)
        .from_select(["name"], select(wanted.c.name).order_by(wanted.c.name))
        .on_conflict_do_nothing()
        .returning(User.name, User.id)
    )
    ids: dict[str, uuid.UUID] = {name: user_id for name, user_id in inserted}
    missing = [name for name in names if name not in ids]
    if missing:
        existing = await session.execute(
            select(User.name, User.id).where(
                User.name == any_(array_param("names", missing, String()))
            )
        )
        ids.update((name, user_id) for name, user_id in existing)
    return ids


def core(entity: type[Base]) -> Table:
    """The table of a mapped class, for Core statements on the agent API's hot path.

    A statement over table columns runs without SQLAlchemy's ORM layer (no ORM compile state,
    no loading of rows into entities): Session.execute hands it straight to the connection.
    """
    return typing.cast(Table, entity.__table__)


def array_param(name: str, items: list[Any], item_type: Any) -> BindParameter[Any]:
    """One array parameter for a whole batch (`= ANY(...)`, `unnest(...)`).

    A statement then has one shape for any batch size, so it is compiled and prepared once,
    where an IN list or VALUES rows would make a new statement per size.
    """
    return bindparam(name, value=items, type_=ARRAY(item_type))


def array_slot(name: str, item_type: Any) -> BindParameter[Any]:
    """An `array_param` without a value, for statements built once and executed with values.

    A statement built at import is compiled once and its cache key computed once (SQLAlchemy
    memoizes it on the object); building one per call spent more CPU on the construction and the
    key than on sending it (bench/statement_cost.py).
    """
    return bindparam(name, type_=ARRAY(item_type))


def bytea_array_slot(name: str) -> Cast[Any]:
    """A `bytea[]` parameter that travels as one text literal made by `bytea_array`.

    Untyped, so that it is sent as psycopg sends text, of unknown type, and PostgreSQL takes
    the parameter as the bytea[] it is cast to. Typed as text, the cast was a run-time
    expression the server evaluated again for every row it compared (113 ms for 500 tokens).
    """
    return cast(bindparam(name), ARRAY(BYTEA()))


def bytea_array(values: Sequence[bytes]) -> str:
    """`values` as a PostgreSQL array literal of bytea (hex input format), for `bytea_array_slot`.

    psycopg dumps a list of bytes element by element through Python regular expressions (12 µs
    each: 55% of the CPU of checking a stream's 500 node tokens); one join of hex digits costs a
    tenth of that. Hex digits need no quoting, so the literal is safe whatever the bytes.
    """
    return "{" + ",".join(f"\\\\x{value.hex()}" for value in values) + "}"


def unnested(name: str, columns: Mapping[str, tuple[list[Any], Any]]) -> TableValuedAlias:
    """A batch as rows of a table `name(column, ...)`: one array parameter per column, unnested.

    For the batched UPDATEs of agents' reports: as with `array_param`, the statement has one
    shape for any batch size, where a VALUES list would be a new statement per size (compiling
    one of hundreds of rows was a quarter of the agent's CPU). Each column travels as an array
    of its type and comes out as a column of that type.
    """
    return _unnest(
        name,
        {
            key: (array_param(f"{name}_{key}", values, type_), type_)
            for key, (values, type_) in columns.items()
        },
    )


def unnested_slots(name: str, columns: Mapping[str, Any]) -> TableValuedAlias:
    """`unnested` for a statement built once: `columns` maps each column to its type only.

    Execute it with `unnested_values(name, {column: values})` as its parameters.
    """
    return _unnest(
        name, {key: (array_slot(f"{name}_{key}", type_), type_) for key, type_ in columns.items()}
    )


def unnested_values(name: str, columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """The parameters of an `unnested_slots(name, ...)` statement: a list per column."""
    return {f"{name}_{key}": values for key, values in columns.items()}


def _unnest(name: str, columns: Mapping[str, tuple[BindParameter[Any], Any]]) -> TableValuedAlias:
    return (
        func.unnest(*(param for param, _ in columns.values()))
        .table_valued(*(column(key, type_) for key, (_, type_) in columns.items()))
        .render_derived(name=name)
    )
