"""Events: posted in the background, retried with backoff when a post fails, bounded."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.errors import RetryableError
from controller.kube.resource import ObjectRef
from controller.model.events import Event, EventType
from controller.operator import recorder as recorder_module
from controller.operator.recorder import MAX_ATTEMPTS, EventRecorder
from controller.operator.supervisor import Progress

REF = ObjectRef(namespace="team-a", name="web", uid="u-1", generation=1)
READY = Event(EventType.NORMAL, "Ready", "3 of 3 replicas running")


class FlakyPost:
    """Fails the first `failures` posts with a retryable error (a suggested delay of 0)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.posted: list[str] = []

    async def __call__(self, ref: ObjectRef, event: Event) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RetryableError("API server restarting", delay=0.001)
        self.posted.append(event.reason)


async def run_until(condition: object, recorder: EventRecorder) -> None:
    poster = asyncio.create_task(recorder.run(Progress()))
    try:
        for _ in range(500):
            if callable(condition) and condition():
                return
            await asyncio.sleep(0.002)
        raise AssertionError("condition never held")
    finally:
        poster.cancel()
        recorder.close()


async def test_an_event_whose_post_failed_is_posted_later() -> None:
    post = FlakyPost(failures=2)
    recorder = EventRecorder(post)
    recorder.record(REF, READY)
    await run_until(lambda: post.posted == ["Ready"], recorder)
    assert post.attempts == 3


async def test_an_event_is_dropped_after_the_last_attempt(caplog: pytest.LogCaptureFixture) -> None:
    post = FlakyPost(failures=1000)
    recorder = EventRecorder(post)
    recorder.record(REF, READY)
    with caplog.at_level(logging.WARNING):
        await run_until(lambda: post.attempts == MAX_ATTEMPTS and not len(recorder), recorder)
        await asyncio.sleep(0.02)  # no attempt beyond the last
    assert post.attempts == MAX_ATTEMPTS
    assert post.posted == []
    assert any("dropped after 7 attempts" in r.getMessage() for r in caplog.records)


async def test_the_backoff_is_used_when_no_delay_is_suggested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[int] = []

    def recording_backoff(failures: int) -> float:
        delays.append(failures)
        return 0.001

    monkeypatch.setattr(recorder_module, "backoff", recording_backoff)

    async def failing(ref: ObjectRef, event: Event) -> None:
        raise RetryableError("down")

    recorder = EventRecorder(failing)
    await recorder.post(REF, READY, 1)
    await recorder.post(REF, READY, 2)
    recorder.close()
    assert delays == [1, 2]
