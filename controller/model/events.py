"""Which Kubernetes Events a reconcile posts: what a person should notice, nothing more.

Events are for people reading `kubectl describe`: one per decision (scaled up, placed waiting
replicas, started a rollout step, ran out of room, became ready), never one per replica or per
periodic resync that changed nothing. Choosing them is pure so the rule is testable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controller.model.conditions import ConditionType
from controller.model.planner import NewReplica, Plan, StopReason
from controller.model.status import FogDeploymentStatus, counted, short_revision


class EventType(StrEnum):
    """Kubernetes' two event types."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: type, CamelCase reason and a one-line message."""

    type: EventType
    reason: str
    message: str


def _became(
    status: FogDeploymentStatus, previous: Sequence[Mapping[str, Any]], type_: ConditionType
) -> str | None:
    """The new reason of a condition that just turned True (or changed reason), else None."""
    current = next(c for c in status.conditions if c.type is type_)
    if not current.status or not _turned_true(type_, current.reason, previous):
        return None
    return current.reason


def _turned_true(type_: ConditionType, reason: str, previous: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a condition now True with `reason` was not already True with it."""
    prior = next((c for c in previous if c.get("type") == type_), None)
    return not (
        prior is not None and prior.get("status") == "True" and prior.get("reason") == reason
    )


def _count(plan: Plan, reason: StopReason) -> int:
    return sum(1 for change in plan.transitions if change.reason == reason)


def _created(new: Sequence[NewReplica], verb: str, noun: str) -> str:
    """e.g. "created 1 replica", "replaced 3 failed replicas, 2 placed, 1 waiting for room"."""
    placed = sum(1 for replica in new if replica.node_id is not None)
    text = f"{verb} {counted(len(new), noun)}"
    return (
        text
        if placed == len(new)
        else f"{text}, {placed} placed, {len(new) - placed} waiting for room"
    )


def events_for(
    *,
    plan: Plan,
    status: FogDeploymentStatus,
    previous_conditions: Sequence[Mapping[str, Any]],
    revision: str,
    previous_replicas: int | None,
) -> tuple[Event, ...]:
    """The events one reconcile posts, given what it did and the status it computed.

    previous_replicas is the desired count as last recorded: new replicas up to the increase
    are a scale-up, the rest replace replicas that failed or were lost with their node
    (`Replaced`, so a crash loop does not read as scaling). It is None for a deployment seen
    for the first time, whose first replicas post no event: "created N replicas" would only
    repeat the spec and the status, and at 1,000 objects a second it is an API write each
    (issue 15). What a person needs still comes: Ready, or the warning that it stalled.
    """
    events: list[Event] = []
    recreated = _count(plan, StopReason.RECREATE)
    rolled = _count(plan, StopReason.ROLLING_UPDATE) + recreated
    scaled_down = _count(plan, StopReason.SCALED_DOWN)
    created = previous_replicas is None
    increase = status.desired_replicas - (previous_replicas or 0)
    scaled_up = min(len(plan.create), max(0, increase))
    replaced = len(plan.create) - scaled_up
    # A surge step starts new replicas beside the old ones before any of them stops.
    surged = plan.create and status.replicas > status.updated_replicas
    if rolled or surged:
        verb, count = ("replacing", rolled) if rolled else ("starting", len(plan.create))
        done = f"{verb} {counted(count, 'replica')}"
        events.append(
            Event(
                EventType.NORMAL,
                "Recreate" if recreated else "RollingUpdate",
                f"{done} with revision {short_revision(revision)}",
            )
        )
    else:
        if scaled_up and not created:
            message = _created(plan.create[:scaled_up], "created", "replica")
            events.append(Event(EventType.NORMAL, "ScaledUp", message))
        if replaced:
            message = _created(plan.create[scaled_up:], "replaced", "failed replica")
            events.append(Event(EventType.NORMAL, "Replaced", message))
    if plan.assign:
        message = f"placed {counted(len(plan.assign), 'waiting replica')}"
        events.append(Event(EventType.NORMAL, "Scheduled", message))
    if scaled_down:
        message = f"stopping {counted(scaled_down, 'replica')}"
        events.append(Event(EventType.NORMAL, "ScaledDown", message))
    stalled = _became(status, previous_conditions, ConditionType.STALLED)
    if stalled is not None:
        message = next(c.message for c in status.conditions if c.type is ConditionType.STALLED)
        events.append(Event(EventType.WARNING, stalled, message))
    if _became(status, previous_conditions, ConditionType.READY) is not None:
        message = f"{counted(status.ready_replicas, 'replica')} running"
        events.append(Event(EventType.NORMAL, "Ready", message))
    return tuple(events)


def failure_events(
    *, reason: str, message: str, stalled: bool, previous_conditions: Sequence[Mapping[str, Any]]
) -> tuple[Event, ...]:
    """The events of a reconcile that could not run (model/status.py `failure_status`).

    One that stalls (InvalidSpec) warns once, when Stalled turns True with its reason, as a
    reconcile that ran does for InsufficientCapacity: the message names the broken field, and
    `kubectl describe` is where a person looks. A retried cause (DatabaseUnavailable) posts
    nothing: the conditions say it while it lasts, and an outage would post one per object.
    """
    if stalled and _turned_true(ConditionType.STALLED, reason, previous_conditions):
        return (Event(EventType.WARNING, reason, message),)
    return ()


# Repeats of one event within this long of its last occurrence update the same Event object
# (count + lastTimestamp), as client-go's aggregator does with its default 10-minute window;
# a repeat after a longer quiet spell starts a new object, so `kubectl describe` shows it.
AGGREGATION_WINDOW = timedelta(minutes=10)
# Events remembered for aggregation: client-go's LRU size. About 1 MiB at most; the oldest
# are forgotten first (a repeat then simply starts a new Event object).
REMEMBERED_EVENTS = 4096


@dataclass(frozen=True, slots=True)
class Occurrence:
    """An event as the API stores it: one named object, how often it happened, first and last."""

    name: str
    event: Event
    count: int
    first: datetime
    last: datetime


class EventSeries:
    """Folds repeats of an event about one object into one Event object with a count.

    A crash loop replaces a replica every few seconds; posting each as its own Event buried
    everything else in `kubectl describe` (16 identical events in 48 s). An event with the same
    object, type, reason and message as one seen within the window is the same Event object
    again, its count and last time raised. Names are chosen here, as client-go does
    (`<object>.<hex nanoseconds>`), so a later repeat can address the object it updates.
    """

    def __init__(
        self, *, window: timedelta = AGGREGATION_WINDOW, capacity: int = REMEMBERED_EVENTS
    ) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, EventType, str, str], Occurrence] = OrderedDict()
        self._last_stamp = 0

    def observe(self, *, uid: str, name: str, event: Event, now: datetime) -> Occurrence:
        """The occurrence `event` about object `name` (`uid`) is at `now`."""
        key = (uid, event.type, event.reason, event.message)
        before = self._seen.pop(key, None)
        if before is not None and now - before.last <= self._window:
            occurrence = replace(before, count=before.count + 1, last=now)
        else:
            occurrence = Occurrence(
                name=f"{name}.{self._stamp(now):x}", event=event, count=1, first=now, last=now
            )
        self._seen[key] = occurrence
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return occurrence

    def _stamp(self, now: datetime) -> int:
        """Nanoseconds since the epoch, never the same twice: the name must be unique."""
        stamp = max(int(now.timestamp() * 1_000_000) * 1000, self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp
