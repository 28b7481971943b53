"""The async engine and session factory the operator and agents share.

psycopg 3 under SQLAlchemy's AsyncEngine keeps the event loop free: one blocking database call
would stall every kopf watch in the process.
"""

from __future__ import annotations

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Concurrent reconciles and finalizers each hold one connection for one short transaction. A
# burst of a thousand new objects kept more than 10 busy, and every overflow connection beyond
# the pool was closed and reopened (a profile showed the reconnects): 20 kept + 10 overflow
# stays well inside PostgreSQL's default 100 slots.
POOL_SIZE = 20
MAX_OVERFLOW = 10
# Transactions in flight at once; callers queue for a slot in-process (a semaphore) rather
# than time out waiting for a pooled connection.
MAX_CONCURRENT = POOL_SIZE + MAX_OVERFLOW
# A connection that cannot be made in 10 s means the database is down: fail the reconcile and
# let the work queue retry with backoff rather than hang a worker.
CONNECT_TIMEOUT_SECONDS = 10


def make_engine(url: URL, *, application_name: str | None = None) -> AsyncEngine:
    """An async engine for `url` with liveness checks on pooled connections.

    `application_name` names the connections in pg_stat_activity (how the benchmark counts
    what each process holds).
    """
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    if application_name:
        connect_args["application_name"] = application_name
    return create_async_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_pre_ping=True,  # a restarted server leaves dead pooled connections behind
        connect_args=connect_args,
    )


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (we never lazy-load)."""
    return async_sessionmaker(engine, expire_on_commit=False)
