"""A work queue of object keys, as client-go's: de-duplicated, one worker per key, backoff.

Every reason to reconcile a FogDeployment (a watch event, an agent's report, a requeue at the
end of a restart backoff, the periodic resync, a retry after an outage) becomes `add(key)`.
The queue guarantees what a level-triggered reconcile needs and nothing more:

* a key added many times before a worker takes it is reconciled once (a burst of reports for
  one deployment costs one reconcile);
* a key is never handed to two workers at once; added while being processed, it is handed out
  again when the current worker is done, so the last change is never missed;
* failures back off per key, exponentially, and one success resets the count;
* on shutdown (SIGTERM) it hands out no more keys and tells when the keys being worked on are
  done (client-go's ShutDownWithDrain), so that no reconcile is cut off mid-way.

It reports what it does to a `QueueObserver` (metrics.py exports client-go's queue metrics
from these calls); the default one does nothing.

Pure asyncio: no I/O, so the semantics are unit-tested without a cluster or a database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

# Retries after failures wait 1, 2, 4 ... seconds, never more than a minute apart: recovery
# from an outage is noticed quickly, yet thousands of objects do not flood a sick database.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


def backoff(failures: int) -> float:
    """Seconds to wait before retrying after `failures` consecutive failures (1 or more)."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, failures - 1)))


class QueueObserver(Protocol[K_contra]):
    """Told of every move of a key, as client-go's queue tells its metrics provider."""

    def add(self, key: K_contra) -> None:
        """`key` became dirty."""

    def get(self, key: K_contra) -> None:
        """A worker took `key`."""

    def done(self, key: K_contra) -> None:
        """The worker is done with `key`."""

    def retry(self) -> None:
        """A key was added again after a failure."""


class Unobserved:
    """The observer that ignores everything (unit tests, tools)."""

    def add(self, key: Hashable) -> None:
        """Ignore."""

    def get(self, key: Hashable) -> None:
        """Ignore."""

    def done(self, key: Hashable) -> None:
        """Ignore."""

    def retry(self) -> None:
        """Ignore."""


class ShutDownError(Exception):
    """The queue is shutting down: it hands out no more keys."""


class WorkQueue(Generic[K]):
    """Keys waiting for a worker, keys being worked on, and per-key failure counts."""

    def __init__(self, observer: QueueObserver[K] | None = None) -> None:
        self._observer: QueueObserver[K] = Unobserved() if observer is None else observer
        self._shutting_down = False
        self._drained = asyncio.Event()
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()  # added and not yet handed out
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        # At most one pending delayed add per key, the earliest (client-go's delaying queue):
        # a key requeued by every reconcile of a long backoff must not collect timers.
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def add(self, key: K) -> None:
        """Reconcile `key` soon: once, however often it is added before a worker takes it."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._observer.add(key)
        if key not in self._processing:
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` once `delay` seconds have passed, unless an earlier add is pending."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return  # the earlier one adds it anyway
            pending.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        del self._timers[key]
        self.add(key)

    def cancel_after(self, key: K) -> None:
        """Drop `key`'s pending delayed add, if any: a later reconcile made it needless."""
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending.cancel()

    def pending_timers(self) -> int:
        """Delayed adds waiting to fire (at most one per key)."""
        return len(self._timers)

    def next_backoff(self, key: K) -> float:
        """The delay `retry(key)` would choose now (for messages that announce it)."""
        return backoff(self._failures.get(key, 0) + 1)

    def retry(self, key: K, *, delay: float | None = None) -> float:
        """Add `key` again after its backoff (or `delay`, if given); returns the delay chosen.

        Either way the failure counts toward the key's backoff.
        """
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        chosen = backoff(failures) if delay is None else delay
        self._observer.retry()
        self.add_after(key, chosen)
        return chosen

    def succeeded(self, key: K) -> None:
        """Forget `key`'s failures: the next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key to work on; call `done(key)` when finished with it.

        ShutDownError once `shut_down` was called, however long the caller waited.
        """
        return (await self.get_batch(1))[0]

    async def get_batch(self, limit: int) -> list[K]:
        """Wait for one key, then take every further ready key, `limit` in all at most.

        Each is handed out as `get` hands out one (never to two workers at once); call
        `done(key)` for each. A batch is reconciled in one transaction (issue 15 item 1).
        ShutDownError once `shut_down` was called, however long the caller waited.
        """
        if self._shutting_down:
            raise ShutDownError
        first = await self._ready.get()
        if self._shutting_down:
            self._ready.put_nowait(first)  # left for nobody, but the queue stays consistent
            raise ShutDownError
        keys = [first]
        while len(keys) < limit and not self._ready.empty():
            keys.append(self._ready.get_nowait())
        for key in keys:
            self._dirty.discard(key)
            self._processing.add(key)
            self._observer.get(key)
        return keys

    def done(self, key: K) -> None:
        """The worker is finished with `key`; hand it out again if it was added meanwhile."""
        self._processing.discard(key)
        self._observer.done(key)
        if key in self._dirty:
            self._ready.put_nowait(key)
        if self._shutting_down and not self._processing:
            self._drained.set()

    def in_flight(self) -> int:
        """Keys handed out and not yet done."""
        return len(self._processing)

    def shut_down(self) -> None:
        """Hand out no more keys; `drained()` returns once the keys in flight are done."""
        self._shutting_down = True
        if not self._processing:
            self._drained.set()

    async def drained(self) -> None:
        """Wait until, after `shut_down`, every key handed out is done."""
        await self._drained.wait()

    def __len__(self) -> int:
        """Keys waiting for a worker."""
        return self._ready.qsize()

    def close(self) -> None:
        """Cancel pending delayed adds."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
