"""The node-lifecycle check: nodes whose heartbeats stopped go offline, their replicas fail.

One loop for all nodes (not a timer per node): every quarter of the grace period (at most once
a second) it asks the database to take nodes silent for longer than the grace offline and fail
their replicas with NodeLost (db/nodes.py mark_lost). The failures notify the deployments
concerned, whose reconciles place replacements elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from controller.db.errors import DatabaseUnavailableError, FencedError
from controller.db.store import Store
from controller.operator.supervisor import Clock, Progress

logger = logging.getLogger(__name__)

# The check runs this many times per grace period: a silent node is noticed at most a quarter
# of the grace late (within grace + 10 s at the default 40 s).
CHECKS_PER_GRACE = 4
# Never more often than once a second, however short the grace (tests use 3 s).
MIN_INTERVAL_SECONDS = 1.0


def check_interval(grace: timedelta) -> float:
    """Seconds between checks at this grace: a quarter of it, but at most once a second."""
    return max(MIN_INTERVAL_SECONDS, grace.total_seconds() / CHECKS_PER_GRACE)


class NodeLifecycle:
    """Marks silent nodes lost; one instance per operator."""

    def __init__(
        self,
        *,
        store: Store,
        grace: timedelta,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._grace = grace
        self._clock = clock  # the clock and sleep are parameters so tests can run the schedule
        self._sleep = sleep
        self.interval = check_interval(grace)

    async def check(self) -> list[str]:
        """One pass: the names of the nodes taken offline (none while the database is down)."""
        try:
            lost = await self._store.mark_lost_nodes(grace=self._grace)
        except (DatabaseUnavailableError, FencedError) as exc:
            # Down, or not the leader (any more): the next check, or the leader, will do it.
            logger.debug("node check skipped: %s", exc)
            return []
        for name in lost:
            logger.warning("node %s missed heartbeats for %s: offline", name, self._grace)
        return lost

    async def run(self, progress: Progress) -> None:
        """Check on a fixed schedule, forever: each check is due one interval after the last began.

        Not "check, then wait an interval": a check slowed by a busy database (up to 0.9 s behind
        a mass delete's transactions on this machine) would push every later one back, and a
        silent node was noticed up to interval + check time after its grace ran out. A check that
        overruns its interval is followed at once by the next, with no burst to catch up.
        """
        due = self._clock()
        while True:
            with progress.busy():
                await self.check()
            due = max(due + self.interval, self._clock())
            await self._sleep(due - self._clock())
