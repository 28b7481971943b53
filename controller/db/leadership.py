"""Leadership epochs in PostgreSQL: how an elected operator fences its writes (migration 0005).

`advance` is called by a candidate that has just won the Kubernetes Lease: it takes the
election's advisory lock exclusively (waiting for every write transaction of the old leader
still in flight, which hold it shared), advances the epoch and returns it. `fence` is the first
statement of every write transaction of the leader: it fails with FencedError once the epoch has
moved on, and the transaction rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.errors import FencedError
from controller.db.tables import Leadership

# The prefix of the error fog_fence raises (migrations/versions/0005_leadership.py).
FENCED = "fog: fenced"
# Suggested wait before a fenced reconcile is tried again: by then this process has either
# noticed it lost the Lease and stopped, or won it back with a new epoch. client-go's retry
# period.
FENCED_RETRY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Fence:
    """What a leader's write transactions prove: this election, at this epoch."""

    election: str
    epoch: int


def _lock_key(election: str) -> object:
    return func.hashtextextended(f"fog-leadership/{election}", 0)


async def advance(session: AsyncSession, *, election: str, holder: str) -> Fence:
    """Start a new epoch of `election` held by `holder`; returns the fence for its writes."""
    await session.execute(select(func.pg_advisory_xact_lock(_lock_key(election))))
    epoch: int = (
        await session.execute(
            pg_insert(Leadership)
            .values(name=election, epoch=1, holder=holder)
            .on_conflict_do_update(
                index_elements=[Leadership.name],
                set_={
                    "epoch": Leadership.epoch + 1,
                    "holder": holder,
                    "acquired_at": func.now(),
                },
            )
            .returning(Leadership.epoch)
        )
    ).scalar_one()
    return Fence(election=election, epoch=epoch)


async def fence(session: AsyncSession, current: Fence) -> None:
    """FencedError (and a rolled-back transaction) unless `current` is still the epoch."""
    try:
        await session.execute(select(func.fog_fence(current.epoch, current.election)))
    except DBAPIError as exc:
        if FENCED in str(exc.orig):
            raise FencedError(
                f"not the leader any more (epoch {current.epoch} of {current.election} is over)",
                delay=FENCED_RETRY_SECONDS,
            ) from exc
        raise
