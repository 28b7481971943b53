"""The health loop: is the operator alive, is it ready, and the gauges a scrape reads.

Every `INTERVAL_SECONDS` it asks the database a trivial query (timed: the database round-trip
histogram), counts replicas and nodes by status (one grouped query each, on a connection of
its own; see db/inventory.py) and asks the API server for its version. The probes and the
scrape then answer from what it last found, without any I/O of their own:

* a probe never hangs on a sick dependency (kubelet's probe timeout is 1 s by default; a
  connect to an unreachable database takes seconds to fail), and never queues behind
  reconciles for a connection;
* the cost of counting is fixed (one pair of queries per interval) whoever scrapes and however
  often: two Prometheus servers of an HA pair, or a person with curl, add nothing. A scrape
  sees counts at most one interval old, fresher than a typical 15-60 s scrape interval.

The loop runs whether or not this process leads (a standby must say it is ready) and is not a
supervised loop: it catches its own errors, since a failure here is itself the news it reports.
Liveness is the supervisor's verdict (`problems()`: a loop stuck or crash-looping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controller.db.inventory import Counts
from controller.errors import RetryableError
from controller.operator.metrics import Metrics

logger = logging.getLogger(__name__)

# How often the dependencies are checked and the gauges refreshed: a third of kubelet's default
# readiness period (10 s), so a probe sees news at most 5 s old; two queries every 5 s is
# nothing to a database serving thousands of reconciles.
INTERVAL_SECONDS = 5.0
# One check (ping, counts or API) that takes longer has failed: within the interval, so a slow
# dependency cannot make the loop itself fall behind.
CHECK_TIMEOUT_SECONDS = 4.0
# Findings older than this many intervals mean the loop itself stopped: not ready.
STALE_INTERVALS = 3

Check = Callable[[], Awaitable[None]]


class Health:
    """Checks the dependencies on a timer; answers the probes from the last results."""

    def __init__(
        self,
        *,
        ping_database: Check,
        count: Callable[[], Awaitable[Counts]],
        check_api: Check,
        loop_problems: Callable[[], list[str]],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self._ping_database = ping_database
        self._count = count
        self._check_api = check_api
        self._loop_problems = loop_problems
        self._metrics = metrics
        self._clock = clock
        self.interval = interval
        self._checked_at: float | None = None
        self._failing: list[str] = []

    async def run(self) -> None:
        """Check, then wait, until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """One round: the database (timed, then counted), then the API server."""
        failing = []
        started = self._clock()
        try:
            await asyncio.wait_for(self._ping_database(), CHECK_TIMEOUT_SECONDS)
            self._metrics.database_round_trip.observe(self._clock() - started)
            counts = await asyncio.wait_for(self._count(), CHECK_TIMEOUT_SECONDS)
            self._metrics.counted(replicas=counts.replicas, nodes=counts.nodes)
        except Exception as exc:
            failing.append(f"database: {_why(exc)}")
        try:
            await asyncio.wait_for(self._check_api(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:
            failing.append(f"API server: {_why(exc)}")
        if failing and not self._failing:
            logger.warning("not ready: %s", "; ".join(failing))
        elif self._failing and not failing:
            logger.info("ready again")
        self._failing = failing
        self._checked_at = self._clock()

    def not_ready(self) -> list[str]:
        """Why /readyz fails (one line each); empty when the database and API server answer."""
        if self._checked_at is None:
            return ["dependencies not checked yet"]
        age = self._clock() - self._checked_at
        if age > STALE_INTERVALS * self.interval:
            return [f"health loop last checked {age:.0f} s ago"]
        return list(self._failing)

    def not_live(self) -> list[str]:
        """Why /healthz fails: a control loop stuck or crash-looping (supervisor.py)."""
        return self._loop_problems()


def _why(error: Exception) -> str:
    """One line for the probe: our errors say what they are; anything else names its type."""
    if isinstance(error, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    if isinstance(error, RetryableError):
        return str(error)
    # Unexpected (a bug): the probe says so, and the log has the traceback.
    logger.error("health check failed unexpectedly", exc_info=error)
    return f"{type(error).__name__}: {error}"
