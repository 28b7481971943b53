"""The operator's database, behind one object: transactions, lookups and notifications.

Everything the operator asks of PostgreSQL goes through `Store`, so the operator never holds a
SQLAlchemy session or sees a driver exception: a reconcile gets a `Transaction` (the
deployment functions bound to one open transaction), and failures come out already classified
by the taxonomy of controller/errors.py:

* a conflict a fresh snapshot resolves (a replica changed under the plan, an over-commit the
  node CHECK constraints refused, a deadlock or serialization failure) is retried here at once,
  a few times with jitter, then raised as `WriteConflictError` (retryable);
* a lost or refused connection is `DatabaseUnavailableError` (retryable);
* with leader election, a write by a process that is not the current leader is `FencedError`
  (retryable; see db/leadership.py);
* anything else is a bug and propagates unchanged.

Notifications are read by `notify.listen`, on a connection of their own.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import psycopg
import psycopg.errors
from sqlalchemy import select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import deployments, leadership, partitions, quotas, revisions
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db.errors import FencedError, WriteConflictError, unavailable
from controller.db.tables import Deployment, User
from controller.model.quota import QuotaAmounts

T = TypeVar("T")

# A conflict means another writer moved first; re-planning from a fresh snapshot almost
# always succeeds at once. After this many in a row something is hot: let the caller back off.
MAX_CONFLICT_ATTEMPTS = 5
# Random pause before a retry, growing with each try: up to 20 ms, 40 ms ... (a reconcile's
# transaction takes a few milliseconds, so this spreads colliding writers apart).
CONFLICT_JITTER_SECONDS = 0.02
# Over-commit refused by the node CHECK constraints: another deployment took the room.
OVERCOMMIT_CONSTRAINT_PREFIX = "ck_nodes_"
# Pooled connections that reconciles and finalizers never take, kept for the control loops
# (the node check, notification lookups, the database probe): kopf runs every delete handler
# at once, and a mass delete must not make a silent node go offline late.
CONTROL_RESERVE = 4


def is_conflict(error: DBAPIError) -> bool:
    """Whether a fresh snapshot resolves this error: over-commit, deadlock, serialization."""
    original = error.orig
    if isinstance(error, IntegrityError):
        constraint = getattr(getattr(original, "diag", None), "constraint_name", "") or ""
        return constraint.startswith(OVERCOMMIT_CONSTRAINT_PREFIX)
    return isinstance(
        original, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    )


class Transaction:
    """One open transaction of a reconcile: the deployment functions bound to its session.

    The operator calls these without ever holding the session itself; each is the function
    of the same name in deployments.py (revisions.py's `known_many` and `record_many` for the
    revision rows, and its `stamp` of a promotion or an abort, issue 16 item 5) with the
    session filled in. The `_many` ones take a batch of deployments (issue 15 item 1) in a
    fixed number of statements; a single reconcile passes a batch of one.
    """

    __slots__ = (
        "apply_many",
        "candidate_nodes",
        "observe",
        "observe_many",
        "quota_gate",
        "quota_gates",
        "record_revisions",
        "revisions",
        "soft_delete",
        "stamp_revision",
    )

    def __init__(self, session: AsyncSession) -> None:
        self.observe = functools.partial(deployments.observe, session)
        self.observe_many = functools.partial(deployments.observe_many, session)
        self.quota_gate = functools.partial(deployments.quota_gate, session)
        self.quota_gates = functools.partial(deployments.quota_gates, session)
        self.candidate_nodes = functools.partial(deployments.candidate_nodes, session)
        self.apply_many = functools.partial(deployments.apply_many, session)
        self.soft_delete = functools.partial(deployments.soft_delete, session)
        self.revisions = functools.partial(revisions.known_many, session)
        self.record_revisions = functools.partial(revisions.record_many, session)
        self.stamp_revision = functools.partial(revisions.stamp, session)


class Store:
    """The operator's database: one pool, one bound on concurrent transactions."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, engine: AsyncEngine | None = None
    ) -> None:
        self._sessions = sessions
        self._engine = engine  # ours to dispose of, when we made it
        # Reconciles come from a fixed pool of workers, but kopf runs the delete handler of
        # every object at once: deleting thousands must queue here, not in the connection
        # pool, whose wait times out, and must leave the control loops their connections.
        self._slots = asyncio.Semaphore(db_engine.MAX_CONCURRENT - CONTROL_RESERVE)
        # With leader election, every write transaction proves the current epoch (and none is
        # allowed before this process has won one); without it, nothing is fenced.
        self._fencing = False
        self._fence: leadership.Fence | None = None

    def elect(self) -> None:
        """Fence every write from now on: refused until `lead`, and after `step_down`."""
        self._fencing = True

    async def lead(self, *, election: str, holder: str) -> int:
        """Won the Lease: advance the election's epoch and write under it from now on."""
        try:
            async with self._sessions() as session, session.begin():
                self._fence = await leadership.advance(session, election=election, holder=holder)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc
        return self._fence.epoch

    def step_down(self) -> None:
        """The Lease is lost: refuse every write from now on, without asking the database."""
        self._fence = None

    @property
    def writable(self) -> bool:
        """Whether writes may go through: no election, or this process leads."""
        return not self._fencing or self._fence is not None

    async def _prove_leadership(self, session: AsyncSession) -> None:
        if not self._fencing:
            return
        if self._fence is None:
            raise FencedError("not the leader", delay=leadership.FENCED_RETRY_SECONDS)
        await leadership.fence(session, self._fence)

    @classmethod
    def connect(cls, url: URL) -> Store:
        """A store on a new engine for `url`; `close()` releases it."""
        engine = db_engine.make_engine(url)
        return cls(db_engine.make_sessions(engine), engine=engine)

    async def close(self) -> None:
        """Close the pool's connections, if the engine is ours."""
        if self._engine is not None:
            await self._engine.dispose()

    async def transaction(
        self,
        work: Callable[[Transaction], Awaitable[T]],
        *,
        attempts: int = MAX_CONFLICT_ATTEMPTS,
    ) -> T:
        """Run `work` in one transaction; re-run it from scratch after a conflict.

        `work` must be safe to repeat: it is called again with a fresh transaction when the
        last one rolled back on a conflict, up to `attempts` times in all (a batched reconcile
        passes 1: its keys fall back to one transaction each instead).
        """
        for tries in range(1, attempts + 1):
            try:
                async with self._slots, self._sessions() as session, session.begin():
                    await self._prove_leadership(session)
                    return await work(Transaction(session))
            except deployments.ConflictError:
                pass
            except DBAPIError as exc:
                if not is_conflict(exc):
                    if isinstance(exc, OperationalError | InterfaceError):
                        raise unavailable(exc) from exc
                    raise
            if tries == attempts:
                break
            # Writers that collided would collide again if they retried in step.
            await asyncio.sleep(random.uniform(0, CONFLICT_JITTER_SECONDS * tries))  # noqa: S311
        raise WriteConflictError(f"{attempts} conflicting writes in a row")

    async def save_quota(self, record: quotas.QuotaRecord) -> QuotaAmounts:
        """Store a FogQuota's limits; return its namespace's usage (quotas.save)."""
        return await self._write(functools.partial(quotas.save, record=record))

    async def remove_quota(self, *, namespace: str, name: str, actor: str) -> None:
        """Forget a deleted FogQuota (quotas.remove)."""
        await self._write(
            functools.partial(quotas.remove, namespace=namespace, name=name, actor=actor)
        )

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One short fenced write outside a reconcile, its outage classified."""
        try:
            async with self._slots, self._sessions() as session, session.begin():
                await self._prove_leadership(session)
                return await work(session)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc

    async def deployment_keys(self, ids: Sequence[uuid.UUID]) -> list[tuple[str, str]]:
        """(namespace, name) of each live deployment among `ids`: one query for the batch."""
        try:
            async with self._sessions() as session:
                rows = await session.execute(
                    select(User.name, Deployment.name)
                    .join(User, User.id == Deployment.user_id)
                    .where(Deployment.id.in_(ids), Deployment.deleted_at.is_(None))
                )
                return [(namespace, name) for namespace, name in rows]
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc

    async def mark_lost_nodes(self, *, grace: timedelta) -> list[str]:
        """Take silent nodes offline and fail their replicas (nodes.mark_lost)."""
        try:
            async with self._sessions() as session, session.begin():
                await self._prove_leadership(session)
                return await db_nodes.mark_lost(session, grace=grace)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc

    async def maintain_history(self, *, retention: timedelta | None) -> partitions.Maintenance:
        """Create history partitions ahead; drop whole months past `retention` (partitions.py)."""
        try:
            async with self._sessions() as session, session.begin():
                await self._prove_leadership(session)
                return await partitions.maintain(session, retention=retention)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc

    async def ping(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers a trivial query."""
        try:
            async with self._sessions() as session:
                await session.execute(text("SELECT 1"))
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc
