import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import node, node_id, node_sets, requests, res, selectors, slots

from controller.model.placement import (
    NodeCapacity,
    Placement,
    Strategy,
    allocation_fraction,
    place,
)
from controller.model.resources import ZERO, Resources

BIG = res(4000, 8192, 0, 100)
ONE = res(1000, 1024)


def names(placement: Placement) -> list[str]:
    by_id = {node_id(f"n{i}"): f"n{i}" for i in range(10)}
    return [by_id[i] for i in placement.node_ids]


def run(
    nodes: Sequence[NodeCapacity],
    count: int,
    *,
    request: Resources = ONE,
    strategy: Strategy = Strategy.SPREAD,
    selector: dict[str, str] | None = None,
) -> Placement:
    return place(
        request=request, count=count, nodes=nodes, strategy=strategy, node_selector=selector or {}
    )


def test_strategy_values_match_the_crd() -> None:
    assert [s.value for s in Strategy] == ["Spread", "BinPack"]


def test_allocation_fraction_skips_dimensions_the_node_lacks() -> None:
    # cpu 50%, memory 25%; no GPU and no storage on this node, so they do not dilute the mean.
    assert allocation_fraction(capacity=res(2000, 4096), allocated=res(1000, 1024)) == 0.375
    assert allocation_fraction(capacity=res(2000, 4096, 2, 100), allocated=res(0, 0, 2, 0)) == 0.25
    assert allocation_fraction(capacity=ZERO, allocated=ZERO) == 0.0


def test_spread_alternates_and_breaks_ties_by_name() -> None:
    nodes = [node("n2", BIG), node("n1", BIG)]
    assert names(run(nodes, 4)) == ["n1", "n2", "n1", "n2"]


def test_binpack_fills_one_node_first() -> None:
    nodes = [node("n2", BIG), node("n1", BIG)]
    assert names(run(nodes, 5, strategy=Strategy.BIN_PACK)) == ["n1"] * 4 + ["n2"]


def test_binpack_prefers_the_fuller_node_spread_the_emptier() -> None:
    nodes = [node("n1", BIG, res(3000, 6144)), node("n2", BIG)]
    assert names(run(nodes, 1, strategy=Strategy.BIN_PACK)) == ["n1"]
    assert names(run(nodes, 1)) == ["n2"]


def test_score_counts_the_replica_being_placed() -> None:
    # Both empty; with the replica counted, the big node ends 10% full, the small one 100%.
    nodes = [node("n1", res(1000, 1024)), node("n2", res(10000, 10240))]
    assert names(run(nodes, 1)) == ["n2"]
    assert names(run(nodes, 1, strategy=Strategy.BIN_PACK)) == ["n1"]


def test_filters_by_selector_and_schedulable() -> None:
    nodes = [
        node("n1", BIG, labels={"zone": "a"}),
        node("n2", BIG, labels={"zone": "b", "gpu": "yes"}),
        node("n3", BIG, labels={"zone": "b"}, schedulable=False),
    ]
    assert set(names(run(nodes, 3, selector={"zone": "b"}))) == {"n2"}


def test_never_overcommits_any_dimension() -> None:
    # Plenty of CPU but room in memory for two replicas only.
    nodes = [node("n1", res(10000, 2048))]
    result = run(nodes, 3)
    assert len(result.node_ids) == 2
    assert result.unplaced == 1
    assert result.allocated == {node_id("n1"): res(2000, 2048)}


def test_shortfall_message() -> None:
    # n2 never fits a replica but comes closest afterwards: 60% of the CPU, vs 50% on n1.
    nodes = [node("n1", res(1500, 4096)), node("n2", res(600, 8192))]
    result = run(nodes, 3)
    assert result.unplaced == 2
    assert result.shortfall == (
        "need 1.0 CPU, 1024 MiB memory, 0 GPU, 0 GB storage per replica; 1 of 3 replicas "
        "placed; closest node n2 is short of 0.4 CPU"
    )


def test_shortfall_counts_already_placed_replicas() -> None:
    result = place(
        request=res(1000),
        count=2,
        nodes=[],
        strategy=Strategy.SPREAD,
        node_selector={"zone": "x"},
        already_placed=3,
    )
    assert result.shortfall is not None
    assert (
        "3 of 5 replicas placed; no schedulable node matches the node selector" in result.shortfall
    )


def test_no_shortfall_when_all_placed() -> None:
    result = run([node("n1", BIG)], 2)
    assert (result.unplaced, result.shortfall) == (0, None)


def test_overcommitted_node_takes_nothing() -> None:
    result = run([node("n1", res(1000, 1024), res(1500, 0))], 1, request=res(0, 1))
    assert result.unplaced == 1


