"""Waking the operator from the database side: the channel and the queries that use it.

Replica status changes notify through a trigger (migration 0002). Changes that create room (a
node registered or uncordoned) or ask for moves (a drain) change no replica themselves, so the
command that makes them notifies the deployments that care, in its own transaction (delivery
happens at commit). These are the project's only hand-written SQL outside migrations.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.errors import unavailable

logger = logging.getLogger(__name__)

CHANNEL = "fog_deployment_changed"
# What the agent API listens to (migration 0006): `assign:<node id>`, `revoke:<digest hex>`.
AGENT_CHANNEL = "fog_agent_events"

_NOTIFY = text("SELECT pg_notify(:channel, id::text) FROM unnest(CAST(:ids AS uuid[])) AS id")
_NOTIFY_WAITING = text(
    "SELECT pg_notify(:channel, waiting.deployment_id::text) FROM ("
    " SELECT DISTINCT deployment_id FROM deployment_replicas"
    " WHERE status = 'pending' AND node_id IS NULL) AS waiting"
)


async def notify(session: AsyncSession, deployment_ids: Sequence[uuid.UUID]) -> None:
    """Wake the reconcile of each deployment."""
    if deployment_ids:
        await session.execute(_NOTIFY, {"channel": CHANNEL, "ids": list(deployment_ids)})


async def notify_waiting(session: AsyncSession) -> None:
    """Wake every deployment with replicas waiting for a node: room may have appeared."""
    await session.execute(_NOTIFY_WAITING, {"channel": CHANNEL})


async def listen(
    url: URL, *, connected: Callable[[], None], channel: str = CHANNEL
) -> AsyncIterator[str]:
    """Yield the payload of every notification on `channel` until the connection drops.

    `connected` is called once LISTEN is in force: whatever was notified before that moment
    (while the connection was down) is lost, and the caller must look for it another way. A
    dropped or refused connection ends the iteration with DatabaseUnavailableError; the caller
    decides when to listen again. Payloads are passed on as sent: they are input, and the
    caller validates them.
    """
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
            await connection.execute(f"LISTEN {channel}".encode())
            logger.info("listening on %s", channel)
            connected()
            async for notice in connection.notifies():
                yield notice.payload
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise unavailable(exc) from exc
