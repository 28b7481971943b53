"""Failpoints: parsed from FOG_FAILPOINTS, armed per task, raising mid-loop at a progress report.

And what they showed: a notified-ids lookup interrupted by an unexpected error keeps its ids
for the restarted loop.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from controller.operator import failpoints
from controller.operator.failpoints import FailpointSpecError, InjectedFaultError
from controller.operator.objects import ObservedObjects
from controller.operator.sources import Sources
from controller.operator.supervisor import Progress, Supervisor


def test_specs_parse_with_counts_delays_and_patterns() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("node-lifecycle=2@5, worker-*") == {
        "node-lifecycle": (2, 5.0),
        "worker-*": (1, 0.0),
    }


@pytest.mark.parametrize("bad", ["x=two", "x=1@soon", "=1", "x=-1", "x=1@-3"])
def test_a_bad_spec_is_one_clear_error(bad: str) -> None:
    with pytest.raises(FailpointSpecError, match="is not NAME\\[=COUNT\\]\\[@SECONDS\\]"):
        failpoints.parse(bad)


def test_a_failpoint_raises_at_progress_only_when_armed_and_as_often_as_asked() -> None:
    now = [100.0]
    specs = failpoints.parse("worker-*=2@10")
    fault = failpoints.for_task(specs, "worker-3", started=100.0)
    assert failpoints.for_task(specs, "resync", started=100.0) is None
    progress = Progress(lambda: now[0], fault)
    progress.beat()  # not armed yet
    now[0] = 110.0
    for _ in range(2):
        with pytest.raises(InjectedFaultError, match="failpoint worker-3"):
            progress.beat()
    progress.beat()  # used up


async def test_the_supervisor_restarts_a_loop_its_failpoint_broke() -> None:
    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    supervisor = Supervisor(sleep=no_wait, failpoints=failpoints.parse("looper=1"))
    rounds = 0

    async def looper(progress: Progress) -> None:
        nonlocal rounds
        while rounds < 3:
            rounds += 1
            progress.beat()

    supervisor.add("looper", looper)
    await asyncio.wait_for(supervisor.run(), timeout=5)
    assert supervisor.report()["looper"]["restarts"] == 1
    assert supervisor.report()["looper"]["lastError"] == (
        "InjectedFaultError: failpoint looper: injected fault"
    )
    assert rounds == 3


async def test_notified_ids_survive_an_unexpected_error_in_their_lookup() -> None:
    queued: list[tuple[str, str]] = []
    calls: list[list[uuid.UUID]] = []

    async def keys_of(ids: list[uuid.UUID]) -> list[tuple[str, str]]:
        calls.append(sorted(ids))
        if len(calls) == 1:
            raise RuntimeError("a bug in the lookup")
        return [("team-a", "web")]

    async def never(*, connected: object) -> object:
        raise AssertionError("not listening in this test")

    sources = Sources(
        objects=ObservedObjects(),
        enqueue=queued.append,
        forget=lambda key: None,
        listen=never,  # type: ignore[arg-type]
        keys_of=keys_of,
        resync_seconds=600,
    )
    notified = uuid.uuid4()
    sources.notified(str(notified))
    with pytest.raises(RuntimeError, match="a bug in the lookup"):
        await asyncio.wait_for(sources.resolve(Progress()), timeout=5)
    # The restarted loop (as the supervisor would start it) finds the id again.
    restarted = asyncio.create_task(sources.resolve(Progress()))
    for _ in range(100):
        if queued:
            break
        await asyncio.sleep(0.01)
    restarted.cancel()
    assert calls == [[notified], [notified]]
    assert queued == [("team-a", "web")]