def test_apply_to_chains_placements() -> None:
    nodes = [node("n1", res(2000, 2048)), node("n2", res(1000, 1024))]
    first = run(nodes, 2)
    nodes_after = first.apply_to(nodes=nodes)
    second = run(nodes_after, 2)
    assert len(second.node_ids) == 1
    assert second.unplaced == 1
    final = second.apply_to(nodes=nodes_after)
    assert all(n.allocated == n.capacity for n in final)


def test_zero_request_and_zero_count() -> None:
    assert run([node("n1", res(1))], 3, request=ZERO).node_ids == (node_id("n1"),) * 3
    assert run([node("n1", BIG)], 0) == Placement(
        node_ids=(), unplaced=0, shortfall=None, allocated={}
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count": -1}, "count"),
        ({"request": res(-1)}, "request"),
        ({"nodes": [node("n1", BIG), node("n1", BIG)]}, "unique"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {
        "request": res(1),
        "count": 1,
        "nodes": [],
        "strategy": Strategy.SPREAD,
        "node_selector": {},
    }
    with pytest.raises(ValueError, match=match):
        place(**(arguments | kwargs))  # type: ignore[arg-type]


def test_node_rejects_negative_capacity() -> None:
    with pytest.raises(ValueError, match="n1"):
        node("n1", res(-1))


@st.composite
def placement_cases(draw: st.DrawFn) -> tuple[list[NodeCapacity], Resources]:
    request = draw(requests)
    return draw(node_sets(room_for=request)), request


@given(
    case=placement_cases(),
    count=st.integers(0, 20),
    strategy=st.sampled_from(Strategy),
    selector=selectors,
)
def test_property_placement_is_safe_and_complete(
    case: tuple[list[NodeCapacity], Resources],
    count: int,
    strategy: Strategy,
    selector: dict[str, str],
) -> None:
    nodes, request = case
    result = place(
        request=request, count=count, nodes=nodes, strategy=strategy, node_selector=selector
    )
    eligible = [n for n in nodes if n.accepts(node_selector=selector)]
    per_node = Counter(result.node_ids)

    assert len(result.node_ids) + result.unplaced == count
    assert set(per_node) <= {n.node_id for n in eligible}
    after = result.apply_to(nodes=nodes)
    for before, now in zip(nodes, after, strict=True):
        assert now.allocated == before.allocated + request * per_node[before.node_id]
        if before.allocated.fits_in(before.capacity):
            assert now.allocated.fits_in(now.capacity), "over-committed"
        else:  # already over-committed (capacity shrank): it takes nothing more
            assert per_node[before.node_id] == 0, "placed on an over-committed node"
    # Same request every time, so the greedy loses nothing: it fills every slot there is.
    assert result.unplaced == max(0, count - sum(slots(n, request) for n in eligible))
    if result.unplaced:
        assert not any(request.fits_in(n.free) for n in after if n.accepts(node_selector=selector))
        assert result.shortfall is not None
        assert "\n" not in result.shortfall
    else:
        assert result.shortfall is None


@given(
    case=placement_cases(),
    count=st.integers(0, 20),
    strategy=st.sampled_from(Strategy),
    order=st.randoms(use_true_random=False),
)
def test_property_placement_ignores_input_order(
    case: tuple[list[NodeCapacity], Resources],
    count: int,
    strategy: Strategy,
    order: random.Random,
) -> None:
    nodes, request = case
    shuffled = list(nodes)
    order.shuffle(shuffled)
    assert run(nodes, count, request=request, strategy=strategy) == run(
        shuffled, count, request=request, strategy=strategy
    )


def test_large_placement_is_fast() -> None:
    many = [node(f"m{i}", BIG) for i in range(2000)]
    result = run(many, 8000, request=res(1000, 2048))
    assert result.unplaced == 0
    assert set(Counter(result.node_ids).values()) == {4}


def test_allocation_fraction_counts_only_requested_dimensions() -> None:
    gpu_node = res(8000, 16384, 1, 200)
    cpu_only = res(2000, 4096, 0, 50)
    # A quarter of the CPU, memory and storage: 0.25. The idle GPU does not count for a
    # request that uses none (counting it would give 0.75 / 4 = 0.1875).
    assert allocation_fraction(capacity=gpu_node, allocated=cpu_only, request=cpu_only) == 0.25
    # Without a request every dimension the node has counts, the idle GPU too.
    assert allocation_fraction(capacity=gpu_node, allocated=cpu_only) == 0.1875


def test_spread_is_not_drawn_to_a_node_by_its_idle_gpu() -> None:
    gpu_node = node("a-gpu", res(4000, 8192, 1, 100), allocated=res(100))
    cpu_node = node("zeta-cpu", res(4000, 8192, 0, 100))
    result = place(
        request=res(500, 512, 0, 1),
        count=1,
        nodes=[gpu_node, cpu_node],
        strategy=Strategy.SPREAD,
        node_selector={},
    )
    # a-gpu already runs more CPU; only its unused GPU made it look emptier.
    assert result.node_ids == (cpu_node.node_id,)
