"""One asyncio lock per object key, created on demand and dropped when nobody holds it.

kopf handlers, database wakeups and backoff requeues may reconcile the same FogDeployment at
the same moment; within one operator process they take turns per object, so the status each
writes is never older than the one before it. (Across processes the database's advisory lock
keeps the data right; the next reconcile fixes a status written out of order.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedLocks:
    """Per-key mutual exclusion with no growth: a key's lock lives while it is wanted."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._waiting: dict[Hashable, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of `key` for the duration of the block."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[key] -= 1
            if self._waiting[key] == 0:
                del self._waiting[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
