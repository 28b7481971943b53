"""Queued in pieces that batch: the listing at start, in one piece; the resync, in shares.

`Sources.take_listing` runs before the workers start, so that a restart's first pass goes in
full batches; kopf's own listing, which follows, must then cost no second reconcile. The resync
queues a share of the objects a second, each share one batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from controller.operator import sources as sources_module
from controller.operator.objects import Key, ObservedObjects
from controller.operator.sources import Sources
from controller.operator.supervisor import Progress

FINALIZER = "fogcompute.io/finalizer"


def body(name: str, *, generation: int = 1, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            **metadata,
        },
        "spec": {"image": "app:1", "replicas": 2},
        "status": {"readyReplicas": 2},
    }


def sources(queued: list[Key], *, resync_seconds: float = 600) -> Sources:
    async def nothing(_ids: Sequence[Any]) -> list[Key]:
        return []

    def no_listener(**_: Any) -> AsyncIterator[str]:
        raise AssertionError("not listening in this test")

    return Sources(
        objects=ObservedObjects(),
        enqueue=queued.append,
        forget=lambda key: None,
        listen=no_listener,
        keys_of=nothing,
        resync_seconds=resync_seconds,
    )


async def pages(*listed: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    for page in listed:
        yield page


async def test_only_objects_that_carry_our_finalizer_are_queued_and_recorded() -> None:
    queued: list[Key] = []
    source = sources(queued)
    listing = pages(
        [body("a", finalizers=[FINALIZER]), body("new")],  # "new": created while we were down
        [body("gone", finalizers=[FINALIZER], deletionTimestamp="2026-11-28T19:00:00Z")],
        [body("b", finalizers=["other.io/x", FINALIZER])],
    )
    assert await source.take_listing(listing, finalizer=FINALIZER) == 2
    assert queued == [("ns", "a"), ("ns", "b")]
    assert sorted(source.objects.keys()) == [("ns", "a"), ("ns", "b")]


async def test_kopfs_listing_after_it_queues_only_what_changed_since() -> None:
    queued: list[Key] = []
    source = sources(queued)
    first = [body(name, finalizers=[FINALIZER]) for name in ("a", "b", "c")]
    await source.take_listing(pages(first), finalizer=FINALIZER)
    queued.clear()
    # kopf lists the same objects again; "b" was edited in between, "c" is being deleted.
    again = [
        body("a", finalizers=[FINALIZER]),
        body("b", generation=2, finalizers=[FINALIZER]),
        body("c", finalizers=[FINALIZER], deletionTimestamp="2026-11-28T19:00:00Z"),
        body("new"),
    ]
    for listed in again:
        source.observe(listed, deleted=False)
    assert queued == [("ns", "b"), ("ns", "new")]
    assert sorted(source.objects.keys()) == [("ns", "a"), ("ns", "b"), ("ns", "new")]


async def test_an_empty_listing_queues_nothing() -> None:
    queued: list[Key] = []
    assert await sources(queued).take_listing(pages(), finalizer=FINALIZER) == 0
    assert queued == []


async def test_the_resync_queues_every_object_once_a_pass_in_shares_a_second_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shares, not single keys: a share queued at once is one batch for one worker."""
    queued: list[Key] = []
    source = sources(queued, resync_seconds=10.0)  # 10 shares of a second
    names = [f"d{index:02d}" for index in range(25)]
    await source.take_listing(
        pages([body(n, finalizers=[FINALIZER]) for n in names]), finalizer=FINALIZER
    )
    queued.clear()
    timeline: list[Any] = []

    async def sleep(seconds: float) -> None:
        timeline.append(seconds)
        timeline.append(list(queued))
        queued.clear()
        if sum(isinstance(t, float) for t in timeline) > 13:  # one pass (9 shares) and a bit
            raise asyncio.CancelledError

    monkeypatch.setattr(sources_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await source.resync(Progress())
    pauses = [t for t in timeline if isinstance(t, float)]
    shares = [t for t in timeline if isinstance(t, list)][1:]  # what each pause was followed by
    # ceil(25 / 10) = 3 objects a share, 9 shares, 10 * 3 / 25 = 1.2 s apart: 10.8 s a pass.
    assert pauses[:9] == [pytest.approx(1.2)] * 9
    first_pass = [key for share in shares[:9] for key in share]
    assert [len(share) for share in shares[:9]] == [3] * 8 + [1]
    assert sorted(first_pass) == [("ns", n) for n in names]  # every object, once
    assert sorted(key for share in shares[9:12] for key in share) == [("ns", n) for n in names[:9]]


async def test_settled_objects_are_resynced_on_every_sixth_round_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At rest nearly every object is settled; rounds between the full ones pass them by."""
    queued: list[Key] = []
    source = sources(queued, resync_seconds=2.0)  # 2 shares a round
    await source.take_listing(
        pages([body(n, finalizers=[FINALIZER]) for n in "abcd"]), finalizer=FINALIZER
    )
    queued.clear()
    for name in "abc":
        source.objects.settle(("ns", name), settled=True)
    monkeypatch.setattr(sources_module, "SETTLED_ROUNDS", 3)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > 7:
            raise asyncio.CancelledError

    monkeypatch.setattr(sources_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await source.resync(Progress())
    # The start queued every object, so: d alone, d alone, every object (2 shares), d alone,
    # d alone, and the next full round's first share.
    assert [key[1] for key in queued] == ["d", "d", *"abcd", "d", "d", *"ab"]


async def test_a_round_passes_by_objects_settled_since_it_began(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round that starts with the operator finds nothing settled; the first pass settles."""
    queued: list[Key] = []
    source = sources(queued, resync_seconds=2.0)  # 2 shares a round: a b, then c d
    await source.take_listing(
        pages([body(n, finalizers=[FINALIZER]) for n in "abcd"]), finalizer=FINALIZER
    )
    queued.clear()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:  # the first pass settles c and d before the round reaches them
            for name in "cd":
                source.objects.settle(("ns", name), settled=True)
        if len(pauses) > 2:
            raise asyncio.CancelledError

    monkeypatch.setattr(sources_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await source.resync(Progress())
    assert [key[1] for key in queued] == ["a", "b"]


async def test_news_of_an_object_unsettles_it() -> None:
    queued: list[Key] = []
    reached = asyncio.Event()  # b was queued
    notified = uuid.uuid4()

    def enqueue(key: Key) -> None:
        queued.append(key)
        if key == ("ns", "b"):
            reached.set()

    async def keys_of(ids: Sequence[Any]) -> list[Key]:
        return [("ns", "b")] if ids == [notified] else []

    source = Sources(
        objects=ObservedObjects(),
        enqueue=enqueue,
        forget=lambda key: None,
        listen=lambda **_: pytest.fail("not listening in this test"),
        keys_of=keys_of,
        resync_seconds=600,
    )
    await source.take_listing(
        pages([body(n, finalizers=[FINALIZER]) for n in "abcd"]), finalizer=FINALIZER
    )
    reached.clear()
    for name in "abcd":
        source.objects.settle(("ns", name), settled=True)
    assert source.objects.unsettled_keys() == []

    source.observe(body("a", generation=2), deleted=False)  # the spec changed
    source.notified(str(notified))  # an agent reported on b
    resolving = asyncio.create_task(source.resolve(Progress()))
    await asyncio.wait_for(reached.wait(), timeout=5)  # a lookup without I/O: at once
    resolving.cancel()
    assert sorted(source.objects.unsettled_keys()) == [("ns", "a"), ("ns", "b")]

    source.requeue_all()  # notifications were lost: nothing is known settled
    assert sorted(source.objects.unsettled_keys()) == [("ns", n) for n in "abcd"]
    source.objects.settle(("ns", "c"), settled=True)
    source.objects.settle(("ns", "c"), settled=False)  # its reconcile failed
    source.objects.settle(("ns", "gone"), settled=True)  # not an object: not recorded
    assert len(source.objects.unsettled_keys()) == 4


async def test_every_connection_of_the_listener_requeues_every_object() -> None:
    """The first too: a report sent before the first LISTEN succeeded was heard by nobody."""
    queued: list[Key] = []
    source = sources(queued)
    await source.take_listing(
        pages([body(n, finalizers=[FINALIZER]) for n in "ab"]), finalizer=FINALIZER
    )
    queued.clear()
    source.connected()
    assert sorted(queued) == [("ns", "a"), ("ns", "b")]
    source.connected()
    assert sorted(queued) == [("ns", "a"), ("ns", "a"), ("ns", "b"), ("ns", "b")]
