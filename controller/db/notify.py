"""Waking the operator from the database side: the channel and the queries that use it.

Replica status changes notify through a trigger (migration 0002). Changes that create room (a
node registered or uncordoned) or ask for moves (a drain) change no replica themselves, so the
command that makes them notifies the deployments that care, in its own transaction (delivery
happens at commit). These are the project's only hand-written SQL outside migrations.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "fog_deployment_changed"

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
