"""The rollout spec (model/strategy.py) and what the planner does with it, for each strategy.

Kubernetes' rules, as a Deployment follows them: maxSurge rounds up, maxUnavailable down, both
0 is bumped to maxUnavailable 1; RollingUpdate never goes below desired - maxUnavailable
available replicas nor above desired + maxSurge active ones; Recreate never runs two
revisions at once; a paused rollout replaces nothing but still scales.
"""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import (
    Cluster,
    cluster_states,
    desired,
    finish,
    node,
    replica,
    res,
    rollout_specs,
)

from controller.model.planner import DesiredState, StopReason, plan
from controller.model.replicas import ReplicaState
from controller.model.states import ReplicaStatus
from controller.model.strategy import (
    DEFAULT_ROLLOUT,
    Budget,
    Rollout,
    RolloutSpecError,
    RolloutType,
    parse_rollout,
    resolve,
)

R = ReplicaStatus
RUNS = {R.PENDING, R.STARTING, R.RUNNING, R.STOPPING}  # on a node, or about to be
ROOMY = res(16000, 32768)  # room for 32 replicas of the default 500m / 512 MiB request


# --- resolving maxSurge and maxUnavailable -----------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "up", "down"),
    [
        *[(0, 7, 0, 0), (3, 7, 3, 3), ("25%", 0, 0, 0), ("25%", 1, 1, 0), ("25%", 3, 1, 0)],
        *[("25%", 4, 1, 1), ("25%", 10, 3, 2), ("100%", 5, 5, 5), ("10%", 10, 1, 1)],
    ],
)
def test_percentages_round_as_kubernetes_rounds_them(
    value: int | str, total: int, up: int, down: int
) -> None:
    assert resolve(value, total=total, round_up=True) == up
    assert resolve(value, total=total, round_up=False) == down


@pytest.mark.parametrize(
    ("rollout", "replicas", "budget"),
    [
        (DEFAULT_ROLLOUT, 3, Budget(surge=1, unavailable=0)),
        (DEFAULT_ROLLOUT, 8, Budget(surge=2, unavailable=2)),
        (DEFAULT_ROLLOUT, 0, Budget(surge=0, unavailable=1)),  # both 0: maxUnavailable 1
        (Rollout(max_surge=0, max_unavailable="10%"), 5, Budget(surge=0, unavailable=1)),
        (Rollout(max_surge="0%", max_unavailable="50%"), 5, Budget(surge=0, unavailable=2)),
        (Rollout(type=RolloutType.RECREATE), 4, Budget(surge=1, unavailable=1)),
    ],
)
def test_budget_resolves_against_the_desired_count(
    rollout: Rollout, replicas: int, budget: Budget
) -> None:
    assert rollout.budget(replicas) == budget


# --- parsing the spec ----------------------------------------------------------------------


def test_an_absent_rollout_spec_means_the_kubernetes_defaults() -> None:
    assert parse_rollout({}) == DEFAULT_ROLLOUT
    assert DEFAULT_ROLLOUT == Rollout(  # noqa: SIM300 (the constant is what is tested)
        type=RolloutType.ROLLING_UPDATE,
        max_surge="25%",
        max_unavailable="25%",
        paused=False,
        progress_deadline_seconds=600,
    )


def test_every_rollout_field_is_read() -> None:
    spec = {
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 2, "maxUnavailable": "0%"},
        },
        "paused": True,
        "progressDeadlineSeconds": 30,
    }
    assert parse_rollout(spec) == Rollout(
        max_surge=2, max_unavailable="0%", paused=True, progress_deadline_seconds=30
    )
    assert parse_rollout({"strategy": {"type": "Recreate"}}).recreate


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"strategy": {"type": "BlueGreen"}},
            "spec.strategy.type: must be RollingUpdate or Recreate",
        ),
        (
            {"strategy": {"type": "Recreate", "rollingUpdate": {}}},
            "spec.strategy.rollingUpdate: may be set only with type RollingUpdate",
        ),
        (
            {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}},
            "spec.strategy.rollingUpdate.maxUnavailable: must not be 0 when maxSurge is 0",
        ),
        (
            {"strategy": {"rollingUpdate": {"maxSurge": "5"}}},
            "rollingUpdate.maxSurge: must be a percentage",
        ),
        (
            {"strategy": {"rollingUpdate": {"maxSurge": "101%"}}},
            "rollingUpdate.maxSurge: must be a percentage",
        ),
        (
            {"strategy": {"rollingUpdate": {"maxUnavailable": -1}}},
            "maxUnavailable: must be 0 to 100",
        ),
        (
            {"strategy": {"rollingUpdate": {"maxUnavailable": True}}},
            "maxUnavailable: must be an integer or",
        ),
        ({"paused": "yes"}, "spec.paused: must be true or false"),
        (
            {"progressDeadlineSeconds": 0},
            "spec.progressDeadlineSeconds: must be an integer of at least 1",
        ),
    ],
)
def test_a_bad_rollout_spec_is_one_line_naming_the_field(spec: dict, message: str) -> None:
    with pytest.raises(RolloutSpecError) as raised:
        parse_rollout(spec)
    assert message in str(raised.value)
    assert len(str(raised.value).splitlines()) == 1


