"""The history partitions' upkeep: months created ahead, and whole months dropped by a retention.

One loop, hourly (controller/db/partitions.py does the work in one transaction under an
advisory lock, so two operators, or an operator and `fogctl db upgrade`, never collide). With
leader election it runs only while this process leads, like every supervised loop. Partitions
exist three months ahead (model/partitions.py), so a pass missed for hours or days costs
nothing; a retention is off unless `--history-retention` asks for one, and then only whole
months whose every row is older than it are dropped, never single rows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from controller.db.errors import DatabaseUnavailableError, FencedError
from controller.db.partitions import Maintenance
from controller.db.store import Store
from controller.operator.metrics import Metrics
from controller.operator.supervisor import Progress

logger = logging.getLogger(__name__)

# An hour between passes: months are created three ahead and dropped a month at a time, so
# the loop has weeks of slack either way; hourly still notices a new month within the hour.
INTERVAL_SECONDS = 3600.0
# After a failed pass (the database down, or a table lock not granted within the lock
# timeout because writers held it): try again in a minute rather than an hour.
RETRY_SECONDS = 60.0


class HistoryPartitions:
    """Keeps the history tables' monthly partitions; one instance per operator."""

    def __init__(self, *, store: Store, retention: timedelta | None, metrics: Metrics) -> None:
        self._store = store
        self._retention = retention
        self._metrics = metrics

    async def maintain(self) -> Maintenance | None:
        """One pass: what it created and dropped, or None if it could not run now."""
        try:
            done = await self._store.maintain_history(retention=self._retention)
        except (DatabaseUnavailableError, FencedError) as exc:
            # Down, or not the leader (any more): the next pass, or the leader, will do it.
            logger.warning("history partitions not maintained this time: %s", exc)
            return None
        for partition in done.created:
            logger.info("history partition %s created", partition.name)
        for partition in done.dropped:
            logger.warning(
                "history partition %s dropped: every row in it is older than the retention (%s)",
                partition.name,
                self._retention,
            )
            self._metrics.history_partitions_dropped.labels(table=partition.table).inc()
        return done

    async def run(self, progress: Progress) -> None:
        """Maintain, then wait, forever."""
        while True:
            with progress.busy():
                done = await self.maintain()
            await asyncio.sleep(INTERVAL_SECONDS if done is not None else RETRY_SECONDS)
