"""The history tables' monthly partitions: created ahead, and dropped whole by a retention.

Which partitions are wanted and which have expired is decided in controller/model/partitions.py;
this module only lists, creates and drops them, in one transaction under one advisory lock, so
that two operators (or an operator and `fogctl db upgrade`) never race on the catalogue: the
second waits, then finds the work done (`CREATE TABLE IF NOT EXISTS`, `DROP TABLE IF EXISTS`).

Both statements take an ACCESS EXCLUSIVE lock on the parent table for an instant, and wait
behind transactions that are writing history (every status change writes a row). A reconcile's
transaction lasts milliseconds; `lock_timeout` bounds our wait so that writers never queue
behind us for long: if it runs out, the work is retried at the next pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from controller.model.partitions import HISTORY_TABLES, Partition, expired, wanted

# The advisory lock that serialises partition maintenance (any constant: "foghist" in hex).
PARTITION_LOCK_KEY = 0x666F6768697374
# How long a create or drop may wait for the parent table's lock before giving up until the
# next pass: well above a reconcile's transaction (milliseconds), well below anything a
# writer queued behind us would notice as an outage.
LOCK_TIMEOUT = "5s"

_PARTITIONS = text(
    "SELECT child.relname FROM pg_inherits i"
    " JOIN pg_class parent ON parent.oid = i.inhparent"
    " JOIN pg_class child ON child.oid = i.inhrelid"
    " WHERE parent.relname = ANY(:tables) ORDER BY child.relname"
).bindparams(tables=list(HISTORY_TABLES))


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one pass did: the partitions it created and the ones it dropped."""

    created: list[Partition]
    dropped: list[Partition]


async def existing(session: AsyncSession) -> list[str]:
    """The names of every partition of the history tables, ours or not."""
    return list((await session.scalars(_PARTITIONS)).all())


def create_statement(partition: Partition) -> str:
    """The DDL that creates one month's partition when it is missing.

    Bounds are literals (DDL takes no bind parameters) built from integers, never from input.
    """
    month = partition.month
    return (
        f'CREATE TABLE IF NOT EXISTS "{partition.name}" PARTITION OF "{partition.table}"'
        f" FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    )


async def maintain(
    session: AsyncSession, *, retention: timedelta | None, now: datetime | None = None
) -> Maintenance:
    """Create this month's partitions and the ones ahead; drop those a retention let expire.

    `now` is the database's clock unless given (tests move it): `changed_at` is written by
    that clock, so months are counted by it, whatever the operator's own clock says.
    Idempotent: a second pass (or a second operator, after waiting for the lock) does nothing.
    Call inside a transaction; it commits with it.
    """
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    locked = await session.execute(
        select(func.pg_advisory_xact_lock(PARTITION_LOCK_KEY), func.now())
    )
    at = now or locked.one()[1]
    present = set(await existing(session))
    created = [p for p in wanted(at) if p.name not in present]
    for partition in created:
        await session.execute(text(create_statement(partition)))
    dropped = [] if retention is None else expired(sorted(present), at, retention)
    for partition in dropped:
        # A whole month at once: no row-by-row DELETE, no dead tuples, no vacuum debt.
        await session.execute(text(f'DROP TABLE IF EXISTS "{partition.name}"'))
    return Maintenance(created=created, dropped=dropped)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: compare the partitioned tables, not each partition.

    A partition is not in the models (it is created by date, not declared); its columns and
    indexes are its parent's, which the comparison already covers.
    """
    return not (type_ == "table" and name is not None and Partition.parse(name) is not None)
