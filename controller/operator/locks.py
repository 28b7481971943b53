"""One asyncio lock per object key, created on demand and dropped when nobody holds it.

The work queue already hands a key to one worker at a time; kopf's delete handler runs outside
it. Reconcile and finalize take turns per object under this lock, so no reconcile can recreate a
row after the finalizer soft-deleted it, and no status is written older than the one before.
(Across processes the database's advisory lock keeps the data right; the next reconcile fixes
a status written out of order.)
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
