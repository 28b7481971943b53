"""The supervisor: a failing task is restarted with backoff, stuck and crash-looping ones reported.

Fakes only: a clock the test moves and a sleep that records the pause and returns at once, so
nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.operator.supervisor import (
    CRASH_LOOP_FAILURES,
    HEALTHY_RUN_SECONDS,
    Progress,
    Supervisor,
    TaskProblemError,
)


class FakeTime:
    """A monotonic clock that moves only when told, and a sleep that records its pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def test_a_task_that_raises_is_restarted_with_backoff_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    supervisor = Supervisor(clock=time.clock, sleep=time.sleep)
    runs = 0

    async def flaky(progress: Progress) -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError(f"boom {runs}")
        # the fourth run ends normally: the supervisor lets a finished task be

    supervisor.add("flaky", flaky)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(supervisor.run(), timeout=5)
    assert runs == 4
    assert time.pauses == [1.0, 2.0, 4.0]
    assert supervisor.report()["flaky"]["restarts"] == 3
    assert supervisor.report()["flaky"]["lastError"] == "ValueError: boom 3"
    failures = [r for r in caplog.records if "task flaky failed" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)  # the traceback is in the log


async def test_one_failing_task_leaves_the_others_running() -> None:
    time = FakeTime()
    supervisor = Supervisor(clock=time.clock, sleep=time.sleep)
    steady_ran = asyncio.Event()
    attempts = 0

    async def broken(progress: Progress) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        raise RuntimeError("always")

    async def steady(progress: Progress) -> None:
        steady_ran.set()
        await asyncio.Event().wait()  # runs until cancelled

    supervisor.add("broken", broken)
    supervisor.add("steady", steady)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(steady_ran.wait(), timeout=5)
    for _ in range(50):
        await asyncio.sleep(0)
    assert attempts > CRASH_LOOP_FAILURES
    assert not task.done()  # the failures did not end the supervisor or the steady task
    problems = supervisor.problems()
    assert len(problems) == 1
    assert problems[0].startswith("broken: failed ")
    assert "RuntimeError: always" in problems[0]
    with pytest.raises(TaskProblemError, match="broken"):
        supervisor.check()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failure_after_a_healthy_run_starts_the_backoff_afresh() -> None:
    time = FakeTime()
    supervisor = Supervisor(clock=time.clock, sleep=time.sleep)
    runs = 0

    async def once_in_a_while(progress: Progress) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            time.now += HEALTHY_RUN_SECONDS  # this run lasted long enough to count as healthy
        if runs <= 4:
            raise ValueError("boom")

    supervisor.add("task", once_in_a_while)
    await asyncio.wait_for(supervisor.run(), timeout=5)
    assert time.pauses == [1.0, 2.0, 1.0, 2.0]


def test_a_task_stuck_in_one_unit_of_work_is_reported() -> None:
    time = FakeTime()
    supervisor = Supervisor(clock=time.clock, sleep=time.sleep)

    async def body(progress: Progress) -> None:  # never run: the test drives its Progress
        raise AssertionError

    progress = supervisor.add("worker-0", body, stuck_after=300)
    with progress.busy():
        time.now += 299
        assert supervisor.problems() == []
        time.now += 2
        assert supervisor.problems() == ["worker-0: stuck in one unit of work for 301 s"]
        assert supervisor.report()["worker-0"]["busySeconds"] == 301
    assert supervisor.problems() == []  # the unit finished: no longer stuck
    assert supervisor.check()["worker-0"]["secondsSinceProgress"] == 0


def test_progress_beats_and_idles() -> None:
    time = FakeTime()
    progress = Progress(time.clock)
    time.now += 5
    assert progress.busy_for() == 0.0
    progress.beat()
    assert progress.last_beat == time.now


def test_task_names_are_unique() -> None:
    supervisor = Supervisor()

    async def body(progress: Progress) -> None:
        return None

    supervisor.add("a", body)
    with pytest.raises(ValueError, match="already"):
        supervisor.add("a", body)