# --- the planner, by example -----------------------------------------------------------------


def old(count: int) -> list[ReplicaState]:
    return [replica(seq, revision="r0") for seq in range(1, count + 1)]


def test_max_surge_and_max_unavailable_bound_each_step() -> None:
    spec = replace(desired(4), rollout=Rollout(max_surge=2, max_unavailable=1))
    step = plan(desired=spec, replicas=old(4), nodes=[node("n1", ROOMY)])
    # One old replica may go (floor 3), and 4 - 1 + 2 = 5... capped at 6 active: 3 new.
    assert [t.reason for t in step.transitions] == [StopReason.ROLLING_UPDATE]
    assert len(step.create) == 3


def test_surge_only_waits_for_new_replicas_to_run() -> None:
    spec = replace(desired(4), rollout=Rollout(max_surge=1, max_unavailable=0))
    step = plan(desired=spec, replicas=old(4), nodes=[node("n1", ROOMY)])
    assert (step.transitions, len(step.create)) == ((), 1)


def test_a_surge_replica_without_room_waits_while_the_rollout_goes_on() -> None:
    # The node is full with the 4 old replicas: the surge replica gets no node, and one old
    # replica still goes within maxUnavailable, its replacement waiting for its slot.
    full = node("n1", res(2000, 2048), res(2000, 2048))
    spec = replace(desired(4), rollout=Rollout(max_surge=1, max_unavailable=1))
    step = plan(desired=spec, replicas=old(4), nodes=[full])
    assert [t.reason for t in step.transitions] == [StopReason.ROLLING_UPDATE]
    assert (len(step.create), step.unplaced) == (2, 2)


def test_a_surge_cut_back_by_the_backoff_stops_unavailable_new_replicas_not_serving_old_ones() -> (
    None
):
    # 8 desired at 25%/25% (floor 6): 6 old replicas available, 3 new ones running but not yet
    # available (minReadySeconds); a new one failed, so the backoff holds new replicas back.
    old = [replica(i, revision="r0") for i in range(1, 7)]
    new = [replica(i) for i in range(7, 10)]
    spec = replace(desired(8), hold_new=True, available=lambda r: r.revision == "r0")
    result = plan(desired=spec, replicas=[*old, *new], nodes=[node("n1", ROOMY)])
    stopped = {t.replica_id for t in result.transitions}
    assert stopped == {new[-1].replica_id}  # back to 8, none of the 6 that serve
    assert not stopped & {r.replica_id for r in old}


def test_old_replicas_running_but_not_yet_available_go_within_the_cleanup_cap() -> None:
    # 10 running for less than minReadySeconds when a new spec comes: floor 8, so only 2 of
    # them may go at once (Kubernetes' maxScaledDown), not all 10 as if none served.
    old = [replica(i, revision="r0") for i in range(1, 11)]
    spec = replace(desired(10), available=lambda r: False)
    result = plan(desired=spec, replicas=old, nodes=[node("n1", ROOMY)])
    assert len(result.transitions) == 2
    assert {t.reason for t in result.transitions} == {StopReason.ROLLING_UPDATE}


def test_recreate_stops_every_old_replica_and_creates_after_they_stopped() -> None:
    spec = replace(desired(3), rollout=Rollout(type=RolloutType.RECREATE))
    replicas = [*old(2), replica(3, R.PENDING, on=None, revision="r0")]
    step = plan(desired=spec, replicas=replicas, nodes=[node("n1", ROOMY)])
    assert sorted((t.to_status, t.reason) for t in step.transitions) == [
        (R.STOPPED, StopReason.RECREATE),
        (R.STOPPING, StopReason.RECREATE),
        (R.STOPPING, StopReason.RECREATE),
    ]
    assert step.create == ()
    stopping = [replace(r, status=R.STOPPING) for r in old(2)]
    assert plan(desired=spec, replicas=stopping, nodes=[node("n1", ROOMY)]).is_empty
    gone = [replace(r, status=R.STOPPED) for r in old(2)]
    assert len(plan(desired=spec, replicas=gone, nodes=[node("n1", ROOMY)]).create) == 3


