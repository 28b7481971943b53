"""Events are posted from a queue of their own, with retries, after the status is written.

A reconcile writes the status first and then its events. When an event's post failed, the
reconcile's retry found the status already written and nothing new to say, so the event was
lost for good. Now a reconcile only records its events here; a few supervised posters send
them, and a post that fails for a retryable reason is tried again with backoff, a bounded
number of times (events are for people: one that cannot be posted in about a minute is
dropped with a warning rather than kept forever).

Repeats are aggregated (model/events.py EventSeries): a repeat raises the count and last time
of the Event object already posted. The queue is a WorkQueue of Event object names, so one
object is posted by one poster at a time and a repeat recorded meanwhile is posted after it,
with the latest count: a count on the server never goes back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from controller.errors import RetryableError
from controller.kube.resource import ObjectRef
from controller.model.events import Event, EventSeries, Occurrence
from controller.operator.supervisor import Progress, Supervisor
from controller.operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

# Posts in flight at once: a burst posts two events per object, and one poster at a time would
# trail the reconciles by seconds; four keep up (each post is one API round trip).
POSTERS = 4
# Attempts per event: 1 + retries after 1, 2, 4, 8, 16, 32 s, about a minute in all.
MAX_ATTEMPTS = 7

Post = Callable[[ObjectRef, Occurrence], Awaitable[None]]


class EventRecorder:
    """Records events, folds repeats together and posts them in the background."""

    def __init__(
        self, post: Post, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._post = post
        self._clock = clock
        self._series = EventSeries()
        self._queue: WorkQueue[str] = WorkQueue()
        # The latest occurrence not yet posted, per Event object name; attempts so far.
        self._latest: dict[str, tuple[ObjectRef, Occurrence]] = {}
        self._attempts: dict[str, int] = {}

    def record(self, ref: ObjectRef, event: Event) -> None:
        """Post `event` about `ref` soon (as a repeat of the same event, if it is one)."""
        logger.info(
            "%s/%s %s: %s",
            ref.namespace,
            ref.name,
            event.reason,
            event.message,
            extra={"reason": event.reason},  # a field of its own in JSON logs (logs.py)
        )
        occurrence = self._series.observe(
            uid=ref.uid, name=ref.name, event=event, now=self._clock()
        )
        self._latest[occurrence.name] = (ref, occurrence)
        self._queue.add(occurrence.name)

    def __len__(self) -> int:
        """Events waiting to be posted (retries not yet due excluded)."""
        return len(self._queue)

    def supervise(self, supervisor: Supervisor, *, posters: int = POSTERS) -> None:
        """Put the posters under `supervisor`."""
        for number in range(posters):
            supervisor.add(f"events-{number}", self.run)

    async def run(self, progress: Progress) -> None:
        """One poster: take an event, post it, schedule a retry if that failed."""
        while True:
            name = await self._queue.get()
            try:
                with progress.busy():
                    await self.post(name)
            finally:
                self._queue.done(name)

    async def post(self, name: str) -> None:
        """Post the latest occurrence of `name` once; on a retryable failure, retry later."""
        pending = self._latest.pop(name, None)
        if pending is None:
            return  # posted already, with a later count, after this retry was scheduled
        ref, occurrence = pending
        attempt = self._attempts.pop(name, 0) + 1
        try:
            await self._post(ref, occurrence)
        except RetryableError as exc:
            # A repeat recorded during the post is newer and goes out instead.
            self._latest.setdefault(name, pending)
            if attempt >= MAX_ATTEMPTS:
                logger.warning(
                    "%s/%s: event %s dropped after %d attempts: %s",
                    ref.namespace,
                    ref.name,
                    occurrence.event.reason,
                    attempt,
                    exc,
                )
                if self._latest[name] is pending:  # a newer repeat still goes out
                    del self._latest[name]
                self._queue.succeeded(name)
                return
            self._attempts[name] = attempt
            self._queue.retry(name, delay=exc.delay)
            return
        self._queue.succeeded(name)

    def close(self) -> None:
        """Cancel the retries not yet due (at shutdown)."""
        self._queue.close()
