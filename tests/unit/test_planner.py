import uuid
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from model_builders import (
    Cluster,
    cluster_states,
    desired,
    finish,
    node,
    node_id,
    node_sets,
    overcommitted_nodes,
    placed_on,
    replica,
    replica_id,
    requests,
    res,
    rollout_specs,
    selectors,
    slots,
)

from controller.model.placement import NodeCapacity, Strategy
from controller.model.planner import (
    Assignment,
    DesiredState,
    NewReplica,
    ReplicaTransition,
    StopReason,
    plan,
)
from controller.model.resources import Resources
from controller.model.states import IllegalTransitionError, ReplicaStatus
from controller.model.strategy import Rollout

R = ReplicaStatus
ROOMY = res(8000, 16384)  # room for 16 replicas of the default 500m / 512 MiB request


def stops(step_transitions: tuple[ReplicaTransition, ...]) -> list[tuple[int, R, str]]:
    """(created_seq, target, reason) of each transition, given replica ids from replica()."""
    seq_of = {replica_id(seq): seq for seq in range(100)}
    return [(seq_of[t.replica_id], t.to_status, t.reason) for t in step_transitions]


def test_desired_replicas_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="replicas"):
        desired(-1)


def test_illegal_transition_cannot_be_planned() -> None:
    with pytest.raises(IllegalTransitionError):
        ReplicaTransition(
            replica_id=uuid.uuid4(), from_status=R.STOPPED, to_status=R.RUNNING, reason="X"
        )


def test_scale_up_from_nothing_spreads_new_pending_replicas() -> None:
    step = plan(desired=desired(3), replicas=[], nodes=[node("n1", ROOMY), node("n2", ROOMY)])
    assert step.create == (
        NewReplica(node_id=node_id("n1")),
        NewReplica(node_id=node_id("n2")),
        NewReplica(node_id=node_id("n1")),
    )
    assert (step.assign, step.transitions, step.unplaced, step.shortfall) == ((), (), 0, None)
    assert step.allocated == {node_id("n1"): res(1000, 1024), node_id("n2"): res(500, 512)}


def test_what_does_not_fit_is_created_without_a_node() -> None:
    running = [replica(1), replica(2)]
    # Room for four replicas; the two running ones already hold half of it.
    n1 = node("n1", res(2000, 2048), res(1000, 1024))
    step = plan(desired=desired(5), replicas=running, nodes=[n1])
    assert step.create == (NewReplica(node_id=node_id("n1")),) * 2 + (NewReplica(node_id=None),)
    assert step.unplaced == 1
    assert step.shortfall is not None
    assert "4 of 5 replicas placed" in step.shortfall


def test_unassigned_replicas_get_room_before_new_ones_are_created() -> None:
    waiting = [replica(1, R.PENDING, on=None), replica(2, R.PENDING, on=None)]
    # Room for two: both go to the waiting replicas; the third, new one has to wait.
    step = plan(desired=desired(3), replicas=waiting, nodes=[node("n1", res(1000, 1024))])
    assert step.assign == (
        Assignment(replica_id=replica_id(1), node_id=node_id("n1")),
        Assignment(replica_id=replica_id(2), node_id=node_id("n1")),
    )
    assert step.create == (NewReplica(node_id=None),)
    assert step.unplaced == 1


def test_scale_down_stops_not_yet_running_replicas_first_then_the_newest() -> None:
    replicas = [
        replica(1),
        replica(2),
        replica(3, R.STARTING),
        replica(4, R.PENDING),
        replica(5, R.PENDING, on=None),
        replica(6, R.STOPPING),  # already on its way out: neither counted nor touched
    ]
    step = plan(desired=desired(0), replicas=replicas, nodes=[node("n1", ROOMY)])
    down = StopReason.SCALED_DOWN
    assert stops(step.transitions) == [
        (5, R.STOPPED, down),  # ran nowhere: nothing to wait for
        (4, R.STOPPING, down),
        (3, R.STOPPING, down),
        (2, R.STOPPING, down),
        (1, R.STOPPING, down),
    ]
    assert (step.create, step.assign) == ((), ())
    partial = plan(desired=desired(3), replicas=replicas, nodes=[node("n1", ROOMY)])
    assert stops(partial.transitions) == [(5, R.STOPPED, down), (4, R.STOPPING, down)]


