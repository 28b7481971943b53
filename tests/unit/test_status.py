from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from model_builders import replica, status_of

from controller.model.conditions import REASON_PATTERN
from controller.model.replicas import ReplicaState
from controller.model.states import DeploymentStatus, ReplicaStatus
from controller.model.status import FogDeploymentStatus, Phase, status_changed

R = ReplicaStatus
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def status(
    want: int,
    replicas: Sequence[ReplicaState],
    *,
    unplaced: int = 0,
    shortfall: str | None = None,
    stalled: str | None = None,
    previous: Sequence[dict[str, Any]] = (),
    now: datetime = NOW,
) -> FogDeploymentStatus:
    return status_of(
        replicas,
        want=want,
        now=now,
        generation=7,
        unplaced=unplaced,
        shortfall=shortfall,
        conditions=previous,
        stalled=stalled,
    )


def truth(result: FogDeploymentStatus) -> dict[str, tuple[bool, str]]:
    return {str(c.type): (c.status, c.reason) for c in result.conditions}


def test_all_running_on_the_current_revision_is_ready() -> None:
    result = status(2, [replica(1), replica(2), replica(0, R.STOPPED)])
    assert (result.phase, result.deployment_status) == (Phase.RUNNING, DeploymentStatus.RUNNING)
    assert truth(result) == {
        "Ready": (True, "AllReplicasReady"),
        "Reconciling": (False, "AllReplicasReady"),
        "Stalled": (False, "AllReplicasReady"),
    }
    assert result.as_patch() == {
        "phase": "Running",
        "observedGeneration": 7,
        "revision": "r1",
        "replicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "updatedReplicas": 2,
        "unplacedReplicas": 0,
        "ready": "2/2",
        "conditions": [c.as_dict() for c in result.conditions],
    }
    assert all(c.observed_generation == 7 for c in result.conditions)


def test_placed_but_not_running_is_scheduled_and_scaling_up() -> None:
    result = status(3, [replica(1), replica(2, R.PENDING), replica(3, R.STARTING)])
    assert result.phase is Phase.SCHEDULED
    assert truth(result)["Reconciling"] == (True, "ScalingUp")
    assert truth(result)["Ready"] == (False, "ScalingUp")
    assert (result.replicas, result.ready_replicas, result.updated_replicas) == (3, 1, 3)


def test_rolling_update_with_every_replica_running_is_still_scheduled() -> None:
    replicas = [replica(1, revision="r0"), replica(2), replica(3)]
    result = status(3, replicas)
    assert result.phase is Phase.SCHEDULED
    assert truth(result)["Reconciling"] == (True, "RollingUpdate")
    assert (result.replicas, result.ready_replicas, result.updated_replicas) == (3, 3, 2)


def test_unplaced_replicas_are_pending_and_stalled_on_capacity() -> None:
    shortfall = "need 2.0 CPU ...; 1 of 2 replicas placed;\nno schedulable node"
    replicas = [replica(1), replica(2, R.PENDING, on=None)]
    result = status(2, replicas, unplaced=1, shortfall=shortfall)
    assert result.phase is Phase.PENDING
    assert truth(result) == {
        "Ready": (False, "InsufficientCapacity"),
        "Reconciling": (False, "InsufficientCapacity"),
        "Stalled": (True, "InsufficientCapacity"),
    }
    assert (result.unplaced_replicas, result.as_patch()["ready"]) == (1, "1/2")
    stalled = next(c for c in result.conditions if c.type == "Stalled")
    assert stalled.message == "need 2.0 CPU ...; 1 of 2 replicas placed; no schedulable node"


def test_a_waiting_replica_is_pending_even_without_a_shortfall_message() -> None:
    result = status(1, [replica(1, R.PENDING, on=None)])
    assert result.phase is Phase.PENDING
    assert truth(result)["Stalled"] == (True, "InsufficientCapacity")


def test_a_surge_replica_without_room_while_others_come_up_is_progress_not_a_stall() -> None:
    # 4 desired: 3 old serve, a new one starts in the room the fourth old one left, and the
    # surge replica has none; each new one available lets another old one go.
    old = [replica(i, revision="r0") for i in (1, 2, 3)]
    replicas = [*old, replica(4, R.STARTING), replica(5, R.PENDING, on=None)]
    result = status(4, replicas, unplaced=1, shortfall="need more")
    assert truth(result)["Stalled"] == (False, "AwaitingCapacity")
    reconciling = next(c for c in result.conditions if c.type == "Reconciling")
    assert reconciling.message == "need more; waiting for 1 replica to become available"
    # With nothing coming up (maxUnavailable 0, every old one serving) it is stuck.
    stuck = [*(replica(i, revision="r0") for i in (1, 2, 3, 4)), replica(5, R.PENDING, on=None)]
    assert truth(status(4, stuck, unplaced=1))["Stalled"] == (True, "InsufficientCapacity")


