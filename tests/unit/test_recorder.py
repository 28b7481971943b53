"""Events: posted in the background, retried with backoff when a post fails, bounded, and
repeats folded into one Event object whose count on the server never goes back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from controller.errors import RetryableError
from controller.kube.resource import ObjectRef
from controller.model.events import Event, EventType, Occurrence
from controller.operator import workqueue
from controller.operator.recorder import MAX_ATTEMPTS, EventRecorder
from controller.operator.supervisor import Progress

REF = ObjectRef(namespace="team-a", name="web", uid="u-1", generation=1)
READY = Event(EventType.NORMAL, "Ready", "3 replicas running")
REPLACED = Event(EventType.NORMAL, "Replaced", "replaced 1 failed replica")
T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def ticking() -> Callable[[], datetime]:
    """A clock one second further at each reading."""
    times = (T0 + timedelta(seconds=n) for n in range(10**6))
    return lambda: next(times)


class FlakyPost:
    """Fails the first `failures` posts with a retryable error (a suggested delay of 0)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.posted: list[tuple[str, str, int]] = []  # (object name, reason, count)
        self.gate: asyncio.Event | None = None  # when set up, posts wait for it
        self.entered = asyncio.Event()  # a post has started

    async def __call__(self, ref: ObjectRef, occurrence: Occurrence) -> None:
        self.attempts += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.attempts <= self.failures:
            raise RetryableError("API server restarting", delay=0.001)
        self.posted.append((occurrence.name, occurrence.event.reason, occurrence.count))


async def run_until(
    condition: Callable[[], bool], recorder: EventRecorder, posters: int = 1
) -> None:
    tasks = [asyncio.create_task(recorder.run(Progress())) for _ in range(posters)]
    try:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.002)
        raise AssertionError("condition never held")
    finally:
        for task in tasks:
            task.cancel()
        recorder.close()


async def test_an_event_whose_post_failed_is_posted_later() -> None:
    post = FlakyPost(failures=2)
    recorder = EventRecorder(post)
    recorder.record(REF, READY)
    await run_until(lambda: [reason for _, reason, _ in post.posted] == ["Ready"], recorder)
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

    monkeypatch.setattr(workqueue, "backoff", recording_backoff)

    async def failing(ref: ObjectRef, occurrence: Occurrence) -> None:
        raise RetryableError("down")

    recorder = EventRecorder(failing)
    recorder.record(REF, READY)
    await run_until(lambda: len(delays) >= 2, recorder)
    assert delays[:2] == [1, 2]


async def test_repeats_are_one_event_object_with_a_growing_count() -> None:
    post = FlakyPost()
    recorder = EventRecorder(post, clock=ticking())
    for posted in (1, 2, 3):
        recorder.record(REF, REPLACED)
        await run_until(lambda want=posted: len(post.posted) == want, recorder)
    recorder.record(REF, READY)
    await run_until(lambda: len(post.posted) == 4, recorder)
    [name] = {name for name, reason, _ in post.posted if reason == "Replaced"}
    assert name.startswith("web.")
    assert post.posted[:3] == [(name, "Replaced", 1), (name, "Replaced", 2), (name, "Replaced", 3)]
    assert post.posted[3][0] != name  # another event is another object


async def test_repeats_recorded_during_a_post_go_out_once_with_the_latest_count() -> None:
    post = FlakyPost()
    post.gate = asyncio.Event()
    recorder = EventRecorder(post, clock=ticking())
    recorder.record(REF, REPLACED)
    tasks = [asyncio.create_task(recorder.run(Progress())) for _ in range(4)]
    try:
        await post.entered.wait()  # the first post is in flight, held at the gate
        for _ in range(3):
            recorder.record(REF, REPLACED)
        await asyncio.sleep(0.01)
        assert post.attempts == 1  # no second poster took the same object meanwhile
        post.gate.set()
        for _ in range(500):
            if len(post.posted) == 2:
                break
            await asyncio.sleep(0.002)
    finally:
        for task in tasks:
            task.cancel()
        recorder.close()
    assert [count for _, _, count in post.posted] == [1, 4]