def test_scale_down_prefers_old_revision_within_a_tier() -> None:
    # Paused, so the old-revision replica is not rolled: it is scaled down like any other.
    replicas = [replica(1), replica(2, revision="r0"), replica(3)]
    spec = replace(desired(2), rollout=Rollout(paused=True))
    step = plan(desired=spec, replicas=replicas, nodes=[node("n1", ROOMY)])
    assert stops(step.transitions) == [(2, R.STOPPING, StopReason.SCALED_DOWN)]


def test_rolling_update_replaces_within_the_budget_oldest_first() -> None:
    old = [replica(seq, revision="r0") for seq in range(1, 9)]
    step = plan(desired=desired(8), replicas=old, nodes=[node("n1", ROOMY)])
    update = StopReason.ROLLING_UPDATE
    # 25% of 8: two may be unavailable and two more may surge, so four new ones start.
    assert stops(step.transitions) == [(1, R.STOPPING, update), (2, R.STOPPING, update)]
    assert step.create == (NewReplica(node_id=node_id("n1")),) * 4


def test_rolling_update_of_a_single_replica_surges_before_taking_it_down() -> None:
    old = [replica(1, revision="r0")]
    step = plan(desired=desired(1), replicas=old, nodes=[node("n1", ROOMY)])
    # 25% of 1: maxSurge rounds up to 1, maxUnavailable down to 0.
    assert (stops(step.transitions), len(step.create)) == ([], 1)
    running = [*old, replica(2)]
    after = plan(desired=desired(1), replicas=running, nodes=[node("n1", ROOMY)])
    assert stops(after.transitions) == [(1, R.STOPPING, StopReason.ROLLING_UPDATE)]
    assert after.create == ()


def test_old_replicas_that_serve_nobody_are_replaced_without_budget() -> None:
    replicas = [
        replica(1, revision="r0"),
        replica(2, revision="r0"),
        replica(3, revision="r0"),
        replica(4, R.STARTING, revision="r0"),
        replica(5, R.PENDING, on=None, revision="r0"),
    ]
    step = plan(desired=desired(5), replicas=replicas, nodes=[node("n1", ROOMY)])
    update = StopReason.ROLLING_UPDATE
    # 3 running, min available 5 - 1 = 4: no budget for running ones yet; 2 may surge.
    assert stops(step.transitions) == [(5, R.STOPPED, update), (4, R.STOPPING, update)]
    assert len(step.create) == 4


def test_rolling_update_waits_while_the_budget_is_spent() -> None:
    replicas = [
        replica(2, revision="r0"),
        replica(3, revision="r0"),
        replica(4, revision="r0"),
        replica(1, R.STOPPING, revision="r0"),
        replica(5, R.PENDING),  # its replacement, not running yet
    ]
    spec = replace(desired(4), rollout=Rollout(max_surge=0, max_unavailable=1))
    assert plan(desired=spec, replicas=replicas, nodes=[node("n1", ROOMY)]).is_empty


def test_stopping_replicas_keep_their_capacity() -> None:
    # n1 has room for exactly one replica, and the stopping old one still holds it.
    full = node("n1", res(500, 512), res(500, 512))
    replicas = [replica(1, R.STOPPING, revision="r0"), replica(2, R.PENDING, on=None)]
    step = plan(desired=desired(1), replicas=replicas, nodes=[full])
    assert step.is_empty
    assert step.unplaced == 1


def test_shortfall_counts_every_placed_replica_of_the_deployment() -> None:
    step = plan(
        desired=desired(5),
        replicas=[replica(1), replica(2), replica(3)],
        nodes=[node("n1", res(1500, 1536), res(1500, 1536))],
    )
    assert step.shortfall is not None
    assert "3 of 5 replicas placed" in step.shortfall


def test_nothing_to_do_is_an_empty_plan_even_when_capacity_is_short() -> None:
    waiting = [replica(1, R.PENDING, on=None)]
    step = plan(desired=desired(1), replicas=waiting, nodes=[])
    assert step.is_empty
    assert step.unplaced == 1


def test_rollout_on_a_full_cluster_converges_through_freed_slots() -> None:
    # Two nodes with room for exactly one replica each, and two replicas to update: the surge
    # replica waits without a node, and the rollout goes on within maxUnavailable.
    one_slot = res(500, 512)
    cluster = Cluster.of(node("n1", one_slot), node("n2", one_slot))
    finish(cluster, desired(2, revision="r0"), floor=0)
    spec = replace(desired(2), rollout=Rollout(max_surge=1, max_unavailable=1))
    first = cluster.plan(spec)
    # One old replica stops; its replacement and the surge replica wait for a free slot.
    assert (len(first.transitions), len(first.create), first.unplaced) == (1, 2, 2)
    finish(cluster, spec, floor=1)
    assert sorted(r.revision for r in cluster.active()) == ["r1", "r1"]


# --- simulation driver and properties -----------------------------------------------------


def assert_converged(cluster: Cluster, spec: DesiredState) -> None:
    active = cluster.active()
    assert len(active) == spec.replicas
    assert all(r.revision == spec.revision and r.is_available for r in active)
    for held_on in cluster.held():
        assert cluster.nodes[held_on].allocated.fits_in(cluster.nodes[held_on].capacity)


@given(state=cluster_states())
def test_property_one_plan_is_safe_and_replanning_is_a_no_op(
    state: tuple[Cluster, DesiredState],
) -> None:
    cluster, spec = state
    available_before = cluster.available()
    overcommitted = overcommitted_nodes(cluster)
    step = cluster.plan(spec)
    cluster.apply(step, spec)

    assert len({t.replica_id for t in step.transitions}) == len(step.transitions)
    budget = spec.rollout.budget(spec.replicas)
    assert spec.replicas <= len(cluster.active()) <= spec.replicas + budget.surge
    assert cluster.available() >= min(available_before, budget.floor(spec.replicas))
    assert sum(1 for r in cluster.active() if r.is_unassigned) == step.unplaced
    assert not overcommitted & set(placed_on(step)), "placed on an over-committed node"
    for n in cluster.nodes.values():
        assert n.node_id in overcommitted or n.allocated.fits_in(n.capacity), "over-committed"
    for changed, allocation in step.allocated.items():
        assert cluster.nodes[changed].allocated == allocation
    if step.unplaced:
        eligible = cluster.nodes.values()
        assert not any(
            spec.request.fits_in(n.free)
            for n in eligible
            if n.accepts(node_selector=spec.node_selector)
        )
    assert cluster.plan(spec).is_empty


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[list[NodeCapacity], int, DesiredState]:
    """Nodes, a replica count to start from, and a new spec with another revision.

    The request stays the same (an image change), so a stopped old replica always frees a
    slot the new one can use; both counts are drawn within the slots the nodes offer.
    """
    request = draw(requests)
    selector = draw(selectors)
    nodes = [
        # The first node always qualifies, so most examples have something to roll out.
        replace(n, labels={**n.labels, **selector}, schedulable=True) if index == 0 else n
        for index, n in enumerate(draw(node_sets(min_size=1, room_for=request)))
    ]
    eligible = [n for n in nodes if n.accepts(node_selector=selector)]
    room = min(8, sum(slots(n, request) for n in eligible))  # 8 keeps a rollout short
    spec = DesiredState(
        replicas=draw(st.integers(0, room)),
        revision="r1",
        request=request,
        strategy=draw(st.sampled_from(Strategy)),
        node_selector=selector,
        rollout=draw(rollout_specs(moving=True)),
    )
    return nodes, draw(st.integers(0, room)), spec


@given(case=rollouts())
def test_property_rolling_update_converges_and_keeps_availability(
    case: tuple[list[NodeCapacity], int, DesiredState],
) -> None:
    nodes, before, spec = case
    cluster = Cluster.of(*nodes)
    old = DesiredState(
        replicas=before,
        revision="r0",
        request=spec.request,
        strategy=spec.strategy,
        node_selector=spec.node_selector,
    )
    finish(cluster, old, floor=0)
    assert_converged(cluster, old)

    # Recreate takes every old replica down at once; a rolling update keeps the floor.
    floor = min(before, spec.rollout.budget(spec.replicas).floor(spec.replicas))
    finish(cluster, spec, floor=0 if spec.rollout.recreate else floor)
    assert_converged(cluster, spec)


