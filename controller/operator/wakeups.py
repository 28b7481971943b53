"""The operator's work loop: every reason to reconcile, one queue, a few workers.

Reasons to reconcile a FogDeployment, each turned into `queue.add(key)`:

* kopf's watch shows the object new (created, or listed at startup) or with a new generation
  (`observe`, called by the one kopf spy handler);
* `NOTIFY fog_deployment_changed`, sent by a trigger when anyone but the operator changes a
  replica's status (migration 0002), so an agent's report reaches `.status` in well under a
  second, not at the next resync;
* a requeue at the end of a restart backoff, and retries with exponential backoff after an
  outage (the work queue counts failures per key);
* the resync: every `resync_seconds` each known object once, spread evenly over the interval,
  as a safety net for anything missed.

A small, fixed pool of workers takes keys from the queue and syncs them from the last observed
object (no API read). A node-lifecycle loop takes nodes whose heartbeat is older than the grace
period offline and fails their replicas with NodeLost, which in turn notifies their
deployments.

One task per concern, not one per object: the cost at rest does not grow with the number of
objects beyond the resync's steady trickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

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
from controller.operator.objects import Key, ObservedObjects
from controller.operator.reconciler import ConflictRetryError, Reconciler
from controller.operator.sync import InvalidSpecError, Syncer
from controller.operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# Reconciles in flight at once (one per key, different keys in parallel). Enough to hide
# database and API round trips on a small machine; fewer than the database pool (30
# connections), so notification lookups and the node loop always find a connection.
WORKERS = 16
# How soon the resync looks again when no object has been seen yet.
EMPTY_RESYNC_SECONDS = 5.0
# Between attempts to re-establish the LISTEN connection after it dropped.
RECONNECT_SECONDS = 2.0
# The node-lifecycle check runs this many times per grace period: a silent node is noticed at
# most a quarter of the grace late (within grace + 10 s at the default 40 s).
CHECKS_PER_GRACE = 4


class Wakeups:
    """The operator's work loop: observed objects, the work queue, its feeders and workers."""

    def __init__(
        self,
        *,
        url: URL,
        sessions: async_sessionmaker[AsyncSession],
        kube: KubeClient,
        reconciler: Reconciler,
        node_grace: timedelta,
        resync_seconds: float,
    ) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._sessions = sessions
        self._grace = node_grace
        self._resync_seconds = resync_seconds
        self.objects = ObservedObjects()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.syncer = Syncer(
            reconciler=reconciler,
            kube=kube,
            objects=self.objects,
            requeue=self.queue.add_after,
        )
        # Deployment ids notified and not yet resolved to keys, and the task resolving them.
        self._notified: set[uuid.UUID] = set()
        self._resolving: asyncio.Task[None] | None = None

    def observe(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        """Record a watch event; queue a reconcile if the object is new or its spec changed."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if self.objects.observe(body, deleted=deleted):
            self.queue.add(key)
        elif deleted:
            self.syncer.forget(key)
            self.queue.succeeded(key)

    async def run(self) -> None:
        """Run every loop until cancelled."""
        loops = [
            self._listen(),
            self._watch_nodes(),
            self._resync(),
            *(self._work() for _ in range(WORKERS)),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            self.queue.close()
            if self._resolving is not None:
                self._resolving.cancel()

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
                        self._notified.add(uuid.UUID(notice.payload))
                        if self._resolving is None or self._resolving.done():
                            self._resolving = asyncio.create_task(self._resolve())
            except (psycopg.OperationalError, OperationalError, InterfaceError) as exc:
                logger.warning("notification connection lost (%s); reconnecting", exc)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _resolve(self) -> None:
        """Queue the keys of the notified deployments: one query per batch, not per id.

        An agent's report transaction notifies every deployment it touched at once; the ids
        that arrive while a lookup runs are looked up together next.
        """
        await asyncio.sleep(0)  # let the notifications of the same delivery join this batch
        while self._notified:
            ids, self._notified = list(self._notified), set()
            try:
                keys = await self._keys(ids)
            except (OperationalError, InterfaceError) as exc:
                # The listener reconnects too; anything lost is repaired by the resync.
                logger.warning("looking up %d notified deployments failed: %s", len(ids), exc)
                return
            for key in keys:
                self.queue.add(key)

    async def _resync(self) -> None:
        while True:
            keys = self.objects.keys()
            if not keys:
                # Nothing seen yet (the watch's first listing may still be arriving); look
                # again soon rather than after a whole interval.
                await asyncio.sleep(min(self._resync_seconds, EMPTY_RESYNC_SECONDS))
                continue
            # Evenly spread: 5,000 objects every 10 min is one every 0.12 s, never a spike.
            pause = self._resync_seconds / len(keys)
            for key in keys:
                await asyncio.sleep(pause)
                self.queue.add(key)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.syncer.sync(key, retry_delay=self.queue.next_backoff(key))
            except (
                DatabaseUnavailableError,
                KubeApiError,
                OperationalError,
                ConflictRetryError,
            ) as exc:
                delay = self.queue.retry(key)
                logger.warning("%s/%s: %s; retrying in %.0f s", *key, exc, delay)
            except InvalidSpecError:
                self.queue.succeeded(key)  # said so in the status; a spec edit brings it back
            except Exception:
                # A bug, not an outage: say so loudly, keep the worker, and retry with backoff
                # (the next attempt may take another path, e.g. after a spec edit).
                delay = self.queue.retry(key)
                logger.exception("%s/%s: unexpected error; retrying in %.0f s", *key, delay)
            else:
                self.queue.succeeded(key)
            finally:
                self.queue.done(key)

    async def _watch_nodes(self) -> None:
        interval = max(1.0, self._grace.total_seconds() / CHECKS_PER_GRACE)
        while True:
            with contextlib.suppress(OperationalError, InterfaceError):
                async with self._sessions() as session, session.begin():
                    lost = await db_nodes.mark_lost(session, grace=self._grace)
                for name in lost:
                    logger.warning("node %s missed heartbeats for %s: offline", name, self._grace)
            await asyncio.sleep(interval)
