"""The Progressing condition and the progress deadline (model/progress.py), through the status.

Each step is one reconcile: the status it writes is the next one's `previous_status`, as the
live object carries it from one reconcile to the next.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from model_builders import replica, status_of

from controller.model.replicas import ReplicaState
from controller.model.states import ReplicaStatus
from controller.model.status import FogDeploymentStatus, Phase, failure_status
from controller.model.strategy import Rollout

R = ReplicaStatus
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
DEADLINE = Rollout(progress_deadline_seconds=60)
ROLLING = [replica(1, revision="r0"), replica(2, revision="r0"), replica(3, R.PENDING)]


def reconcile(
    replicas: Sequence[ReplicaState],
    *,
    at: float,
    previous: dict[str, Any] | None = None,
    rollout: Rollout = DEADLINE,
    generation: int = 1,
    want: int = 2,
    unplaced: int = 0,
) -> FogDeploymentStatus:
    """The status a reconcile computes `at` seconds after START."""
    return status_of(
        replicas,
        want=want,
        now=START + timedelta(seconds=at),
        generation=generation,
        unplaced=unplaced,
        previous=previous or {},
        rollout=rollout,
    )


def progressing(result: FogDeploymentStatus) -> dict[str, Any]:
    return next(c.as_dict() for c in result.conditions if c.type == "Progressing")


def stalled(result: FogDeploymentStatus) -> tuple[bool | None, str]:
    found = next(c for c in result.conditions if c.type == "Stalled")
    return found.status, found.reason


def test_a_rollout_that_starts_is_progressing_with_a_deadline_to_wake_for() -> None:
    first = reconcile(ROLLING, at=0)
    assert progressing(first) | {"message": ""} == {
        "type": "Progressing",
        "status": "True",
        "reason": "RevisionProgressing",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2025-01-02T03:04:05Z",
        "lastUpdateTime": "2025-01-02T03:04:05Z",
    }
    assert first.progress_due == START + timedelta(seconds=60)
    assert stalled(first) == (False, "RollingUpdate")


def test_no_progress_for_the_deadline_is_exceeded_and_stalled() -> None:
    first = reconcile(ROLLING, at=0).as_patch()
    waiting = reconcile(ROLLING, at=59, previous=first)
    assert progressing(waiting)["reason"] == "RevisionProgressing"
    assert waiting.progress_due == START + timedelta(seconds=60)
    late = reconcile(ROLLING, at=60, previous=waiting.as_patch())
    condition = progressing(late)
    assert (condition["status"], condition["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert "no progress for 60s (progressDeadlineSeconds)" in condition["message"]
    assert condition["lastUpdateTime"] == "2025-01-02T03:04:05Z"  # the last progress
    assert stalled(late) == (True, "ProgressDeadlineExceeded")
    assert (late.phase, late.progress_due) == (Phase.FAILED, None)
    # It stays exceeded while nothing moves.
    again = reconcile(ROLLING, at=61, previous=late.as_patch())
    assert progressing(again)["reason"] == "ProgressDeadlineExceeded"


def test_a_replica_becoming_available_is_progress_and_restarts_the_clock() -> None:
    first = reconcile(ROLLING, at=0).as_patch()
    late = reconcile(ROLLING, at=70, previous=first).as_patch()
    ran = [replica(1, revision="r0"), replica(2, revision="r0"), replica(3)]
    moved = reconcile(ran, at=80, previous=late)
    assert progressing(moved)["status"] == "True"
    assert progressing(moved)["lastUpdateTime"] == "2025-01-02T03:05:25Z"
    assert moved.progress_due == START + timedelta(seconds=140)
    assert stalled(moved)[0] is False


def test_an_old_replica_removed_is_progress() -> None:
    first = reconcile(ROLLING, at=0).as_patch()
    fewer = [replica(1, revision="r0"), replica(3, R.PENDING)]
    assert progressing(reconcile(fewer, at=70, previous=first))["status"] == "True"


def test_a_failed_replica_replaced_by_another_is_not_progress() -> None:
    first = reconcile(ROLLING, at=0).as_patch()
    replaced = [replica(1, revision="r0"), replica(2, revision="r0"), replica(4, R.PENDING)]
    assert progressing(reconcile(replaced, at=70, previous=first))["status"] == "False"


def test_a_complete_rollout_never_times_out_and_a_new_gap_starts_afresh() -> None:
    done = reconcile([replica(1), replica(2)], at=0)
    assert (progressing(done)["reason"], done.progress_due) == ("NewRevisionAvailable", None)
    # A replica lost days later: the clock starts then, not at the rollout's end.
    lost = reconcile([replica(1)], at=86400, previous=done.as_patch())
    assert progressing(lost)["reason"] == "RevisionProgressing"
    assert lost.progress_due == START + timedelta(seconds=86460)


def test_a_settled_rollout_writes_the_same_status_at_every_resync() -> None:
    done = reconcile([replica(1), replica(2)], at=0)
    later = reconcile([replica(1), replica(2)], at=600, previous=done.as_patch())
    assert later.as_patch() == done.as_patch()  # nothing to patch: no API write per resync
    paused = reconcile(ROLLING, at=0, rollout=Rollout(paused=True))
    again = reconcile(ROLLING, at=600, previous=paused.as_patch(), rollout=Rollout(paused=True))
    assert progressing(again) == progressing(paused)


def test_paused_is_unknown_not_stalled_and_resuming_restarts_the_clock() -> None:
    first = reconcile(ROLLING, at=0).as_patch()
    paused = reconcile(ROLLING, at=600, previous=first, rollout=Rollout(paused=True), generation=2)
    condition = progressing(paused)
    assert (condition["status"], condition["reason"]) == ("Unknown", "DeploymentPaused")
    assert paused.progress_due is None
    assert stalled(paused) == (False, "DeploymentPaused")  # Reconciling, as kstatus reads it
    resumed = reconcile(ROLLING, at=900, previous=paused.as_patch(), rollout=DEADLINE)
    assert progressing(resumed)["reason"] == "RevisionProgressing"
    assert resumed.progress_due == START + timedelta(seconds=960)


def test_a_new_spec_is_a_new_goal() -> None:
    late = reconcile(ROLLING, at=70, previous=reconcile(ROLLING, at=0).as_patch()).as_patch()
    edited = reconcile(ROLLING, at=71, previous=late, generation=2)
    assert progressing(edited)["reason"] == "RevisionProgressing"


def test_a_failed_reconcile_keeps_the_progressing_condition() -> None:
    written = reconcile(ROLLING, at=0).as_patch()
    body = failure_status(
        reason="DatabaseUnavailable",
        message="connection refused",
        stalled=False,
        generation=1,
        previous_conditions=written["conditions"],
        now=START + timedelta(seconds=5),
    )
    kept = [c for c in body["conditions"] if c["type"] == "Progressing"]
    assert kept == [c for c in written["conditions"] if c["type"] == "Progressing"]


def test_no_room_stays_the_stalled_reason_past_the_deadline() -> None:
    waiting = [replica(1, R.PENDING, on=None)]
    first = reconcile(waiting, at=0, want=1, unplaced=1)
    assert stalled(first) == (True, "InsufficientCapacity")
    late = reconcile(waiting, at=60, want=1, unplaced=1, previous=first.as_patch())
    assert progressing(late)["reason"] == "ProgressDeadlineExceeded"
    assert stalled(late) == (True, "InsufficientCapacity")  # says better why nothing moves
