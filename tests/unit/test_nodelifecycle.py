"""The node-lifecycle loop's schedule: a check is due one interval after the last one began.

Fakes only (a clock the fake store moves, a sleep that records its pause), so nothing waits
for real time. The fault suite shows the effect on a running operator: a node that goes
silent during a mass delete is still taken offline on time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest

from controller.db.store import Store
from controller.operator.nodelifecycle import NodeLifecycle
from controller.operator.supervisor import Progress


class StopError(Exception):
    """Ends the endless loop after the pauses the test wants to see."""


class SlowStore:
    """A store whose node checks take the given (fake) seconds each."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = durations
        self.began: list[float] = []

    def clock(self) -> float:
        return self.now

    async def mark_lost_nodes(self, *, grace: timedelta) -> list[str]:
        self.began.append(self.now)
        self.now += self.durations[len(self.began) - 1]
        return []


async def run_checks(durations: list[float]) -> tuple[list[float], list[float]]:
    """Run the loop for len(durations) checks; the checks' start times and the pauses asked."""
    store = SlowStore(durations)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == len(durations):
            raise StopError
        store.now += seconds

    lifecycle = NodeLifecycle(
        store=cast(Store, store), grace=timedelta(seconds=40), clock=store.clock, sleep=sleep
    )
    assert lifecycle.interval == 10.0  # a quarter of the grace
    with pytest.raises(StopError):
        await lifecycle.run(Progress(store.clock))
    return store.began, pauses


async def test_a_slow_check_does_not_push_the_next_ones_back() -> None:
    began, pauses = await run_checks([0.5, 3.0, 0.1, 0.1])
    # Waiting a whole interval after each check would start them at 0, 10.5, 23.5, 33.6.
    assert began == [0.0, 10.0, 20.0, 30.0]
    assert pauses == pytest.approx([9.5, 7.0, 9.9, 9.9])


async def test_a_check_longer_than_the_interval_is_followed_at_once_without_catching_up() -> None:
    began, pauses = await run_checks([25.0, 0.1, 0.1])
    # Due at 10 and 20 while the first ran: one check at 25, then back to one per interval.
    assert began == [0.0, 25.0, 35.0]
    assert pauses == pytest.approx([0.0, 9.9, 9.9])