@given(
    nodes=node_sets(),
    start=st.integers(0, 6),
    old_request=requests,
    new_request=requests,
    spec_count=st.integers(0, 6),
)
def test_property_roomy_rollout_with_new_resources_converges(
    nodes: list[NodeCapacity],
    start: int,
    old_request: Resources,
    new_request: Resources,
    spec_count: int,
) -> None:
    # Every node has room for all old and new replicas at once, so nothing ever waits.
    roomy = [
        node(n.name, n.allocated + old_request * start + new_request * spec_count, n.allocated)
        for n in nodes
    ]
    assume(roomy)
    cluster = Cluster.of(*roomy)
    finish(cluster, desired(start, revision="r0", request=old_request), floor=0)
    spec = desired(spec_count, request=new_request, strategy=Strategy.BIN_PACK)
    floor = min(start, spec.rollout.budget(spec_count).floor(spec_count))
    finish(cluster, spec, floor=floor)
    assert_converged(cluster, spec)


def test_large_rollout_keeps_three_quarters_available() -> None:
    cluster = Cluster.of(node("n1", ROOMY), node("n2", ROOMY), node("n3", ROOMY))
    finish(cluster, desired(12, revision="r0"), floor=0)
    rounds = finish(cluster, desired(12), floor=9)  # 25% of 12: 3 unavailable, 3 surge
    assert_converged(cluster, desired(12))
    # 6 new while 3 old stop, 6 more while 6 stop, the last 3 stop; the fourth finds nothing.
    assert rounds == 3


# --- inputs from outside the spec: drained nodes and the restart backoff --------------------


def test_replicas_on_an_evacuated_node_move_within_the_budget_oldest_first() -> None:
    # n1 is being drained (cordoned, so not schedulable); n2 has room for all eight.
    draining = node("n1", ROOMY, schedulable=False)
    replicas = [replica(seq, on="n1") for seq in range(1, 9)]
    spec = replace(desired(8), evacuate=frozenset({node_id("n1")}))
    step = plan(desired=spec, replicas=replicas, nodes=[draining, node("n2", ROOMY)])
    update = StopReason.ROLLING_UPDATE
    assert stops(step.transitions) == [(1, R.STOPPING, update), (2, R.STOPPING, update)]
    assert step.create == (NewReplica(node_id=node_id("n2")),) * 4  # 2 replace, 2 surge


def test_evacuation_spares_other_nodes_and_moves_what_serves_nobody_at_once() -> None:
    replicas = [
        replica(1, on="n2"),
        replica(2, on="n2"),
        replica(3, on="n1"),
        replica(4, R.PENDING, on="n1"),  # not running yet: costs no budget
    ]
    spec = replace(desired(4), evacuate=frozenset({node_id("n1")}))
    nodes = [node("n1", ROOMY, schedulable=False), node("n2", ROOMY)]
    step = plan(desired=spec, replicas=replicas, nodes=nodes)
    update = StopReason.ROLLING_UPDATE
    # 3 available, at least 4 - 1 = 3 must stay: only the pending one goes now; its
    # replacement and one surge replica start on n2.
    assert stops(step.transitions) == [(4, R.STOPPING, update)]
    assert step.create == (NewReplica(node_id=node_id("n2")),) * 2
    without = plan(desired=desired(4), replicas=replicas, nodes=nodes)
    assert without.is_empty  # the same rows, no drain: nothing to do


def test_hold_new_creates_no_replacements_while_the_backoff_runs() -> None:
    crashed = [replica(1), replica(2, R.FAILED), replica(3, R.FAILED)]
    nodes = [node("n1", ROOMY)]
    held = plan(desired=replace(desired(3), hold_new=True), replicas=crashed, nodes=nodes)
    assert held.is_empty
    assert held.unplaced == 0  # holding back is not a shortage of room
    free = plan(desired=desired(3), replicas=crashed, nodes=nodes)
    assert free.create == (NewReplica(node_id=node_id("n1")),) * 2


def test_hold_new_stops_rollouts_and_drains_but_not_scale_down() -> None:
    replicas = [replica(1, revision="r0"), replica(2, revision="r0"), replica(3, on="n2")]
    spec = replace(desired(2), hold_new=True, evacuate=frozenset({node_id("n2")}))
    step = plan(desired=spec, replicas=replicas, nodes=[node("n1", ROOMY)])
    # Scaling down still happens (old revision first); nothing is replaced, nothing created.
    assert stops(step.transitions) == [(2, R.STOPPING, StopReason.SCALED_DOWN)]
    assert (step.create, step.assign) == ((), ())
