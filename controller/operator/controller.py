"""The FogDeployment controller: one work queue, a fixed pool of workers, one outcome mapping.

Everything that wants an object reconciled adds its key to the queue (sources.py); a worker
takes the key, syncs the object (sync.py: reconcile, status, events) and hands the result to
`decide`, the one place that says what the queue does next with the key:

| result of the sync                         | queue action                                  |
| ------------------------------------------ | --------------------------------------------- |
| done, nothing pending                      | DONE: forget its failures                     |
| done, a restart backoff ends in N s        | REQUEUE_AFTER N s                             |
| RetryableError (outage, conflicts, API)    | RETRY with per-key exponential backoff        |
| TerminalError (invalid spec)               | WAIT_FOR_CHANGE: the next spec edit re-queues |
| anything else (a bug)                      | RETRY with backoff, traceback logged          |

This is controller-runtime's `reconcileHandler` (result -> Forget / AddAfter / AddRateLimited,
TerminalError -> no requeue) in a few lines of Python. A bug is retried rather than dropped:
the next attempt may take another path (after a spec edit, or once the state it tripped on
has moved), and the traceback says where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.errors import RetryableError, TerminalError
from controller.operator import logs, metrics
from controller.operator.metrics import Metrics
from controller.operator.objects import Key
from controller.operator.supervisor import Progress, Supervisor
from controller.operator.sync import Syncer
from controller.operator.workqueue import ShutDownError, WorkQueue

logger = logging.getLogger(__name__)

# Batches in flight at once (different keys in parallel). 4, measured in the burst of 1,000
# objects x 10 replicas (docs/design/performance.md, "Batch sizes in the burst"): 16 idle
# workers each took the few keys ready when it came (5.8 a batch on average), 4 busy ones
# leave the keys queued and take 27 (most a full BATCH), for about 30% less operator CPU (45%
# unscaled: the machine's speed drifted) and a faster burst. Four batches still overlap the
# database's round trips; a lone apply finds an idle worker and is not delayed. Fewer than
# the database pool (30 connections), so notification lookups and the node check always find
# a connection.
WORKERS = 4
# Keys a worker takes from the queue at once and reconciles in one transaction (issue 15
# item 1). Per-object SQL round trips and their Python were half the operator's CPU in a
# burst (docs/design/performance.md); a batch shares them. 32: a larger batch holds its keys'
# locks and its candidate nodes longer, and its keys that go alone (a quota's gate) run one
# after another within it.
BATCH = 32
# How long the workers wait at start for the notification listener's first connection. Until
# LISTEN is in force an agent's report is heard by nobody; started after it, a reconcile's
# placements cannot be reported unheard. A listener that has not connected by then waits for
# the database, which the workers need too; its first connection requeues every object
# (sources.py), covering whatever they did meanwhile.
LISTENING_WAIT_SECONDS = 5.0


class Action(StrEnum):
    """What the queue does with a key once its sync is over."""

    DONE = "done"
    REQUEUE_AFTER = "requeue-after"
    RETRY = "retry"
    WAIT_FOR_CHANGE = "wait-for-change"


# Reconcile results as controller-runtime's metrics count them: a terminal error is an error.
RESULTS = {
    Action.DONE: metrics.SUCCESS,
    Action.REQUEUE_AFTER: metrics.REQUEUE_AFTER,
    Action.RETRY: metrics.ERROR,
    Action.WAIT_FOR_CHANGE: metrics.ERROR,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """A queue action, with its delay where it has one (None: the queue's own backoff)."""

    action: Action
    delay: float | None = None


def decide(*, requeue_after: float | None = None, error: Exception | None = None) -> Decision:
    """Map one sync's result (its requeue request, or the error it raised) to a queue action."""
    if error is None:
        if requeue_after is None:
            return Decision(Action.DONE)
        return Decision(Action.REQUEUE_AFTER, requeue_after)
    if isinstance(error, TerminalError):
        return Decision(Action.WAIT_FOR_CHANGE)
    if isinstance(error, RetryableError):
        return Decision(Action.RETRY, error.delay)
    return Decision(Action.RETRY)


class Controller:
    """The queue and its workers; `enqueue` is how every source asks for a reconcile."""

    def __init__(
        self,
        *,
        syncer: Syncer,
        queue: WorkQueue[Key] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.syncer = syncer
        self.metrics = Metrics() if metrics is None else metrics
        # Not `queue or ...`: an empty queue is falsy (it has a length).
        self.queue: WorkQueue[Key] = WorkQueue(self.metrics.queue()) if queue is None else queue
        # When an agent's report about each key reached us (its notification), until the
        # object's status is up to date with it: fog_report_to_status_seconds.
        self._reported: dict[Key, float] = {}
        self._listening: asyncio.Event | None = None  # set by `supervise`

    def enqueue(self, key: Key) -> None:
        """Reconcile `key` soon (de-duplicated by the queue)."""
        self.queue.add(key)

    def reported(self, key: Key, at: float) -> None:
        """An agent reported on `key` at `at` (monotonic): reconcile it, time it to status."""
        self._reported.setdefault(key, at)
        self.queue.add(key)

    def forget(self, key: Key) -> None:
        """The object is gone: drop what is remembered of it (written status, failures)."""
        self.syncer.forget(key)
        self.queue.succeeded(key)
        self._reported.pop(key, None)

    def supervise(
        self,
        supervisor: Supervisor,
        *,
        workers: int = WORKERS,
        listening: asyncio.Event | None = None,
    ) -> None:
        """Put the workers under `supervisor`; they start once `listening` is set (or a bound)."""
        self._listening = listening
        for number in range(workers):
            supervisor.add(f"worker-{number}", self.work)

    async def work(self, progress: Progress) -> None:
        """One worker: take the ready keys (up to BATCH), process them, repeat.

        Returns once the queue shuts down.
        """
        if self._listening is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), LISTENING_WAIT_SECONDS)
        while True:
            try:
                keys = await self.queue.get_batch(BATCH)
            except ShutDownError:
                return
            try:
                with progress.busy():
                    await self.process_batch(keys)
            finally:
                for key in keys:
                    self.queue.done(key)

    async def drain(self, grace: float) -> bool:
        """Take no more keys; wait up to `grace` s for the reconciles in flight to finish.

        Each reconcile is one transaction and a status patch: finished, it left nothing half
        done; cut off by the caller's cancel after the grace, its transaction rolls back
        and the next leader (or start) reconciles the object again. True if all finished.
        """
        self.queue.shut_down()
        in_flight = self.queue.in_flight()
        if in_flight:
            logger.info("shutting down: waiting for %d reconciles in flight", in_flight)
        try:
            await asyncio.wait_for(self.queue.drained(), grace)
        except TimeoutError:
            logger.warning(
                "shutting down: %d reconciles still running after %.0f s; their "
                "transactions roll back",
                self.queue.in_flight(),
                grace,
            )
            return False
        return True

    async def process(self, key: Key) -> Decision:
        """Sync `key` once and carry out what `decide` says about the result."""
        (decision,) = await self.process_batch([key])
        return decision

    async def process_batch(self, keys: Sequence[Key]) -> list[Decision]:
        """Sync the keys in one batch; carry out what `decide` says about each key's result.

        Each key is decided as soon as its status is published (Syncer.sync_many's
        `on_result`), not once the whole batch is over: a key the batch's transaction placed
        does not wait for the keys that go alone after it.
        """
        started = time.monotonic()
        self.metrics.batched(len(keys))
        reported = [self._reported.pop(key, None) for key in keys]
        decisions: dict[int, Decision] = {}

        def settle(index: int, result: float | Exception | None) -> None:
            decisions[index] = self._settle(keys[index], reported[index], result)

        try:
            await self.syncer.sync_many(
                keys,
                retry_delays=[self.queue.next_backoff(key) for key in keys],
                on_result=settle,
            )
        except Exception as exc:  # a bug outside every key's own work: each key left retries it
            for index, key in enumerate(keys):
                if index not in decisions:
                    with logs.reconciling(*key):
                        settle(index, exc)
        # The batch's time divided among its keys (the keys shared one transaction): summed,
        # the figures are the workers' busy time, as they are for lone reconciles.
        share = (time.monotonic() - started) / max(1, len(keys))
        for index in range(len(keys)):
            self.metrics.reconciled(RESULTS[decisions[index].action], share)
        return [decisions[index] for index in range(len(keys))]

    def _settle(self, key: Key, at: float | None, result: float | Exception | None) -> Decision:
        """Decide one key's result and carry it out; time its report to status."""
        if isinstance(result, Exception):
            decision = decide(error=result)
            self._log(key, result, decision)
            if at is not None:  # not reflected yet: the retry will be timed
                self._reported.setdefault(key, at)
        else:
            decision = decide(requeue_after=result)
            if at is not None:
                self.metrics.report_to_status.observe(time.monotonic() - at)
        self._carry_out(key, decision)
        return decision

    def _carry_out(self, key: Key, decision: Decision) -> None:
        if decision.action is Action.RETRY:
            self.queue.retry(key, delay=decision.delay)
            return
        self.queue.succeeded(key)
        if decision.action is Action.REQUEUE_AFTER and decision.delay is not None:
            self.queue.add_after(key, decision.delay)
        elif decision.action is Action.DONE:
            # Level-triggered: this reconcile saw everything, so a delayed add an earlier one
            # asked for (a held first status, a retry) would only repeat it.
            self.queue.cancel_after(key)

    def _log(self, key: Key, error: Exception, decision: Decision) -> None:
        namespace, name = key
        # The error's kind is the line's reason, for log pipelines (logs.py).
        extra = {"reason": type(error).__name__.removesuffix("Error")}
        if isinstance(error, TerminalError):
            logger.warning(
                "%s/%s: %s; waiting for a spec change", namespace, name, error, extra=extra
            )
        elif isinstance(error, RetryableError):
            delay = self.queue.next_backoff(key) if decision.delay is None else decision.delay
            logger.warning(
                "%s/%s: %s; retrying in %.0f s", namespace, name, error, delay, extra=extra
            )
        else:
            logger.error(  # with its traceback: the batch caught it, not this frame
                "%s/%s: unexpected error; retrying with backoff",
                namespace,
                name,
                exc_info=error,
                extra=extra,
            )
