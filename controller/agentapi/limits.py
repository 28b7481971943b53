"""Per-node rate limits: a token bucket for each credential, in memory.

An agent that misbehaves (a loop gone wrong, a stolen token replayed) must not take the
database from everyone else. Each node token gets RATE requests per second on average and
BURST at once; beyond that the API answers 429 with Retry-After, before touching the database.
Buckets live per process: with several agent-API replicas a node's share multiplies by their
number, which is still a bound, and needs no shared state.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# A well-behaved agent sends a heartbeat every few seconds, a long-poll at a time and a report
# batch per change: a few requests per second. Ten per second with bursts of fifty leaves room
# for a restart's catching up and stops a runaway loop within a second.
RATE_PER_SECOND = 10.0
BURST = 50.0
# Failed authentications per client address: a mistyped token is retried a few times, a
# guessing loop thousands; two a second with twenty at once stops the loop before each guess
# costs a database lookup, and lets a fleet behind one NAT recover from a bad rollout.
FAILED_AUTH_RATE_PER_SECOND = 2.0
FAILED_AUTH_BURST = 20.0
# Buckets of tokens not seen lately are dropped beyond this many; 100,000 nodes' buckets are a
# few tens of MB, and a flood of random tokens cannot grow the table past it.
MAX_BUCKETS = 100_000


class RateLimiter:
    """Token buckets keyed by credential digest."""

    def __init__(
        self,
        *,
        rate: float = RATE_PER_SECOND,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def _level(self, key: bytes, now: float) -> float:
        level, last = self._buckets.pop(key, (self._burst, now))
        return min(self._burst, level + (now - last) * self._rate)

    def exhausted(self, key: bytes) -> bool:
        """Whether `key`'s bucket is empty now (nothing is taken)."""
        now = self._clock()
        level = self._level(key, now)
        self._store(key, level, now)
        return level < 1

    def allow(self, key: bytes, cost: float = 1.0) -> float:
        """Take `cost` from `key`'s bucket: 0 if allowed, else seconds until it would be."""
        return self.allow_all([key], cost)

    def allow_all(self, keys: list[bytes], cost: float = 1.0) -> float:
        """Take `cost` from each of `keys`' buckets if every one has it: 0, else the longest wait.

        An op that names many nodes (a stream's heartbeat or report batch) is allowed or
        refused whole, as one request is: a refused op takes nothing, so an agent that retries
        it after the wait is not charged twice for the nodes that had room.
        """
        now = self._clock()
        levels = {key: self._level(key, now) for key in keys}
        wait = max(((cost - level) / self._rate for level in levels.values()), default=0.0)
        for key, level in levels.items():
            self._store(key, level if wait > 0 else level - cost, now)
        return max(wait, 0.0)

    def _store(self, key: bytes, level: float, now: float) -> None:
        self._buckets[key] = (level, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
