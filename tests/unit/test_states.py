import itertools

import pytest

from controller.model.states import (
    ACTIVE_REPLICA_STATUSES,
    CAPACITY_HOLDING_STATUSES,
    DEPLOYMENT_TRANSITIONS,
    REPLICA_TRANSITIONS,
    TERMINAL_DEPLOYMENT_STATUSES,
    TERMINAL_REPLICA_STATUSES,
    DeploymentStatus,
    IllegalTransitionError,
    ReplicaStatus,
    check_deployment_transition,
    check_replica_transition,
    deployment_path,
    holds_capacity,
)

D = DeploymentStatus
R = ReplicaStatus

REPLICA_ALLOWED = {
    (R.PENDING, R.STARTING),
    (R.PENDING, R.STOPPING),
    (R.PENDING, R.STOPPED),
    (R.PENDING, R.FAILED),
    (R.STARTING, R.RUNNING),
    (R.STARTING, R.STOPPING),
    (R.STARTING, R.FAILED),
    (R.RUNNING, R.STOPPING),
    (R.RUNNING, R.FAILED),
    (R.STOPPING, R.STOPPED),
    (R.STOPPING, R.FAILED),
}

DEPLOYMENT_ALLOWED = {
    *((D.PENDING, s) for s in (D.SCHEDULED, D.RUNNING, D.STOPPED, D.FAILED, D.DELETED)),
    *((D.SCHEDULED, s) for s in (D.PENDING, D.RUNNING, D.STOPPED, D.FAILED, D.DELETED)),
    *((D.RUNNING, s) for s in (D.PENDING, D.SCHEDULED, D.STOPPED, D.FAILED, D.DELETED)),
    (D.STOPPED, D.PENDING),
    (D.STOPPED, D.DELETED),
    *((D.FAILED, s) for s in (D.PENDING, D.SCHEDULED, D.RUNNING, D.STOPPED, D.DELETED)),
}


def test_enum_values_are_the_postgres_labels() -> None:
    assert [s.value for s in D] == [
        "pending",
        "scheduled",
        "running",
        "stopped",
        "failed",
        "deleted",
    ]
    assert [s.value for s in R] == [
        "pending",
        "starting",
        "running",
        "stopping",
        "stopped",
        "failed",
    ]


def test_tables_cover_every_status() -> None:
    assert set(DEPLOYMENT_TRANSITIONS) == set(D)
    assert set(REPLICA_TRANSITIONS) == set(R)


@pytest.mark.parametrize(("old", "new"), sorted(REPLICA_ALLOWED))
def test_allowed_replica_transition(old: R, new: R) -> None:
    check_replica_transition(old=old, new=new)


@pytest.mark.parametrize(("old", "new"), sorted(set(itertools.product(R, R)) - REPLICA_ALLOWED))
def test_illegal_replica_transition_is_refused(old: R, new: R) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        check_replica_transition(old=old, new=new)
    assert str(old) in str(caught.value)
    assert str(new) in str(caught.value)
    assert (caught.value.old, caught.value.new) == (old, new)


@pytest.mark.parametrize(("old", "new"), sorted(DEPLOYMENT_ALLOWED))
def test_allowed_deployment_transition(old: D, new: D) -> None:
    check_deployment_transition(old=old, new=new)


@pytest.mark.parametrize(("old", "new"), sorted(set(itertools.product(D, D)) - DEPLOYMENT_ALLOWED))
def test_illegal_deployment_transition_is_refused(old: D, new: D) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{old} -> {new}"):
        check_deployment_transition(old=old, new=new)


def test_stopped_to_running_is_refused_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="stopped -> running"):
        check_deployment_transition(old=D.STOPPED, new=D.RUNNING)


def test_replica_status_sets() -> None:
    assert {R.PENDING, R.STARTING, R.RUNNING} == ACTIVE_REPLICA_STATUSES
    assert {R.PENDING, R.STARTING, R.RUNNING, R.STOPPING} == CAPACITY_HOLDING_STATUSES
    assert {R.STOPPED, R.FAILED} == TERMINAL_REPLICA_STATUSES
    assert {D.DELETED} == TERMINAL_DEPLOYMENT_STATUSES


@pytest.mark.parametrize(
    ("status", "has_node", "expected"),
    [
        (R.PENDING, False, False),
        (R.PENDING, True, True),
        (R.STARTING, True, True),
        (R.RUNNING, True, True),
        (R.STOPPING, True, True),
        (R.STOPPED, True, False),
        (R.FAILED, True, False),
    ],
)
def test_holds_capacity(status: R, has_node: bool, expected: bool) -> None:
    assert holds_capacity(status=status, has_node=has_node) is expected


def test_deployment_path_goes_through_pending_when_scaling_up_from_zero() -> None:
    assert deployment_path(old=D.STOPPED, new=D.SCHEDULED) == (D.PENDING, D.SCHEDULED)
    assert deployment_path(old=D.STOPPED, new=D.RUNNING) == (D.PENDING, D.RUNNING)


def test_deployment_path_direct_and_empty() -> None:
    assert deployment_path(old=D.RUNNING, new=D.STOPPED) == (D.STOPPED,)
    assert deployment_path(old=D.RUNNING, new=D.RUNNING) == ()


@pytest.mark.parametrize("new", [s for s in D if s is not D.DELETED])
def test_nothing_follows_deleted(new: D) -> None:
    with pytest.raises(IllegalTransitionError):
        deployment_path(old=D.DELETED, new=new)


@pytest.mark.parametrize(
    ("old", "new"), [(o, n) for o, n in itertools.product(D, D) if o is not D.DELETED or o is n]
)
def test_every_deployment_path_is_legal_step_by_step(old: D, new: D) -> None:
    previous = old
    for step in deployment_path(old=old, new=new):
        check_deployment_transition(old=previous, new=step)
        previous = step
    assert previous is new
