"""The listing at start: objects with our finalizer are queued in one piece, once.

`Sources.take_listing` runs before the workers start, so that a restart's first pass goes in
full batches; kopf's own listing, which follows, must then cost no second reconcile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from controller.operator.objects import Key, ObservedObjects
from controller.operator.sources import Sources

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


def sources(queued: list[Key]) -> Sources:
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
        resync_seconds=600,
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
