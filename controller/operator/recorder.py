"""Events are posted from a queue of their own, with retries, after the status is written.

A reconcile writes the status first and then its events. When an event's post failed, the
reconcile's retry found the status already written and nothing new to say, so the event was
lost for good. Now a reconcile only records its events here; a few supervised posters send
them, and a post that fails for a retryable reason is tried again with backoff, a bounded
number of times (events are for people: one that cannot be posted in about a minute is
dropped with a warning rather than kept forever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from controller.errors import RetryableError
from controller.kube.resource import ObjectRef
from controller.model.events import Event
from controller.operator.supervisor import Progress, Supervisor
from controller.operator.workqueue import backoff

logger = logging.getLogger(__name__)

# Posts in flight at once: a burst posts two events per object, and one poster at a time would
# trail the reconciles by seconds; four keep up (each post is one API round trip).
POSTERS = 4
# Attempts per event: 1 + retries after 1, 2, 4, 8, 16, 32 s, about a minute in all.
MAX_ATTEMPTS = 7

Post = Callable[[ObjectRef, Event], Awaitable[None]]


class EventRecorder:
    """Records events and posts them in the background."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self._pending: asyncio.Queue[tuple[ObjectRef, Event, int]] = asyncio.Queue()
        self._retries: set[asyncio.TimerHandle] = set()

    def record(self, ref: ObjectRef, event: Event) -> None:
        """Post `event` about `ref` soon."""
        logger.info("%s/%s %s: %s", ref.namespace, ref.name, event.reason, event.message)
        self._pending.put_nowait((ref, event, 1))

    def __len__(self) -> int:
        """Events waiting to be posted (retries not yet due excluded)."""
        return self._pending.qsize()

    def supervise(self, supervisor: Supervisor, *, posters: int = POSTERS) -> None:
        """Put the posters under `supervisor`."""
        for number in range(posters):
            supervisor.add(f"events-{number}", self.run)

    async def run(self, progress: Progress) -> None:
        """One poster: take an event, post it, schedule a retry if that failed."""
        while True:
            ref, event, attempt = await self._pending.get()
            with progress.busy():
                await self.post(ref, event, attempt)

    async def post(self, ref: ObjectRef, event: Event, attempt: int) -> None:
        """Post once; on a retryable failure, queue the next attempt after its backoff."""
        try:
            await self._post(ref, event)
        except RetryableError as exc:
            if attempt >= MAX_ATTEMPTS:
                logger.warning(
                    "%s/%s: event %s dropped after %d attempts: %s",
                    ref.namespace,
                    ref.name,
                    event.reason,
                    attempt,
                    exc,
                )
                return
            delay = backoff(attempt) if exc.delay is None else exc.delay

            def again() -> None:
                self._retries.discard(handle)
                self._pending.put_nowait((ref, event, attempt + 1))

            handle = asyncio.get_running_loop().call_later(delay, again)
            self._retries.add(handle)

    def close(self) -> None:
        """Cancel the retries not yet due (at shutdown)."""
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
