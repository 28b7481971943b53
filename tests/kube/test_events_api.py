"""Events on a real kube-apiserver: repeats update one core/v1 Event (count, lastTimestamp)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Kubectl

from controller.kube.client import KubeClient
from controller.kube.resource import ObjectRef
from controller.model.events import Event, EventSeries, EventType

REPLACED = Event(EventType.NORMAL, "Replaced", "replaced 1 failed replica")
T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    listed = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return sorted(json.loads(listed)["items"], key=lambda item: item["metadata"]["name"])


async def test_repeats_update_one_event_object_and_survive_its_expiry(
    kube: KubeClient, kubectl: Kubectl, namespace: str
) -> None:
    ref = ObjectRef(namespace=namespace, name="web", uid=str(uuid.uuid4()), generation=1)
    series = EventSeries()

    async def happens(at: int, event: Event = REPLACED) -> None:
        occurrence = series.observe(
            uid=ref.uid, name=ref.name, event=event, now=T0 + timedelta(seconds=at)
        )
        await kube.post_event(ref, occurrence)

    for at in (0, 3, 6):
        await happens(at)
    [one] = events(kubectl, namespace)
    assert (one["reason"], one["message"], one["count"]) == ("Replaced", REPLACED.message, 3)
    assert (one["firstTimestamp"], one["lastTimestamp"]) == (
        "2026-11-27T04:00:00Z",
        "2026-11-27T04:00:06Z",
    )
    assert one["involvedObject"]["uid"] == ref.uid

    # The API server expired it (its event TTL): the next repeat recreates it, count kept.
    kubectl("delete", "event", "-n", namespace, one["metadata"]["name"])
    await happens(9)
    [again] = events(kubectl, namespace)
    assert (again["metadata"]["name"], again["count"]) == (one["metadata"]["name"], 4)

    # Another event is another object; posting a first occurrence twice (a retry after a lost
    # response) leaves one object.
    ready = Event(EventType.NORMAL, "Ready", "1 replica running")
    occurrence = series.observe(uid=ref.uid, name=ref.name, event=ready, now=T0)
    await kube.post_event(ref, occurrence)
    await kube.post_event(ref, occurrence)
    assert [(item["reason"], item["count"]) for item in events(kubectl, namespace)] == [
        ("Replaced", 4),
        ("Ready", 1),
    ]