def test_waiting_for_stopping_replicas_to_free_room_is_progress_not_a_stall() -> None:
    replicas = [replica(1, R.STOPPING, revision="r0"), replica(2, R.PENDING, on=None)]
    result = status(1, replicas, unplaced=1, shortfall="need more")
    assert result.phase is Phase.PENDING
    assert truth(result)["Stalled"] == (False, "AwaitingCapacity")
    assert truth(result)["Reconciling"] == (True, "AwaitingCapacity")
    reconciling = next(c for c in result.conditions if c.type == "Reconciling")
    assert reconciling.message == "need more; waiting for 1 stopping replica"


def test_missing_replicas_are_pending() -> None:
    assert status(2, [replica(1)]).phase is Phase.PENDING


def test_supplied_stall_fails_the_deployment() -> None:
    result = status(2, [replica(1), replica(2, R.STARTING)], stalled="CrashLoopBackOff")
    assert (result.phase, result.deployment_status) == (Phase.FAILED, DeploymentStatus.FAILED)
    assert truth(result)["Stalled"] == (True, "CrashLoopBackOff")
    assert truth(result)["Reconciling"] == (False, "CrashLoopBackOff")


def test_a_stall_reason_must_be_a_token() -> None:
    with pytest.raises(ValueError, match="reason"):
        status(1, [replica(1)], stalled="crash loop")


def test_zero_replicas_is_stopped_and_ignores_stalls() -> None:
    result = status(0, [replica(1, R.STOPPED)], stalled="CrashLoopBackOff")
    assert (result.phase, result.deployment_status) == (Phase.STOPPED, DeploymentStatus.STOPPED)
    assert truth(result)["Ready"] == (True, "AllReplicasReady")


def test_stopping_replicas_keep_it_reconciling() -> None:
    result = status(0, [replica(1, R.STOPPING)])
    assert result.phase is Phase.STOPPED
    assert truth(result)["Reconciling"] == (True, "Terminating")
    assert truth(result)["Ready"] == (False, "Terminating")


def test_more_active_than_desired_is_scaling_down() -> None:
    result = status(1, [replica(1), replica(2)])
    assert result.phase is Phase.SCHEDULED
    assert truth(result)["Reconciling"] == (True, "ScalingDown")


def test_unchanged_status_keeps_transition_times_and_is_not_a_change() -> None:
    first = status(2, [replica(1), replica(2, R.PENDING)]).as_patch()
    an_hour_later = NOW + timedelta(hours=1)
    replicas = [replica(1), replica(2, R.PENDING)]
    later = status(2, replicas, previous=first["conditions"], now=an_hour_later).as_patch()
    assert later == first
    assert not status_changed(old={**first, "somethingElse": 1}, new=later)


def test_a_flip_moves_only_the_flipped_conditions() -> None:
    first = status(2, [replica(1), replica(2, R.PENDING)]).as_patch()
    later_time = NOW + timedelta(hours=1)
    done = status(2, [replica(1), replica(2)], previous=first["conditions"], now=later_time)
    times = {str(c.type): c.last_transition_time for c in done.conditions}
    assert times == {
        "Ready": "2025-01-02T04:04:05Z",
        "Reconciling": "2025-01-02T04:04:05Z",
        "Stalled": "2025-01-02T03:04:05Z",
    }
    assert status_changed(old=first, new=done.as_patch())


def test_status_changed_sees_missing_and_different_fields() -> None:
    assert status_changed(old={}, new={"phase": "Running"})
    assert status_changed(old={"phase": "Pending"}, new={"phase": "Running"})
    assert not status_changed(old={"phase": "Running"}, new={"phase": "Running"})


@pytest.mark.parametrize(
    "case",
    [
        {"want": 0, "replicas": []},
        {"want": 2, "replicas": [replica(1)]},
        {"want": 1, "replicas": [replica(1, revision="r0")]},
        {"want": 1, "replicas": [replica(1, R.PENDING, on=None)], "unplaced": 1},
        {"want": 1, "replicas": [replica(1), replica(2)]},
        {"want": 1, "replicas": [replica(1), replica(2, R.STOPPING)]},
        {"want": 1, "replicas": [replica(1, R.STOPPING), replica(2, R.PENDING, on=None)]},
    ],
)
def test_every_reason_is_valid_and_every_message_one_line(case: dict[str, Any]) -> None:
    result = status(case.pop("want"), case.pop("replicas"), **case)
    for condition in result.conditions:
        assert REASON_PATTERN.fullmatch(condition.reason)
        assert "\n" not in condition.message
        assert condition.message


@pytest.mark.parametrize(
    ("replicas", "reason"),
    [
        ([replica(1, revision="0" * 64), replica(2, revision="f" * 64)], "RollingUpdate"),
        ([replica(1, revision="f" * 64), replica(2, revision="f" * 64)], "AllReplicasReady"),
    ],
)
def test_messages_show_the_revision_as_short_as_status_revision(
    replicas: list[ReplicaState], reason: str
) -> None:
    full = "f" * 64
    result = status_of(replicas, want=2, now=NOW, revision=full)
    shown = result.as_patch()["revision"]
    assert shown == "f" * 12
    [verdict] = [c for c in result.conditions if c.status]
    assert verdict.reason == reason
    assert f"revision {shown}" in verdict.message
    assert full not in verdict.message