def test_paused_replaces_nothing_but_scales() -> None:
    spec = replace(desired(5), rollout=Rollout(paused=True))
    step = plan(desired=spec, replicas=old(3), nodes=[node("n1", ROOMY)])
    assert step.transitions == ()
    assert len(step.create) == 2  # the scale-up, of the spec's revision
    down = plan(desired=replace(spec, replicas=2), replicas=old(3), nodes=[node("n1", ROOMY)])
    assert [t.reason for t in down.transitions] == [StopReason.SCALED_DOWN]


def test_paused_recreate_does_not_mix_revisions_to_scale_up() -> None:
    spec = replace(desired(3), rollout=Rollout(type=RolloutType.RECREATE, paused=True))
    assert plan(desired=spec, replicas=old(2), nodes=[node("n1", ROOMY)]).is_empty


def test_a_drain_moves_replicas_while_paused() -> None:
    spec = replace(
        desired(2), rollout=Rollout(paused=True), evacuate=frozenset({node("n1", ROOMY).node_id})
    )
    step = plan(desired=spec, replicas=[replica(1), replica(2)], nodes=[node("n2", ROOMY)])
    assert len(step.create) == 1  # 25% of 2 surges one replacement first


# --- the planner, by property ----------------------------------------------------------------


def runs_old_revision(cluster: Cluster, spec: DesiredState) -> bool:
    """Whether a replica of another revision is on a node, not yet stopped."""
    return any(
        r.revision != spec.revision and r.node_id is not None and r.status in RUNS
        for r in cluster.replicas.values()
    )


@given(state=cluster_states(rollouts=rollout_specs(pausable=True)))
def test_property_every_strategy_keeps_its_bounds_in_one_plan(
    state: tuple[Cluster, DesiredState],
) -> None:
    cluster, spec = state
    rollout, budget = spec.rollout, spec.rollout.budget(spec.replicas)
    available_before = cluster.available()
    fits_before = {n.node_id for n in cluster.nodes.values() if n.allocated.fits_in(n.capacity)}
    step = cluster.plan(spec)
    cluster.apply(step, spec)

    assert len(cluster.active()) <= max(spec.replicas + budget.surge, 0)
    for node_id in fits_before:
        n = cluster.nodes[node_id]
        assert n.allocated.fits_in(n.capacity), "over node capacity"
    if rollout.paused:
        assert all(t.reason == StopReason.SCALED_DOWN for t in step.transitions)
    if rollout.recreate and not rollout.paused:
        assert all(r.revision == spec.revision for r in cluster.active()), "mixed revisions"
    if rollout.recreate and step.create:
        assert not runs_old_revision(cluster, spec), "created beside an old replica"
    if not rollout.recreate or rollout.paused:
        assert cluster.available() >= min(available_before, budget.floor(spec.replicas))
    assert cluster.plan(spec).is_empty


@given(
    count=st.integers(1, 6),
    rollout=rollout_specs(moving=True),
    slack=st.integers(0, 3),
)
def test_property_each_strategy_rolls_within_its_bounds_to_the_end(
    count: int, rollout: Rollout, slack: int
) -> None:
    # Room for exactly the replicas plus `slack`: surge beyond it has to wait for room.
    room = res(500 * (count + slack), 512 * (count + slack))
    cluster = Cluster.of(node("n1", room))
    finish(cluster, desired(count, revision="r0"), floor=0)
    spec = replace(desired(count), rollout=rollout)
    budget = rollout.budget(count)

    def within_bounds(cluster: Cluster) -> None:
        assert len(cluster.active()) <= count + budget.surge
        running = {r.revision for r in cluster.replicas.values() if r.status in RUNS}
        assert not rollout.recreate or len(running) == 1, "Recreate ran two revisions at once"

    floor = 0 if rollout.recreate else budget.floor(count)
    finish(cluster, spec, floor=floor, check=within_bounds)
    assert sorted(r.revision for r in cluster.active() if r.is_available) == ["r1"] * count


@given(count=st.integers(1, 6), more=st.integers(0, 3))
def test_property_paused_never_replaces_and_resuming_finishes(count: int, more: int) -> None:
    cluster = Cluster.of(node("n1", ROOMY))
    finish(cluster, desired(count, revision="r0"), floor=0)
    paused = replace(desired(count + more), rollout=Rollout(paused=True))

    def replaces_nothing(cluster: Cluster) -> None:
        assert sum(1 for r in cluster.active() if r.revision == "r0") == count

    finish(cluster, paused, floor=count, check=replaces_nothing)
    assert len(cluster.active()) == count + more
    finish(cluster, replace(paused, rollout=DEFAULT_ROLLOUT), floor=0)
    assert sorted(r.revision for r in cluster.active()) == ["r1"] * (count + more)
