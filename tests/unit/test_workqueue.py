"""The work queue: each key once however often added, never two workers on one key, backoff."""

from __future__ import annotations

import asyncio

import pytest

from controller.operator.workqueue import BACKOFF_MAX_SECONDS, ShutDownError, WorkQueue, backoff


async def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "b"):
        queue.add(key)
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["a", "b"]
    assert len(queue) == 0


async def test_a_key_added_while_processing_waits_for_done_then_comes_back_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker while the first holds it
    queue.done("a")
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_done_without_a_new_add_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    await queue.get()
    queue.done("a")
    assert len(queue) == 0


async def test_add_after_adds_once_the_delay_has_passed() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), timeout=2) == "a"


async def test_close_cancels_pending_delayed_adds() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    queue.close()
    await asyncio.sleep(0.1)
    assert len(queue) == 0


async def test_cancel_after_drops_the_pending_delayed_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    queue.add_after("b", 0.05)
    queue.cancel_after("a")
    queue.cancel_after("c")  # none pending: nothing to do
    assert await asyncio.wait_for(queue.get(), timeout=2) == "b"
    await asyncio.sleep(0.1)
    assert len(queue) == 0


async def test_retries_back_off_per_key_and_success_starts_over() -> None:
    queue: WorkQueue[str] = WorkQueue()
    assert queue.next_backoff("a") == 1.0
    delays = [queue.retry("a") for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert queue.retry("b") == 1.0  # counted per key
    queue.succeeded("a")
    assert queue.next_backoff("a") == 1.0
    queue.close()


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (5, 16.0), (6, 32.0), (7, 60.0), (50, 60.0), (1000, 60.0)],
)
def test_backoff_doubles_up_to_a_minute(failures: int, seconds: float) -> None:
    assert backoff(failures) == seconds
    assert BACKOFF_MAX_SECONDS == 60.0


async def test_one_pending_timer_per_key_the_earliest() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(100):  # a key requeued by every reconcile of a long backoff
        queue.add_after("a", 60)
    queue.add_after("b", 60)
    assert queue.pending_timers() == 2
    queue.add_after("a", 0.01)  # earlier: replaces the pending one
    assert queue.pending_timers() == 2
    assert await asyncio.wait_for(queue.get(), timeout=2) == "a"
    assert queue.pending_timers() == 1  # fired and gone; b still waits
    queue.done("a")
    queue.add_after("b", 120)  # later than the pending one: nothing changes
    assert queue.pending_timers() == 1
    queue.close()
    assert queue.pending_timers() == 0


async def test_shut_down_hands_out_nothing_more_and_drains_once_the_keys_in_flight_are_done() -> (
    None
):
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "a"
    queue.shut_down()
    with pytest.raises(ShutDownError):
        await queue.get()  # "b" waits for nobody: no new reconcile starts during shutdown
    drained = asyncio.ensure_future(queue.drained())
    await asyncio.sleep(0)
    assert not drained.done()  # "a" is still being worked on
    queue.done("a")
    await asyncio.wait_for(drained, 1)
    assert queue.in_flight() == 0


async def test_a_worker_waiting_for_a_key_when_the_queue_shuts_down_gets_none() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    queue.add("a")
    with pytest.raises(ShutDownError):
        await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(queue.drained(), 1)  # nothing was in flight


class Recorded:
    """An observer that keeps the moves it is told of."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []

    def add(self, key: str) -> None:
        self.moves.append(("add", key))

    def get(self, key: str) -> None:
        self.moves.append(("get", key))

    def done(self, key: str) -> None:
        self.moves.append(("done", key))

    def retry(self) -> None:
        self.moves.append(("retry", ""))


async def test_a_batch_takes_the_ready_keys_up_to_the_bound_each_in_flight() -> None:
    observer = Recorded()
    queue: WorkQueue[str] = WorkQueue(observer)
    for key in ("a", "b", "c"):
        queue.add(key)
    assert await queue.get_batch(2) == ["a", "b"]
    assert queue.in_flight() == 2
    assert len(queue) == 1
    queue.add("a")  # added while in flight: not handed out again until done
    assert await queue.get_batch(5) == ["c"]
    queue.done("a")
    queue.done("b")
    queue.done("c")
    assert await queue.get_batch(5) == ["a"]
    assert [move for move in observer.moves if move[0] == "get"] == [
        ("get", "a"),
        ("get", "b"),
        ("get", "c"),
        ("get", "a"),
    ]


async def test_a_batch_waits_for_its_first_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiting = asyncio.create_task(queue.get_batch(4))
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.add("a")
    assert await asyncio.wait_for(waiting, timeout=2) == ["a"]
