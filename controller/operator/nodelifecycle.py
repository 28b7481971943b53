"""The node-lifecycle check: nodes whose heartbeats stopped go offline, their replicas fail.

One loop for all nodes (not a timer per node): every quarter of the grace period it asks the
database to take nodes silent for longer than the grace offline and fail their replicas with
NodeLost (db/nodes.py mark_lost). The failures notify the deployments concerned, whose
reconciles place replacements elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from controller.db.errors import DatabaseUnavailableError, FencedError
from controller.db.store import Store
from controller.operator.supervisor import Progress

logger = logging.getLogger(__name__)

# The check runs this many times per grace period: a silent node is noticed at most a quarter
# of the grace late (within grace + 10 s at the default 40 s).
CHECKS_PER_GRACE = 4
# Never more often than once a second, however short the grace (tests use 3 s).
MIN_INTERVAL_SECONDS = 1.0


class NodeLifecycle:
    """Marks silent nodes lost; one instance per operator."""

    def __init__(self, *, store: Store, grace: timedelta) -> None:
        self._store = store
        self._grace = grace
        self.interval = max(MIN_INTERVAL_SECONDS, grace.total_seconds() / CHECKS_PER_GRACE)

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
        """Check, then wait, forever."""
        while True:
            with progress.busy():
                await self.check()
            await asyncio.sleep(self.interval)
