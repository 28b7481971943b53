"""Reconcile a deployment when Postgres says it changed, and watch node heartbeats.

kopf wakes the operator on Kubernetes changes; agents change Postgres. Without this module an
agent's report would reach `.status` only at the next periodic resync. Here:

* a listener receives `NOTIFY fog_deployment_changed` (sent by a trigger when anyone but the
  operator changes a replica's status, see migration 0002) and queues that deployment;
* a small pool of workers takes queued deployments, reads the object from the API server and
  syncs it (the same path as kopf's handlers), so a report reaches the status in well under a
  second; a key queued again while waiting is not queued twice;
* requeues with a delay (the end of a restart backoff) go through the same queue;
* the node-lifecycle loop takes nodes whose heartbeat is older than the grace period offline
  and fails their replicas with NodeLost, which in turn notifies their deployments.

One task per concern, not one per object: the cost does not grow with the number of objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

import psycopg
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import nodes as db_nodes
from controller.db.errors import DatabaseUnavailableError
from controller.db.notify import CHANNEL
from controller.db.tables import Deployment, User
from controller.kube.client import KubeApiError, KubeClient
from controller.operator.reconciler import Reconciler
from controller.operator.sync import InvalidSpecError, Key, Requeue, Syncer

logger = logging.getLogger(__name__)

# Reconciles run concurrently for different deployments; four keep a 2-core machine busy
# without letting one burst of reports monopolise the database pool (10 + 10 connections).
WORKERS = 4
# After a failed sync (database or API down) the deployment is retried after this long;
# kopf's resync timer remains the safety net beyond that.
RETRY_SECONDS = 2.0
# Between attempts to re-establish the LISTEN connection after it dropped.
RECONNECT_SECONDS = 2.0
# The node-lifecycle check runs this many times per grace period: a silent node is noticed at
# most a quarter of the grace late (within grace + 10 s at the default 40 s).
CHECKS_PER_GRACE = 4


class Wakeups:
    """The operator's database-driven side: notifications, requeues, node heartbeats."""

    def __init__(
        self,
        *,
        url: URL,
        sessions: async_sessionmaker[AsyncSession],
        kube: KubeClient,
        reconciler: Reconciler,
        node_grace: timedelta,
    ) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._sessions = sessions
        self._kube = kube
        self._grace = node_grace
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._timers: set[asyncio.Task[None]] = set()
        self.syncer = Syncer(reconciler=reconciler, kube=kube, requeue=self.requeue)

    def enqueue(self, key: Key) -> None:
        """Sync `key` soon (once, however often it is asked for before a worker takes it)."""
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def requeue(self, request: Requeue) -> None:
        """Sync `request.key` after `request.delay` seconds."""

        async def later() -> None:
            await asyncio.sleep(request.delay)
            self.enqueue(request.key)

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def run(self) -> None:
        """Run every loop until cancelled."""
        loops = [self._listen(), self._watch_nodes(), *(self._work() for _ in range(WORKERS))]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in self._timers:
                task.cancel()

    async def _keys(self, ids: list[uuid.UUID]) -> list[Key]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(User.name, Deployment.name)
                .join(User, User.id == Deployment.user_id)
                .where(Deployment.id.in_(ids), Deployment.deleted_at.is_(None))
            )
            return [(namespace, name) for namespace, name in rows]

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}".encode())
                    logger.info("listening for agent reports on %s", CHANNEL)
                    async for notice in connection.notifies():
                        for key in await self._keys([uuid.UUID(notice.payload)]):
                            self.enqueue(key)
            except (psycopg.OperationalError, OperationalError, InterfaceError) as exc:
                logger.warning("notification connection lost (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self._sync(key)
            except (DatabaseUnavailableError, KubeApiError, OperationalError) as exc:
                logger.warning("%s/%s: %s; retrying in %.0f s", *key, exc, RETRY_SECONDS)
                self.requeue(Requeue(key=key, delay=RETRY_SECONDS))
            except InvalidSpecError:
                continue  # said so in the status; a spec edit brings kopf back
            finally:
                self._queue.task_done()

    async def _sync(self, key: Key) -> None:
        obj = await self._kube.get(*key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            self.syncer.forget(key)
            return  # gone or going: the finalizer owns it now
        await self.syncer.sync(obj, retry_delay=RETRY_SECONDS)

    async def _watch_nodes(self) -> None:
        interval = max(1.0, self._grace.total_seconds() / CHECKS_PER_GRACE)
        while True:
            with contextlib.suppress(OperationalError, InterfaceError):
                async with self._sessions() as session, session.begin():
                    lost = await db_nodes.mark_lost(session, grace=self._grace)
                for name in lost:
                    logger.warning("node %s missed heartbeats for %s: offline", name, self._grace)
            await asyncio.sleep(interval)
