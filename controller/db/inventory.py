"""What the health loop asks of PostgreSQL: does it answer, and how many replicas and nodes.

On a connection of its own (a pool of one), not the reconciles' pool: the readiness probe and
the metrics must say "the database answers" even while every pooled connection is busy with a
burst of reconciles, and must not take a connection a reconcile is waiting for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from controller.db.errors import unavailable
from controller.db.tables import Deployment, DeploymentReplica, Node

# The health loop asks every few seconds; a connect that takes longer than this is an outage
# to report, not a wait (the readiness probe must answer within kubelet's timeout).
CONNECT_TIMEOUT_SECONDS = 3


@dataclass(frozen=True, slots=True)
class Counts:
    """Replicas of live deployments by status, and nodes by status."""

    replicas: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)


class Inventory:
    """A one-connection window on the database for probes and gauges."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def connect(cls, url: URL) -> Inventory:
        """An inventory on its own one-connection engine for `url`."""
        return cls(
            create_async_engine(
                url,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,  # a restarted server leaves a dead pooled connection
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
        )

    async def close(self) -> None:
        """Close the connection."""
        await self._engine.dispose()

    async def ping(self) -> None:
        """Raise DatabaseUnavailableError unless the database answers a trivial query."""
        try:
            async with self._engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc

    async def counts(self) -> Counts:
        """Replicas and nodes by status: two grouped counts on the one connection.

        Replicas of soft-deleted deployments are history, not inventory: left out.
        """
        replicas = (
            select(DeploymentReplica.status, func.count())
            .join(Deployment, Deployment.id == DeploymentReplica.deployment_id)
            .where(Deployment.deleted_at.is_(None))
            .group_by(DeploymentReplica.status)
        )
        nodes = select(Node.status, func.count()).group_by(Node.status)
        try:
            async with self._engine.connect() as connection:
                by_replica = {str(s.value): n for s, n in await connection.execute(replicas)}
                by_node = {str(s.value): n for s, n in await connection.execute(nodes)}
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(exc) from exc
        return Counts(replicas=by_replica, nodes=by_node)
