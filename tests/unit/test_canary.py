"""Canaries and the automatic revert (issue 16 item 5): the spec, the decision, the planner.

Pure: model/strategy.py reads spec.strategy.canary and autoRevert, model/canary.py decides
(canaries waiting, promoted, aborted, nothing to revert to), the planner keeps the canaries
counted apart from the old revision and stops an aborted revision's replicas, and the status
says CanaryWaiting (Reconciling) or RolloutAborted (Stalled, phase Failed).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import (
    Cluster,
    desired,
    node,
    node_sets,
    overcommitted_nodes,
    placed_on,
    replica,
    requests,
    res,
    status_of,
)

from controller.model import canary
from controller.model.canary import AbortReason, Facts, Stage, Verdict
from controller.model.conditions import ConditionType
from controller.model.planner import StopReason
from controller.model.progress import deadline_exceeded
from controller.model.replicas import ReplicaState
from controller.model.revision import Template
from controller.model.revisions import KnownRevision, RevisionPlan
from controller.model.rollout import progress
from controller.model.states import ReplicaStatus, holds_capacity
from controller.model.status import Phase, status_body
from controller.model.strategy import Rollout, RolloutSpecError, parse_rollout

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD_TEMPLATE = Template(image="app:1", request=res(500, 512), container_spec={}).as_spec()
GOOD = KnownRevision(1, "r0", True, template=OLD_TEMPLATE)
NEW = KnownRevision(2, "r1", False)
CANARY = Rollout(canary_replicas=1)
REVERTING = Rollout(canary_replicas=1, auto_revert=True)


def facts(
    *,
    rollout: Rollout = CANARY,
    known: tuple[KnownRevision, ...] = (GOOD, NEW),
    replicas: tuple[ReplicaState, ...] = (),
    failures: int = 0,
    exceeded: bool = False,
) -> Facts:
    return Facts(
        rollout=rollout,
        revision="r1",
        known=known,
        replicas=replicas or tuple(replica(seq, revision="r0") for seq in (1, 2, 3)),
        available=lambda r: r.is_available,
        failures=failures,
        deadline_exceeded=exceeded,
    )


# --- the spec -------------------------------------------------------------------------------


def test_canary_and_auto_revert_are_read_with_their_defaults() -> None:
    assert parse_rollout({}) == Rollout()
    read = parse_rollout(
        {"strategy": {"canary": {"replicas": 2, "autoPromote": True}, "autoRevert": True}}
    )
    assert (read.canary_replicas, read.auto_promote, read.auto_revert) == (2, True, True)
    assert parse_rollout({"strategy": {"canary": {"replicas": 1}}}).auto_promote is False


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (
            {"type": "Recreate", "canary": {"replicas": 1}},
            "spec.strategy.canary: may be set only with type RollingUpdate",
        ),
        ({"canary": {"replicas": 0}}, "spec.strategy.canary.replicas: must be an integer of"),
        ({"canary": {}}, "spec.strategy.canary.replicas: must be an integer of"),
        ({"canary": {"replicas": True}}, "spec.strategy.canary.replicas: must be an integer"),
        (
            {"canary": {"replicas": 1, "autoPromote": "yes"}},
            "spec.strategy.canary.autoPromote: must be true or false",
        ),
        ({"autoRevert": "yes"}, "spec.strategy.autoRevert: must be true or false"),
        ({"canary": 3}, "spec.strategy.canary: must be an object"),
    ],
)
def test_a_bad_canary_spec_is_one_line_naming_the_field(
    strategy: dict[str, Any], message: str
) -> None:
    with pytest.raises(RolloutSpecError, match=message.replace(".", r"\.")):
        parse_rollout({"strategy": strategy})


# --- the decision ---------------------------------------------------------------------------


def test_canaries_wait_beside_the_old_revision() -> None:
    verdict = canary.decide(facts())
    assert (verdict.stage, verdict.canaries, verdict.promote) == (Stage.CANARY_WAITING, 1, False)


def test_a_first_rollout_has_nothing_to_run_canaries_beside() -> None:
    verdict = canary.decide(facts(known=(NEW,), replicas=(replica(1, revision="r1"),)))
    assert verdict == Verdict(stage=Stage.NONE)


def test_a_promoted_or_completed_revision_has_no_canary_wait() -> None:
    assert canary.decide(facts(known=(GOOD, replace(NEW, promoted=True)))).stage is Stage.NONE
    assert canary.decide(facts(known=(GOOD, replace(NEW, completed=True)))).stage is Stage.NONE


def test_auto_promote_once_every_canary_is_available() -> None:
    auto = Rollout(canary_replicas=2, auto_promote=True)
    old = tuple(replica(seq, revision="r0") for seq in (1, 2, 3))
    one = canary.decide(
        facts(
            rollout=auto,
            replicas=(
                *old,
                replica(4, revision="r1"),
                replica(5, ReplicaStatus.STARTING, revision="r1"),
            ),
        )
    )
    assert (one.stage, one.canaries_available, one.promote) == (Stage.CANARY_WAITING, 1, False)
    both = canary.decide(
        facts(rollout=auto, replicas=(*old, replica(4, revision="r1"), replica(5, revision="r1")))
    )
    assert (both.stage, both.promote) == (Stage.NONE, True)


def test_auto_revert_aborts_a_failing_new_revision_back_to_the_last_completed() -> None:
    verdict = canary.decide(facts(rollout=REVERTING, failures=1))
    assert verdict.stage is Stage.ABORTED
    assert verdict.abort is AbortReason.FAILED
    assert verdict.revert_to == GOOD


def test_auto_revert_aborts_a_rollout_past_its_deadline() -> None:
    verdict = canary.decide(facts(rollout=Rollout(auto_revert=True), exceeded=True))
    assert (verdict.stage, verdict.abort) == (Stage.ABORTED, AbortReason.DEADLINE)


def test_without_auto_revert_failing_canaries_only_wait() -> None:
    verdict = canary.decide(facts(failures=3, exceeded=True))
    assert (verdict.stage, verdict.abort) == (Stage.CANARY_WAITING, None)


def test_a_stored_abort_stands_without_being_stored_again() -> None:
    aborted = replace(NEW, aborted=AbortReason.FAILED)
    verdict = canary.decide(facts(rollout=REVERTING, known=(GOOD, aborted)))
    assert (verdict.stage, verdict.abort, verdict.revert_to) == (Stage.ABORTED, None, GOOD)
    assert verdict.aborted_reason == AbortReason.FAILED


def test_nothing_completed_means_nothing_to_revert_to_and_the_canaries_keep_waiting() -> None:
    never = replace(GOOD, completed=False)
    verdict = canary.decide(facts(rollout=REVERTING, known=(never, NEW), failures=1))
    assert (verdict.stage, verdict.abort, verdict.canaries) == (Stage.NO_REVERT, None, 1)


def test_a_revision_without_a_stored_template_is_no_revert_target() -> None:
    unknown = replace(GOOD, template=None)
    assert canary.last_completed((unknown, NEW), revision="r1") is None


def test_the_deadline_read_is_this_generations() -> None:
    status = {
        "observedGeneration": 4,
        "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
    }
    assert deadline_exceeded(status, generation=4)
    assert not deadline_exceeded(status, generation=5)


# --- the planner ----------------------------------------------------------------------------


def _cluster(*replicas: ReplicaState) -> Cluster:
    cluster = Cluster.of(node("n1", res(8000, 16384)), node("n2", res(8000, 16384)))
    for each in replicas:
        cluster.replicas[each.replica_id] = each
        cluster.requests[each.replica_id] = res(500, 512)
    cluster.next_seq = 1 + max((r.created_seq for r in replicas), default=0)
    return cluster


def test_canaries_start_beside_the_old_replicas_and_nothing_else_moves() -> None:
    cluster = _cluster(*(replica(seq, revision="r0") for seq in (1, 2, 3)))
    spec = replace(desired(3, revision="r1"), canary=1)
    for _ in range(4):
        step = cluster.plan(spec)
        assert not step.transitions
        cluster.apply(step, spec)
        cluster.agents_act()
    revisions = sorted(r.revision for r in cluster.active())
    assert revisions == ["r0", "r0", "r0", "r1"]


def test_more_canaries_than_asked_are_scaled_down_not_old_ones() -> None:
    cluster = _cluster(
        *(replica(seq, revision="r0") for seq in (1, 2, 3)),
        replica(4, revision="r1"),
        replica(5, revision="r1"),
    )
    step = cluster.plan(replace(desired(3, revision="r1"), canary=1))
    assert [(t.replica_id, t.reason) for t in step.transitions] == [
        (replica(5).replica_id, StopReason.SCALED_DOWN)
    ]


def test_an_aborted_revision_is_stopped_and_the_old_one_refilled() -> None:
    cluster = _cluster(replica(1, revision="r0"), replica(2, revision="r1"))
    spec = replace(desired(3, revision="r0"), aborted=frozenset({"r1"}))
    step = cluster.plan(spec)
    assert [(t.replica_id, t.reason) for t in step.transitions] == [
        (replica(2).replica_id, StopReason.ROLLOUT_ABORTED)
    ]
    assert len(step.create) == 2
    cluster.apply(step, spec)
    assert sorted(r.revision for r in cluster.active()) == ["r0", "r0", "r0"]


@st.composite
def canary_states(draw: st.DrawFn) -> tuple[Cluster, int, int, str]:
    """Old replicas (r0) at their full count, some canaries (r1) in any status, any nodes."""
    request = draw(requests)
    nodes = draw(node_sets(room_for=request))
    cluster = Cluster.of(*nodes)
    places = [n.node_id for n in nodes]
    full = draw(st.integers(1, 6))
    statuses = [ReplicaStatus.RUNNING] * full + draw(
        st.lists(st.sampled_from(ReplicaStatus), max_size=5)
    )
    for seq, status in enumerate(statuses, start=1):
        on = draw(st.sampled_from(places)) if places else None
        if on is None and status not in {ReplicaStatus.PENDING, ReplicaStatus.STOPPED}:
            status = ReplicaStatus.PENDING
        cluster.replicas[replica(seq).replica_id] = ReplicaState(
            replica_id=replica(seq).replica_id,
            node_id=on,
            status=status,
            revision="r0" if seq <= full else "r1",
            created_seq=seq,
        )
        cluster.requests[replica(seq).replica_id] = request
        if on is not None and holds_capacity(status=status, has_node=True):
            cluster._allocate(on, request)  # what the rows hold, as the trigger keeps it
        cluster.next_seq = seq + 1
    return cluster, full, draw(st.integers(1, 4)), draw(st.sampled_from(["wait", "abort"]))


@given(state=canary_states())
def test_property_canaries_are_counted_apart_and_an_abort_leaves_none(
    state: tuple[Cluster, int, int, str],
) -> None:
    """Several rounds: never more than N canaries, the old revision never stopped below its
    count while they wait, nothing placed on a node without room, an aborted revision gets
    no replica and keeps none."""
    cluster, full, count, mode = state
    request = next(iter(cluster.requests.values()))
    base = replace(desired(full, revision="r1"), request=request)
    spec = (
        replace(base, canary=count)
        if mode == "wait"
        else replace(base, revision="r0", aborted=frozenset({"r1"}))
    )
    for _ in range(6):
        over = overcommitted_nodes(cluster)
        step = cluster.plan(spec)
        assert not over & set(placed_on(step))
        cluster.apply(step, spec)
        assert overcommitted_nodes(cluster) <= over  # no node pushed over its capacity
        canaries = [r for r in cluster.active() if r.revision == "r1"]
        old = [r for r in cluster.active() if r.revision == "r0"]
        if mode == "wait":
            assert len(canaries) <= count
            assert len(old) == full  # the planner stopped none of them
        else:
            assert not canaries
        cluster.agents_act()


# --- the status -----------------------------------------------------------------------------


def _status(replicas: tuple[ReplicaState, ...], stage: Verdict) -> Any:
    return status_of(replicas, want=3, now=NOW, generation=2, rollout=CANARY, stage=stage)


def _verdict(status: Any) -> tuple[ConditionType, str]:
    found = next(c for c in status.conditions if c.status and c.type != "Progressing")
    return found.type, found.reason


def test_waiting_canaries_are_reconciling_with_reason_canary_waiting() -> None:
    old = tuple(replica(seq, revision="r0") for seq in (1, 2, 3))
    stage = Verdict(stage=Stage.CANARY_WAITING, canaries=1, canaries_available=1)
    status = _status((*old, replica(4, revision="r1")), stage)
    assert _verdict(status) == (ConditionType.RECONCILING, "CanaryWaiting")
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == (True, "CanaryWaiting")
    assert status.progress_due is None  # a person decides: no deadline runs
    numbers = RevisionPlan(2, False, None, (), False, 1)
    body = status_body(status, name="web", revisions=numbers, stage=stage)
    assert body["canary"] == {"revision": 2, "replicas": 1, "available": 1}
    assert status_body(status, name="web", revisions=numbers)["canary"] is None


def test_an_aborted_rollout_is_stalled_and_failed_and_says_what_serves() -> None:
    old = tuple(replica(seq, revision="r0") for seq in (1, 2, 3))
    stage = Verdict(stage=Stage.ABORTED, aborted_reason=AbortReason.FAILED, revert_to=GOOD)
    status = _status(old, stage)
    assert _verdict(status) == (ConditionType.STALLED, "RolloutAborted")
    assert status.phase is Phase.FAILED
    stalled = next(c for c in status.conditions if c.type == ConditionType.STALLED)
    assert "NewRevisionFailed" in stalled.message
    assert "revision 1 serves" in stalled.message
    body = {
        "metadata": {"name": "web", "generation": 2},
        "spec": {"replicas": 3},
        "status": status.as_patch(),
    }
    verdict = progress(body)
    assert verdict.failed
    assert verdict.message.startswith('fogdeployment "web" rollout aborted')


def test_nothing_to_revert_to_is_said_in_the_status() -> None:
    old = tuple(replica(seq, revision="r0") for seq in (1, 2, 3))
    stage = Verdict(stage=Stage.NO_REVERT, canaries=1, aborted_reason=AbortReason.FAILED)
    status = _status((*old, replica(4, ReplicaStatus.FAILED, revision="r1")), stage)
    ready = next(c for c in status.conditions if c.status and c.type != "Progressing")
    assert "not reverted (NewRevisionFailed): no earlier revision completed" in ready.message


def test_rollout_status_waits_on_canaries() -> None:
    body = {
        "metadata": {"name": "web", "generation": 2},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 2,
            "replicas": 4,
            "updatedReplicas": 1,
            "canary": {"revision": 2, "replicas": 1, "available": 1},
        },
    }
    verdict = progress(body)
    assert not verdict.failed
    assert not verdict.done
    assert "waiting for promotion" in verdict.message
