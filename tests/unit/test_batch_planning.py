"""planner.plan_many: many deployments planned against one snapshot of node capacity.

The batched reconcile (issue 15 item 1) reads candidate nodes once for a group of
deployments and plans them in order, each on the nodes as the accepted plans before it left
them. These properties check it against a reference kept apart from the planner's own
bookkeeping: the allocation of each node is summed here from the requests of the replicas
the accepted plans put on it.
"""

import uuid
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from model_builders import desired, node, node_sets, replica, requests, res, selectors, slots

from controller.model.placement import NodeCapacity, Strategy
from controller.model.planner import DesiredState, Plan, plan, plan_many
from controller.model.replicas import ReplicaState
from controller.model.resources import Resources
from controller.model.states import ReplicaStatus

Want = tuple[DesiredState, list[ReplicaState]]


@st.composite
def deployments(draw: st.DrawFn) -> DesiredState:
    return DesiredState(
        replicas=draw(st.integers(0, 6)),
        revision="r1",
        request=draw(requests),
        strategy=draw(st.sampled_from(Strategy)),
        node_selector=draw(selectors),
    )


def placed(step: Plan) -> list[uuid.UUID]:
    """The nodes the plan puts a replica on (new ones and assignments)."""
    return [new.node_id for new in step.create if new.node_id is not None] + [
        assignment.node_id for assignment in step.assign
    ]


def one_at_a_time(wants: list[Want], nodes: list[NodeCapacity]) -> list[Plan]:
    """The reference: plan each alone on the nodes as the accepted plans before left them."""
    added: dict[uuid.UUID, Resources] = {}
    plans = []
    for spec, replicas in wants:
        current = [replace(n, allocated=n.allocated + added.get(n.node_id, res())) for n in nodes]
        step = plan(desired=spec, replicas=replicas, nodes=current)
        if not step.unplaced:
            for where in placed(step):
                added[where] = added.get(where, res()) + spec.request
        plans.append(step)
    return plans


@given(nodes=node_sets(min_size=1), specs=st.lists(deployments(), min_size=1, max_size=8))
def test_property_a_batch_places_what_one_at_a_time_would_and_never_overcommits(
    nodes: list[NodeCapacity], specs: list[DesiredState]
) -> None:
    wants: list[Want] = [(spec, []) for spec in specs]
    plans, left = plan_many(wants=wants, nodes=nodes)

    assert plans == one_at_a_time(wants, nodes)
    # Only the accepted plans hold room, and no node ends up holding more than it has
    # (a node that started over-committed gets nothing more).
    held: dict[uuid.UUID, Resources] = {}
    for (spec, _), step in zip(wants, plans, strict=True):
        if not step.unplaced:
            for where in placed(step):
                held[where] = held.get(where, res()) + spec.request
    by_id = {n.node_id: n for n in left}
    for before in nodes:
        after = by_id[before.node_id]
        assert after.allocated == before.allocated + held.get(before.node_id, res())
        if before.node_id in held:
            assert after.allocated.fits_in(after.capacity), f"{after.name} over-committed"
    # A deployment left unplaced found no eligible node with room, as the batch saw them.
    for index, ((spec, _), step) in enumerate(zip(wants, plans, strict=True)):
        if step.unplaced:
            seen = plan_many(wants=wants[:index], nodes=nodes)[1]
            eligible = [n for n in seen if n.accepts(node_selector=spec.node_selector)]
            assert sum(slots(n, spec.request) for n in eligible) < len(placed(step)) + (
                step.unplaced
            )


def test_the_second_deployment_plans_on_what_the_first_left() -> None:
    # Room for three replicas of 1 core: the first takes two, the second gets the last one
    # and waits for the other (it is left for a lone reconcile, and takes nothing).
    nodes = [node("n1", res(2000, 4096)), node("n2", res(1000, 4096))]
    first = desired(2, request=res(1000, 512))
    second = desired(2, request=res(1000, 512))
    third = desired(1, request=res(1000, 512))
    plans, left = plan_many(wants=[(first, []), (second, []), (third, [])], nodes=nodes)

    assert [len(placed(step)) for step in plans] == [2, 1, 1]
    assert [step.unplaced for step in plans] == [0, 1, 0]
    assert sorted(n.allocated.cpu_millis for n in left) == [1000, 2000]


def test_assignments_of_waiting_replicas_take_room_too() -> None:
    nodes = [node("n1", res(1000, 4096))]
    waiting = [replica(1, ReplicaStatus.PENDING, on=None)]
    plans, left = plan_many(
        wants=[(desired(1, request=res(1000, 512)), waiting), (desired(1), [])], nodes=nodes
    )

    assert [len(step.assign) for step in plans] == [1, 0]
    assert plans[1].unplaced == 1
    assert left[0].allocated == res(1000, 512)
