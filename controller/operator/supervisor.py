"""Every long-running task of the operator: restarted when it fails, watched for stalls.

The operator is a handful of loops (the workers, the notification listener, the resync, the
node check). Run under a bare `asyncio.gather`, one that raised ended silently while the rest
kept running and the liveness probe stayed green: one malformed notification once stopped
agent reports from reaching status until the next resync.

What a supervised task does when it fails: it is **restarted with backoff** (1 s doubling to
60 s), its traceback logged each time. Not the whole process: every loop keeps its state
outside itself (the work queue, the observed objects, the database), so a restarted loop
carries on where the old one stopped, while stopping the process would also drop the watch's
cache and every pending requeue and cost a cold start of every object. A loop that keeps
failing is not hidden either: after `CRASH_LOOP_FAILURES` failures in a row without progress
in between, and whenever one unit of its work has run longer than `stuck_after`, `problems()`
names it, the liveness probe fails, and Kubernetes restarts the pod (the same escalation as
kopf's root tasks, one level later).

Each task reports its own progress through a `Progress`: `beat()` when it did something,
`busy()` around one unit of work. The probes read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from controller.operator import failpoints
from controller.operator.failpoints import Failpoint
from controller.operator.workqueue import backoff

logger = logging.getLogger(__name__)

# A unit of work (one reconcile, one node check, one notification batch) takes milliseconds;
# the slowest legitimate one waits out a database connect timeout (10 s) a few times over.
# Five minutes busy is no longer slow but stuck, yet short enough to be noticed within a
# few liveness periods.
STUCK_AFTER_SECONDS = 300.0
# Consecutive failures without progress before a task counts as crash-looping: at 1, 2, 4, 8,
# 16 s backoff that is half a minute of failing, past any blip of a restarting dependency.
CRASH_LOOP_FAILURES = 5
# A run that lasted this long before failing was a healthy one: its failure starts the count
# (and the backoff) afresh. A minute, the backoff's cap: long past a crash at startup.
HEALTHY_RUN_SECONDS = 60.0

Clock = Callable[[], float]


class Progress:
    """What one task says about itself: when it last made progress, and what it is busy with."""

    def __init__(self, clock: Clock = time.monotonic, fault: Failpoint | None = None) -> None:
        self._clock = clock
        self._fault = fault
        self.last_beat = clock()
        self.busy_since: float | None = None

    def beat(self) -> None:
        """The task did something: it is alive and not stuck.

        An armed failpoint (tests only, see failpoints.py) raises here, mid-loop.
        """
        self.last_beat = self._clock()
        if self._fault is not None:
            self._fault.hit(self.last_beat)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """One unit of work; a task inside one for too long is stuck."""
        self.busy_since = self._clock()
        try:
            yield
        finally:
            self.busy_since = None
            self.beat()

    def busy_for(self) -> float:
        """Seconds spent in the current unit of work (0 when idle)."""
        return 0.0 if self.busy_since is None else self._clock() - self.busy_since


TaskBody = Callable[[Progress], Awaitable[None]]


@dataclass(slots=True)
class SupervisedTask:
    """One task's body and what the supervisor knows of it."""

    name: str
    body: TaskBody
    progress: Progress
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    stuck_after: float = STUCK_AFTER_SECONDS


class TaskProblemError(RuntimeError):
    """A supervised task is stuck or crash-looping (the liveness probe fails with this)."""


class Supervisor:
    """Runs named tasks until cancelled; restarts any that fails, with backoff."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        failpoints: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._failpoints = failpoints or {}
        self._started = clock()
        self._tasks: dict[str, SupervisedTask] = {}

    def add(
        self, name: str, body: TaskBody, *, stuck_after: float = STUCK_AFTER_SECONDS
    ) -> Progress:
        """Supervise `body` under `name`; it runs when `run()` does.

        Returns the task's Progress (the same one `body` is handed on every start).
        """
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is supervised already")
        fault = failpoints.for_task(self._failpoints, name, started=self._started)
        progress = Progress(self._clock, fault)
        self._tasks[name] = SupervisedTask(
            name=name, body=body, progress=progress, stuck_after=stuck_after
        )
        return progress

    async def run(self) -> None:
        """Run every task until cancelled; a task that returns is finished, not restarted."""
        await asyncio.gather(*(self._keep(task) for task in self._tasks.values()))

    async def _keep(self, task: SupervisedTask) -> None:
        while True:
            started = self._clock()
            try:
                await task.body(task.progress)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._clock() - started >= HEALTHY_RUN_SECONDS:
                    task.failures_in_a_row = 0
                task.failures_in_a_row += 1
                task.restarts += 1
                task.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff(task.failures_in_a_row)
                logger.exception(
                    "task %s failed (%d in a row); restarting in %.0f s",
                    task.name,
                    task.failures_in_a_row,
                    delay,
                )
                await self._sleep(delay)
            else:
                logger.info("task %s finished", task.name)
                return

    def problems(self) -> list[str]:
        """One line per task that is stuck or crash-looping; empty when all is well."""
        found = []
        for task in self._tasks.values():
            busy = task.progress.busy_for()
            if busy > task.stuck_after:
                found.append(f"{task.name}: stuck in one unit of work for {busy:.0f} s")
            if task.failures_in_a_row >= CRASH_LOOP_FAILURES:
                found.append(
                    f"{task.name}: failed {task.failures_in_a_row} times in a row, "
                    f"last: {task.last_error}"
                )
        return found

    def report(self) -> dict[str, dict[str, Any]]:
        """Each task's progress, for the probes: restarts, last error, seconds since progress."""
        now = self._clock()
        return {
            task.name: {
                "restarts": task.restarts,
                "lastError": task.last_error,
                "secondsSinceProgress": round(now - task.progress.last_beat, 3),
                "busySeconds": round(task.progress.busy_for(), 3),
            }
            for task in self._tasks.values()
        }

    def check(self) -> dict[str, dict[str, Any]]:
        """The report, or TaskProblemError naming every stuck or crash-looping task."""
        problems = self.problems()
        if problems:
            raise TaskProblemError("; ".join(problems))
        return self.report()
