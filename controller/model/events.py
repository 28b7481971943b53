"""Which Kubernetes Events a reconcile posts: what a person should notice, nothing more.

Events are for people reading `kubectl describe`: one per decision (scaled up, placed waiting
replicas, started a rollout step, ran out of room, became ready), never one per replica or per
periodic resync that changed nothing. Choosing them is pure so the rule is testable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    if not current.status:
        return None
    prior = next((c for c in previous if c.get("type") == type_), None)
    if (
        prior is not None
        and prior.get("status") == "True"
        and prior.get("reason") == current.reason
    ):
        return None
    return current.reason


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
    previous_replicas: int,
) -> tuple[Event, ...]:
    """The events one reconcile posts, given what it did and the status it computed.

    previous_replicas is the desired count as last recorded (0 for a new deployment): new
    replicas up to the increase are a scale-up, the rest replace replicas that failed or were
    lost with their node (`Replaced`, so a crash loop does not read as scaling).
    """
    events: list[Event] = []
    rolled = _count(plan, StopReason.ROLLING_UPDATE)
    scaled_down = _count(plan, StopReason.SCALED_DOWN)
    scaled_up = min(len(plan.create), max(0, status.desired_replicas - previous_replicas))
    replaced = len(plan.create) - scaled_up
    if rolled:
        events.append(
            Event(
                EventType.NORMAL,
                "RollingUpdate",
                f"replacing {counted(rolled, 'replica')} with revision {short_revision(revision)}",
            )
        )
    else:
        if scaled_up:
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
