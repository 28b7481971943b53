"""What feeds the controller's queue: the watch, the database's notifications, the resync.

Each source turns its own kind of news into `enqueue(key)`:

* **the watch** (kopf's, through the one spy handler in handlers.py): `observe` records the
  object and queues it when it is new to us or its generation moved;
* **notifications**: `NOTIFY fog_deployment_changed` carries the id of a deployment whose
  replica an agent (or the node check) changed, so an agent's report reaches `.status` in well
  under a second; `listen` collects the ids, `resolve` turns them into keys in batches;
* **the resync**: every `resync_seconds`, each known object once, evenly spread in shares a
  second apart, as the safety net for anything missed (settled objects on every
  SETTLED_ROUNDS-th round only);
* **the first listing** (`take_listing`, once at start): every object that kopf's watch will
  show again, queued in one piece so that the first pass goes in full batches.

Notification payloads are input from the database channel, not trusted: anything that is not a
deployment id is logged and skipped (one malformed payload used to end the listener for good).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from controller.db.errors import DatabaseUnavailableError
from controller.operator.objects import Key, ObservedObjects
from controller.operator.supervisor import Progress

logger = logging.getLogger(__name__)

# Between attempts to re-establish the LISTEN connection, and to look up notified ids again,
# while the database is unavailable: quick enough that reports resume within seconds of its
# return, rare enough not to matter to a database that is starting up.
RECONNECT_SECONDS = 2.0
# How soon the resync looks again when no object has been seen yet (the watch's first listing
# may still be arriving).
EMPTY_RESYNC_SECONDS = 5.0
# The resync queues its objects in shares about this far apart: a share queued at once goes to
# one worker as one batch, where objects queued one at a time each went alone, at several times
# a batched key's cost (10,000 objects at rest cost 31% of a core that way). A second keeps the
# spread even: 50,000 objects every 10 min is a share of 84 a second, never a spike.
RESYNC_SHARE_SECONDS = 1.0
# Settled objects (ObservedObjects.settle: their last reconcile found nothing to do or wait for,
# and no news of them came since) are resynced on every 6th round only: an hour at the default
# 600 s. At rest nearly every object is settled, and reconciling each one every round cost
# about 1 ms of operator CPU apiece (7-9 % of a core at 20,000 objects, 83 a second; the
# 50,000-object target is 5 %). Any news unsettles an object at once: the watch (a new
# generation), a notification (an agent's report, the node check), a lost LISTEN connection or
# a new leader (every object). What no news announces, such as a status edited by hand or usage
# that moved by half, waits for the round that takes every object.
SETTLED_ROUNDS = 6


class Listen(Protocol):
    """What the notification source listens with (db/notify.py `listen`, bound to a URL)."""

    def __call__(self, *, connected: Callable[[], None]) -> AsyncIterator[str]:
        """Open one LISTEN connection, call `connected` once listening, yield payloads."""
        ...


KeysOf = Callable[[Sequence[uuid.UUID]], Awaitable[list[Key]]]


class Sources:
    """The watch's record, the notification listener and the resync, feeding one queue."""

    def __init__(
        self,
        *,
        objects: ObservedObjects,
        enqueue: Callable[[Key], None],
        forget: Callable[[Key], None],
        listen: Listen,
        keys_of: KeysOf,
        resync_seconds: float,
        reported: Callable[[Key, float], None] | None = None,
    ) -> None:
        self.objects = objects
        self._enqueue = enqueue
        # Told of each notified key with when its notification arrived (monotonic), for the
        # report-to-status latency; plain queueing when nobody measures it.
        self._reported = reported or (lambda key, _at: enqueue(key))
        self._forget = forget
        self._listen = listen
        self._keys_of = keys_of
        self._resync_seconds = resync_seconds
        # Deployment ids notified and not yet resolved to keys; `resolve` waits on the event.
        self._notified: set[uuid.UUID] = set()
        self._notified_at: float | None = None  # when the oldest of them arrived
        self._pending = asyncio.Event()
        self._connections = 0
        # Set once LISTEN is first in force: the controller's workers start then (controller.py).
        self.listening = asyncio.Event()

    def observe(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Record a watch event; queue a reconcile if the object is new or its spec changed.

        True if it was queued.
        """
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if self.objects.observe(body, deleted=deleted):
            self._enqueue(key)
            return True
        if deleted:
            self._forget(key)
        return False

    async def take_listing(
        self, pages: AsyncIterable[Sequence[Mapping[str, Any]]], *, finalizer: str
    ) -> int:
        """Record and queue the listed objects that carry `finalizer`; how many were queued.

        At a restart kopf's watch lists every object too, but hands them over one at a time
        through its per-object workers, and the controller's workers took the few keys queued
        when each came: 6.4 keys a batch in a 3,000-object restart, where a batch shares its
        statements among up to 32 (docs/design/performance.md). Listed here before the workers
        start, the first pass goes in full batches, as controller-runtime's workers start once
        its informer's cache has synced. When kopf's listing comes, each object is known at the
        same generation and costs no second reconcile.

        Only objects with our finalizer are taken: such an object cannot vanish unseen, since
        its deletion waits for kopf's handler, so kopf's watch shows every change or deletion
        of it from here on. An object without one (created while the operator was down) could
        be deleted before kopf's listing and never be shown to us again; it waits for that
        listing, which also gives it the finalizer.
        """
        queued = 0
        async for page in pages:
            for body in page:
                if finalizer in (body["metadata"].get("finalizers") or ()):
                    queued += self.observe(body, deleted=False)
        return queued

    def notified(self, payload: str) -> None:
        """Take one notification's payload: a deployment id, or garbage to log and skip."""
        try:
            deployment_id = uuid.UUID(payload)
        except ValueError:
            logger.warning("ignoring a notification that is not a deployment id: %.80r", payload)
            return
        self._notified.add(deployment_id)
        if self._notified_at is None:
            self._notified_at = time.monotonic()
        self._pending.set()

    def connected(self) -> None:
        """LISTEN is in force (again): requeue every object known so far.

        Notifications sent while the connection was down are lost (PostgreSQL keeps none for a
        listener that is not there), so an agent's report from those seconds would wait for
        the resync. Like an informer's relist after its watch broke, every known object is
        reconciled once; one that did not change costs three statements. The first connection
        too: the workers start beside the listener, and with the database restarting as the
        operator started, an object's reconcile placed replicas whose report came before the
        first LISTEN succeeded; it waited for the resync (the fault suite's database restart,
        once in a CI run). The workers wait for the first connection (a few seconds at most), so
        the keys queued by the listing at start are still queued, and cost nothing more.
        """
        self._connections += 1
        count = self.requeue_all()
        self.listening.set()
        if self._connections > 1:
            logger.info("notifications resumed: reconciling all %d objects once", count)

    def requeue_all(self) -> int:
        """Queue every observed object once (after missed notifications, or a new leader)."""
        self.objects.unsettle_all()
        keys = self.objects.keys()
        for key in keys:
            self._enqueue(key)
        return len(keys)

    async def listen(self, progress: Progress) -> None:
        """Listen for notifications for as long as the operator runs; reconnect after a drop."""
        while True:
            try:
                async for payload in self._listen(connected=self.connected):
                    self.notified(payload)
                    progress.beat()
            except DatabaseUnavailableError as exc:
                logger.warning("notification connection lost (%s); reconnecting", exc)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def resolve(self, progress: Progress) -> None:
        """Queue the keys of the notified deployments: one query per batch, not per id.

        An agent's report transaction notifies every deployment it touched at once; the ids
        that arrive while a lookup runs are looked up together next.
        """
        while True:
            await self._pending.wait()
            await asyncio.sleep(0)  # let the notifications of the same delivery join the batch
            self._pending.clear()
            ids, self._notified = list(self._notified), set()
            at, self._notified_at = self._notified_at or time.monotonic(), None
            try:
                with progress.busy():
                    for key in await self._keys_of(ids):
                        self.objects.settle(key, settled=False)
                        self._reported(key, at)
            except DatabaseUnavailableError as exc:
                logger.warning("looking up %d notified deployments failed: %s", len(ids), exc)
                self._keep(ids, at)
                await asyncio.sleep(RECONNECT_SECONDS)
            except Exception:
                # Unexpected: the supervisor restarts this loop, which must still find the
                # ids (queueing some twice is harmless; losing one is a missed report).
                self._keep(ids, at)
                raise

    def _keep(self, ids: list[uuid.UUID], at: float) -> None:
        """Put ids back for the next lookup, with when the oldest was notified."""
        self._notified.update(ids)
        self._notified_at = min(at, self._notified_at or at)
        self._pending.set()

    async def resync(self, progress: Progress) -> None:
        """Queue the known objects once per interval, evenly spread in shares, forever.

        Every SETTLED_ROUNDS-th round takes every object; the others take those not settled
        when their share's turn comes (settled since the round began counts: the round that
        starts with the operator finds every object unsettled, and the first pass settles
        them within a minute or two). The count starts as if a full round had just ended,
        because one had: at start the first listing queues every object. Taking them all again
        would repeat that pass right after every restart, at 50,000 objects 10 minutes of 83
        reconciles a second.
        """
        rounds = 1
        while True:
            if not len(self.objects):
                await asyncio.sleep(min(self._resync_seconds, EMPTY_RESYNC_SECONDS))
                continue
            every = rounds % SETTLED_ROUNDS == 0
            rounds += 1
            keys = self.objects.keys() if every else self.objects.unsettled_keys()
            if not keys:
                await asyncio.sleep(self._resync_seconds)
                progress.beat()
                continue
            shares = max(1, int(self._resync_seconds / RESYNC_SHARE_SECONDS))
            size = math.ceil(len(keys) / shares)
            pause = self._resync_seconds * size / len(keys)
            for start in range(0, len(keys), size):
                await asyncio.sleep(pause)
                for key in keys[start : start + size]:
                    if every or not self.objects.is_settled(key):
                        self._enqueue(key)
                progress.beat()
