"""Events say what a person should notice: one per decision, none for a quiet resync."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from model_builders import status_of

from controller.model.events import Event, EventSeries, EventType, Occurrence, events_for
from controller.model.planner import Assignment, NewReplica, Plan, ReplicaTransition, StopReason
from controller.model.replicas import ReplicaState
from controller.model.states import ReplicaStatus
from controller.model.status import FogDeploymentStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NODE = uuid.uuid4()


def _plan(**changes: Any) -> Plan:
    values: dict[str, Any] = {
        "create": (),
        "assign": (),
        "transitions": (),
        "unplaced": 0,
        "shortfall": None,
        "allocated": {},
    }
    values.update(changes)
    return Plan(**values)


def _running(count: int) -> list[ReplicaState]:
    return [
        ReplicaState(
            replica_id=uuid.uuid4(),
            node_id=NODE,
            status=ReplicaStatus.RUNNING,
            revision="r1",
            created_seq=seq,
        )
        for seq in range(count)
    ]


def _status(replicas: list[ReplicaState], desired: int, unplaced: int = 0) -> FogDeploymentStatus:
    return status_of(
        replicas,
        want=desired,
        now=NOW,
        unplaced=unplaced,
        shortfall="need 1 CPU; 2 of 3 replicas placed" if unplaced else None,
    )


def test_quiet_resync_posts_nothing() -> None:
    status = _status(_running(3), 3)
    previous = [c.as_dict() for c in status.conditions]
    assert (
        events_for(
            plan=_plan(),
            status=status,
            previous_conditions=previous,
            revision="r1",
            previous_replicas=3,
        )
        == ()
    )


def test_becoming_ready_is_posted_once() -> None:
    status = _status(_running(3), 3)
    first = events_for(
        plan=_plan(), status=status, previous_conditions=[], revision="r1", previous_replicas=3
    )
    assert [(e.type, e.reason, e.message) for e in first] == [
        (EventType.NORMAL, "Ready", "3 replicas running")
    ]


def test_scale_up_is_one_event_not_one_per_replica() -> None:
    plan = _plan(create=(NewReplica(node_id=NODE),) * 5)
    status = _status([], 5)
    events = events_for(
        plan=plan, status=status, previous_conditions=[], revision="r1", previous_replicas=0
    )
    assert [(e.reason, e.message) for e in events] == [("ScaledUp", "created 5 replicas")]


def test_a_new_deployment_posts_no_event_for_its_first_replicas() -> None:
    """The status says it; the event would be an API write per object for nothing (issue 15)."""
    plan = _plan(create=(NewReplica(node_id=NODE),) * 5)
    status = _status([], 5)
    events = events_for(
        plan=plan, status=status, previous_conditions=[], revision="r1", previous_replicas=None
    )
    assert events == ()


def test_scale_down_rolling_and_assignment() -> None:
    replicas = _running(2)
    plan = _plan(
        create=(NewReplica(node_id=NODE),),
        assign=(Assignment(replica_id=uuid.uuid4(), node_id=NODE),),
        transitions=(
            ReplicaTransition(
                replica_id=replicas[0].replica_id,
                from_status=ReplicaStatus.RUNNING,
                to_status=ReplicaStatus.STOPPING,
                reason=StopReason.ROLLING_UPDATE,
            ),
            ReplicaTransition(
                replica_id=replicas[1].replica_id,
                from_status=ReplicaStatus.RUNNING,
                to_status=ReplicaStatus.STOPPING,
                reason=StopReason.SCALED_DOWN,
            ),
        ),
    )
    events = events_for(
        plan=plan,
        status=_status(replicas, 2),
        previous_conditions=[],
        revision="abcdef0123456789",
        previous_replicas=2,
    )
    assert [(e.reason, e.message) for e in events][:3] == [
        ("RollingUpdate", "replacing 1 replica with revision abcdef012345"),
        ("Scheduled", "placed 1 waiting replica"),
        ("ScaledDown", "stopping 1 replica"),
    ]


def test_recreate_and_a_surge_step_are_rollout_events() -> None:
    old = [replace(r, revision="r0") for r in _running(2)]
    recreate = _plan(
        transitions=tuple(
            ReplicaTransition(
                replica_id=r.replica_id,
                from_status=ReplicaStatus.RUNNING,
                to_status=ReplicaStatus.STOPPING,
                reason=StopReason.RECREATE,
            )
            for r in old
        )
    )
    stopped = [replace(r, status=ReplicaStatus.STOPPING) for r in old]
    surge = _plan(create=(NewReplica(node_id=NODE),))
    pending = replace(_running(1)[0], status=ReplicaStatus.PENDING)
    posted = [
        events_for(
            plan=step,
            status=_status(after, 2),
            previous_conditions=[],
            revision="abcdef0123456789",
            previous_replicas=2,
        )[0]
        for step, after in ((recreate, stopped), (surge, [*old, pending]))
    ]
    assert [(e.reason, e.message) for e in posted] == [
        ("Recreate", "replacing 2 replicas with revision abcdef012345"),
        ("RollingUpdate", "starting 1 replica with revision abcdef012345"),
    ]


def test_insufficient_capacity_warns_once() -> None:
    status = _status(_running(2), 3, unplaced=1)
    first = events_for(
        plan=_plan(unplaced=1),
        status=status,
        previous_conditions=[],
        revision="r1",
        previous_replicas=3,
    )
    assert [(e.type, e.reason) for e in first] == [(EventType.WARNING, "InsufficientCapacity")]
    assert "2 of 3 replicas placed" in first[0].message
    again = events_for(
        plan=_plan(unplaced=1),
        status=status,
        previous_conditions=[c.as_dict() for c in status.conditions],
        revision="r1",
        previous_replicas=3,
    )
    assert again == ()


def test_replacing_failed_replicas_is_not_scaling() -> None:
    # Three wanted and three recorded: the new replica takes a failed one's place.
    plan = _plan(create=(NewReplica(node_id=NODE),))
    events = events_for(
        plan=plan,
        status=_status(_running(2), 3),
        previous_conditions=[],
        revision="r1",
        previous_replicas=3,
    )
    assert [(e.reason, e.message) for e in events] == [("Replaced", "replaced 1 failed replica")]


def test_a_scale_up_that_also_replaces_says_both_with_the_placement() -> None:
    # 2 -> 4 wanted while one of the two failed: two are new, one replaces, one has no room.
    plan = _plan(create=(NewReplica(node_id=NODE),) * 2 + (NewReplica(node_id=None),))
    events = events_for(
        plan=plan,
        status=_status(_running(1), 4),
        previous_conditions=[],
        revision="r1",
        previous_replicas=2,
    )
    assert [(e.reason, e.message) for e in events] == [
        ("ScaledUp", "created 2 replicas"),
        ("Replaced", "replaced 1 failed replica, 0 placed, 1 waiting for room"),
    ]


def _occurrences(*steps: tuple[Event, int], window_seconds: int = 600) -> list[Occurrence]:
    series = EventSeries(window=timedelta(seconds=window_seconds), capacity=2)
    return [
        series.observe(uid="u-1", name="web", event=event, now=NOW + timedelta(seconds=at))
        for event, at in steps
    ]


REPLACED = Event(EventType.NORMAL, "Replaced", "replaced 1 failed replica")


def test_repeats_within_the_window_are_one_object_counted() -> None:
    first, second, third = _occurrences((REPLACED, 0), (REPLACED, 3), (REPLACED, 9))
    assert first.name == second.name == third.name
    assert first.name.startswith("web.")
    assert [o.count for o in (first, second, third)] == [1, 2, 3]
    assert (third.first, third.last) == (NOW, NOW + timedelta(seconds=9))


def test_another_message_or_a_long_quiet_spell_starts_a_new_object() -> None:
    other = Event(EventType.NORMAL, "Replaced", "replaced 2 failed replicas")
    first, changed, later = _occurrences(
        (REPLACED, 0), (other, 0), (REPLACED, 700), window_seconds=600
    )
    assert len({first.name, changed.name, later.name}) == 3  # unique even at one instant
    assert (changed.count, later.count) == (1, 1)


def test_the_oldest_series_is_forgotten_beyond_the_capacity() -> None:
    ready = Event(EventType.NORMAL, "Ready", "1 replica running")
    scaled = Event(EventType.NORMAL, "ScaledUp", "created 1 replica")
    first, _, _, again = _occurrences((REPLACED, 0), (ready, 1), (scaled, 2), (REPLACED, 3))
    assert again.name != first.name
    assert again.count == 1
