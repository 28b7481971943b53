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

import logging
from dataclasses import dataclass
from enum import StrEnum

from controller.errors import RetryableError, TerminalError
from controller.operator.objects import Key
from controller.operator.supervisor import Progress, Supervisor
from controller.operator.sync import Syncer
from controller.operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# Reconciles in flight at once (one per key, different keys in parallel). Enough to hide
# database and API round trips on a small machine; fewer than the database pool (30
# connections), so notification lookups and the node check always find a connection.
WORKERS = 16


class Action(StrEnum):
    """What the queue does with a key once its sync is over."""

    DONE = "done"
    REQUEUE_AFTER = "requeue-after"
    RETRY = "retry"
    WAIT_FOR_CHANGE = "wait-for-change"


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

    def __init__(self, *, syncer: Syncer, queue: WorkQueue[Key] | None = None) -> None:
        self.syncer = syncer
        # Not `queue or ...`: an empty queue is falsy (it has a length).
        self.queue: WorkQueue[Key] = WorkQueue() if queue is None else queue

    def enqueue(self, key: Key) -> None:
        """Reconcile `key` soon (de-duplicated by the queue)."""
        self.queue.add(key)

    def forget(self, key: Key) -> None:
        """The object is gone: drop what is remembered of it (written status, failures)."""
        self.syncer.forget(key)
        self.queue.succeeded(key)

    def supervise(self, supervisor: Supervisor, *, workers: int = WORKERS) -> None:
        """Put the workers under `supervisor`."""
        for number in range(workers):
            supervisor.add(f"worker-{number}", self.work)

    async def work(self, progress: Progress) -> None:
        """One worker: take a key, process it, repeat."""
        while True:
            key = await self.queue.get()
            try:
                with progress.busy():
                    await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: Key) -> Decision:
        """Sync `key` once and carry out what `decide` says about the result."""
        try:
            requeue_after = await self.syncer.sync(key, retry_delay=self.queue.next_backoff(key))
        except Exception as exc:
            decision = decide(error=exc)
            self._log(key, exc, decision)
        else:
            decision = decide(requeue_after=requeue_after)
        self._carry_out(key, decision)
        return decision

    def _carry_out(self, key: Key, decision: Decision) -> None:
        if decision.action is Action.RETRY:
            self.queue.retry(key, delay=decision.delay)
            return
        self.queue.succeeded(key)
        if decision.action is Action.REQUEUE_AFTER and decision.delay is not None:
            self.queue.add_after(key, decision.delay)

    def _log(self, key: Key, error: Exception, decision: Decision) -> None:
        namespace, name = key
        if isinstance(error, TerminalError):
            logger.warning("%s/%s: %s; waiting for a spec change", namespace, name, error)
        elif isinstance(error, RetryableError):
            delay = self.queue.next_backoff(key) if decision.delay is None else decision.delay
            logger.warning("%s/%s: %s; retrying in %.0f s", namespace, name, error, delay)
        else:
            logger.exception("%s/%s: unexpected error; retrying with backoff", namespace, name)
