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
from controller.model.planner import Plan, StopReason
from controller.model.status import FogDeploymentStatus


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


def events_for(
    *,
    plan: Plan,
    status: FogDeploymentStatus,
    previous_conditions: Sequence[Mapping[str, Any]],
    revision: str,
) -> tuple[Event, ...]:
    """The events one reconcile posts, given what it did and the status it computed."""
    events: list[Event] = []
    rolled = _count(plan, StopReason.ROLLING_UPDATE)
    scaled_down = _count(plan, StopReason.SCALED_DOWN)
    placed_new = sum(1 for replica in plan.create if replica.node_id is not None)
    if rolled:
        events.append(
            Event(
                EventType.NORMAL,
                "RollingUpdate",
                f"replacing {rolled} replicas with revision {revision[:12]}",
            )
        )
    elif plan.create:
        events.append(
            Event(
                EventType.NORMAL,
                "ScaledUp",
                f"created {len(plan.create)} replicas, {placed_new} placed on nodes",
            )
        )
    if plan.assign:
        events.append(
            Event(EventType.NORMAL, "Scheduled", f"placed {len(plan.assign)} waiting replicas")
        )
    if scaled_down:
        events.append(Event(EventType.NORMAL, "ScaledDown", f"stopping {scaled_down} replicas"))
    stalled = _became(status, previous_conditions, ConditionType.STALLED)
    if stalled is not None:
        message = next(c.message for c in status.conditions if c.type is ConditionType.STALLED)
        events.append(Event(EventType.WARNING, stalled, message))
    if _became(status, previous_conditions, ConditionType.READY) is not None:
        events.append(Event(EventType.NORMAL, "Ready", f"{status.ready_replicas} replicas running"))
    return tuple(events)
