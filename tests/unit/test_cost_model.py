"""The cost model: holds from a replica's history, clipping to a window, prices per node class.

Hand-computed figures for the cases a bill must get right (node loss, a rollout, zero-length
and open holds, clipping), and properties over random legal lifecycles: held time equals a
plain replay of the history row by row, and cost is additive over adjacent windows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import node_id, res

from controller.model.cost import (
    CostReport,
    Hold,
    NodeRecord,
    Operator,
    PriceClass,
    PriceList,
    Prices,
    ReplicaNow,
    ReplicaRecord,
    Requirement,
    Selector,
    Transition,
    Window,
    complete_history,
    cost_report,
    holds,
    removed_node_name,
    rounded,
    seconds,
)
from controller.model.resources import Resources
from controller.model.states import REPLICA_TRANSITIONS, ReplicaStatus, holds_capacity

R = ReplicaStatus
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
A, B, C = node_id("a"), node_id("b"), node_id("c")
NODES = {
    A: NodeRecord(name="a", labels={"tier": "edge"}),
    B: NodeRecord(name="b", labels={"tier": "core"}),
    C: NodeRecord(name="c", labels={}),
}
EDGE = Prices(
    cpu_core_hour=Decimal("0.03"),
    memory_gb_hour=Decimal("0.004"),
    gpu_unit_hour=Decimal("0.9"),
    storage_gb_hour=Decimal("0.0001"),
)
CORE = Prices(cpu_core_hour=Decimal("0.05"), memory_gb_hour=Decimal("0.006"))
PRICES = PriceList(
    currency="EUR",
    classes=(
        PriceClass("edge", Selector(MappingProxyType({"tier": "edge"})), EDGE),
        PriceClass(
            "core",
            Selector(match_expressions=(Requirement("tier", Operator.IN, frozenset({"core"})),)),
            CORE,
        ),
    ),
)
SMALL = res(cpu_millis=500, memory_mb=512, storage_gb=1)
LARGE = res(cpu_millis=1500, memory_mb=2048, gpu_units=1, storage_gb=10)


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def row(status: ReplicaStatus, node: uuid.UUID | None, second: float) -> Transition:
    return Transition(status=status, node_id=node, at=at(second))


def replica(*rows: Transition, request: Resources = SMALL, name: str = "web") -> ReplicaRecord:
    return ReplicaRecord(namespace="team-a", deployment=name, request=request, transitions=rows)


def hourly(prices: Prices, request: Resources) -> Fraction:
    """The price of one replica-hour, written out by hand from the four unit prices."""
    return (
        Fraction(request.cpu_millis, 1000) * Fraction(prices.cpu_core_hour)
        + Fraction(request.memory_mb, 1024) * Fraction(prices.memory_gb_hour)
        + request.gpu_units * Fraction(prices.gpu_unit_hour)
        + request.storage_gb * Fraction(prices.storage_gb_hour)
    )


def cost_of(seconds_held: float, prices: Prices, request: Resources = SMALL) -> Fraction:
    return Fraction(seconds_held) / 3600 * hourly(prices, request)


def report(*replicas: ReplicaRecord, start: float | None = None, end: float = 10_000) -> CostReport:
    window = Window(start=None if start is None else at(start), end=at(end))
    return cost_report(replicas=replicas, nodes=NODES, prices=PRICES, window=window)


# --- holds --------------------------------------------------------------------------------


def test_a_replica_placed_at_creation_holds_from_its_first_row_until_it_stops() -> None:
    history = (
        row(R.PENDING, A, 0),
        row(R.STARTING, A, 1),
        row(R.RUNNING, A, 2),
        row(R.STOPPING, A, 50),
        row(R.STOPPED, A, 53.25),
    )
    assert holds(history) == [Hold(node_id=A, start=at(0), end=at(53.25))]


def test_a_replica_waiting_without_a_node_holds_from_its_first_row_naming_one() -> None:
    history = (row(R.PENDING, None, 0), row(R.STARTING, A, 30), row(R.FAILED, A, 31))
    assert holds(history) == [Hold(node_id=A, start=at(30), end=at(31))]


def test_a_replica_that_never_got_a_node_holds_nothing() -> None:
    assert holds((row(R.PENDING, None, 0), row(R.STOPPED, None, 9))) == []


def test_a_replica_still_running_holds_an_open_interval() -> None:
    assert holds((row(R.PENDING, B, 0), row(R.RUNNING, B, 4))) == [Hold(B, at(0), None)]


def test_rows_are_taken_in_time_order_whatever_order_they_come_in() -> None:
    history = (row(R.STOPPED, A, 9), row(R.PENDING, A, 1), row(R.STOPPING, A, 5))
    assert holds(history) == [Hold(A, at(1), at(9))]


def test_a_history_naming_another_node_is_charged_to_each_node_for_its_time() -> None:
    history = (row(R.PENDING, A, 0), row(R.RUNNING, B, 10), row(R.FAILED, B, 25))
    assert holds(history) == [Hold(A, at(0), at(10)), Hold(B, at(10), at(25))]


# --- what the replica row adds to its history ----------------------------------------------


def now_row(
    status: ReplicaStatus, node: uuid.UUID | None, *, assigned: float | None = None
) -> ReplicaNow:
    return ReplicaNow(
        status=status,
        node_id=node,
        created_at=at(-1),
        assigned_at=None if assigned is None else at(assigned),
    )


def test_a_full_history_of_a_replica_placed_at_creation_is_complete_as_it_is() -> None:
    rows = (row(R.PENDING, A, 0), row(R.RUNNING, A, 2))
    assert complete_history(now_row(R.RUNNING, A), rows, None) == rows


def test_the_assignment_of_a_replica_that_waited_is_added_and_opens_its_hold() -> None:
    rows = (row(R.PENDING, None, 0), row(R.STARTING, A, 30), row(R.STOPPED, A, 90))
    completed = complete_history(now_row(R.STOPPED, A, assigned=20), rows, None)
    assert holds(completed) == [Hold(A, at(20), at(90))]


def test_a_replica_whose_rows_a_retention_dropped_holds_since_its_creation() -> None:
    assert holds(complete_history(now_row(R.RUNNING, B), (), None)) == [Hold(B, at(-1), None)]
    # Rows before the first retained one are gone: it was running (the row's old status).
    retained = (row(R.STOPPING, B, 50), row(R.STOPPED, B, 60))
    completed = complete_history(now_row(R.STOPPED, B), retained, R.RUNNING)
    assert holds(completed) == [Hold(B, at(-1), at(60))]


def test_a_replica_that_waited_and_lost_its_early_rows_holds_from_its_assignment() -> None:
    retained = (row(R.RUNNING, C, 50),)
    completed = complete_history(now_row(R.RUNNING, C, assigned=10), retained, R.STARTING)
    assert holds(completed) == [Hold(C, at(10), None)]
    # A node removed since: the replica row no longer names it, the history does.
    gone = complete_history(
        now_row(R.STOPPED, None, assigned=10), (row(R.STOPPED, C, 70),), R.RUNNING
    )
    assert holds(gone) == [Hold(C, at(10), at(70))]


# --- hand-computed cases -----------------------------------------------------------------


def test_node_loss_stops_the_cost_when_the_allocation_is_released() -> None:
    lost = replica(row(R.PENDING, A, 0), row(R.RUNNING, A, 2), row(R.FAILED, A, 600.5))
    # The replacement is a new replica on another node, placed when it is created.
    replacement = replica(row(R.PENDING, B, 601), row(R.RUNNING, B, 603), row(R.STOPPED, B, 4201))
    result = report(lost, replacement)
    expected = cost_of(600.5, EDGE) + cost_of(3600, CORE)
    amount = result.deployments[("team-a", "web")]
    assert amount.charge.total == expected
    assert amount.held == (600_500_000 + 3_600_000_000)
    # 0.0171 EUR/h (0.5 core, 0.5 GB, 1 GB disk on edge) for 600.5 s, then 0.028 EUR/h for 1 h.
    assert rounded(expected) == Decimal("0.030852")
    assert result.unpriced_nodes == ()


def test_a_rollout_charges_each_revision_its_own_request_for_its_own_time() -> None:
    old = replica(
        row(R.PENDING, A, 0),
        row(R.RUNNING, A, 1),
        row(R.STOPPING, A, 1800),  # still holds while it stops
        row(R.STOPPED, A, 1812),
        request=SMALL,
    )
    new = replica(row(R.PENDING, A, 1800), row(R.RUNNING, A, 1805), request=LARGE)
    result = report(old, new, end=3600)
    expected = cost_of(1812, EDGE, SMALL) + cost_of(1800, EDGE, LARGE)
    assert result.deployments[("team-a", "web")].charge.total == expected
    assert result.total.held == (1812 + 1800) * 10**6


def test_the_window_clips_both_ends_and_an_open_hold_runs_to_its_end() -> None:
    closed = replica(row(R.PENDING, A, 0), row(R.STOPPED, A, 100))
    still_running = replica(row(R.PENDING, B, 50), row(R.RUNNING, B, 51), name="api")
    result = report(closed, still_running, start=60, end=160)
    assert result.deployments[("team-a", "web")].held == 40 * 10**6
    assert result.deployments[("team-a", "api")].held == 100 * 10**6
    assert result.total.charge.total == cost_of(40, EDGE) + cost_of(100, CORE)


def test_a_zero_length_hold_costs_nothing_and_lists_no_deployment() -> None:
    instant = replica(row(R.PENDING, A, 5), row(R.FAILED, A, 5))
    result = report(instant)
    assert result.deployments == {}
    assert result.total.held == 0
    assert result.total.charge.total == 0


def test_holds_outside_the_window_are_left_out() -> None:
    before = replica(row(R.PENDING, A, 0), row(R.STOPPED, A, 10))
    assert report(before, start=10).deployments == {}


def test_a_node_no_class_selects_is_unpriced_and_named() -> None:
    on_bare = replica(row(R.PENDING, C, 0), row(R.STOPPED, C, 36))
    result = report(on_bare)
    amount = result.deployments[("team-a", "web")]
    assert (amount.held, amount.unpriced, amount.charge.total) == (36 * 10**6, 36 * 10**6, 0)
    assert result.unpriced_nodes == ("c",)


def test_a_removed_node_is_unpriced_and_named_by_its_id() -> None:
    gone = node_id("gone")
    result = report(replica(row(R.PENDING, gone, 0), row(R.FAILED, gone, 1)))
    assert result.unpriced_nodes == (removed_node_name(gone),)
    assert result.total.unpriced == 10**6


def test_namespaces_and_the_total_add_up_their_deployments() -> None:
    a = replica(row(R.PENDING, A, 0), row(R.STOPPED, A, 60), name="web")
    b = replica(row(R.PENDING, B, 0), row(R.STOPPED, B, 60), name="api")
    other = ReplicaRecord(
        namespace="team-b", deployment="web", request=LARGE, transitions=a.transitions
    )
    result = report(a, b, other)
    assert list(result.deployments) == [("team-a", "api"), ("team-a", "web"), ("team-b", "web")]
    team_a = result.namespaces["team-a"]
    assert team_a.charge.total == cost_of(60, EDGE) + cost_of(60, CORE)
    assert result.total.charge.total == team_a.charge.total + cost_of(60, EDGE, LARGE)


# --- prices and selectors ----------------------------------------------------------------


def test_the_first_matching_class_prices_a_node() -> None:
    catch_all = PriceClass("default", Selector(), CORE)
    edge = PriceClass("edge", Selector(MappingProxyType({"tier": "edge"})), EDGE)
    assert PriceList("EUR", (edge, catch_all)).class_for({"tier": "edge"}) is edge
    assert PriceList("EUR", (catch_all, edge)).class_for({"tier": "edge"}) is catch_all
    assert PriceList("EUR", (edge,)).class_for({"tier": "core"}) is None


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        (Operator.IN, {"x"}, {"k": "x"}, True),
        (Operator.IN, {"x"}, {"k": "y"}, False),
        (Operator.IN, {"x"}, {}, False),
        (Operator.NOT_IN, {"x"}, {"k": "y"}, True),
        (Operator.NOT_IN, {"x"}, {}, True),  # Kubernetes: NotIn matches a missing key
        (Operator.NOT_IN, {"x"}, {"k": "x"}, False),
        (Operator.EXISTS, set(), {"k": ""}, True),
        (Operator.EXISTS, set(), {}, False),
        (Operator.DOES_NOT_EXIST, set(), {}, True),
        (Operator.DOES_NOT_EXIST, set(), {"k": "x"}, False),
    ],
)
def test_match_expressions_mean_what_they_mean_in_kubernetes(
    operator: Operator, values: set[str], labels: dict[str, str], expected: bool
) -> None:
    assert Requirement("k", operator, frozenset(values)).matches(labels) is expected


def test_memory_is_priced_per_gb_of_1024_mb() -> None:
    prices = Prices(memory_gb_hour=Decimal("0.008"))
    assert prices.hourly(res(memory_mb=512)).total == Fraction("0.004")


def test_shown_amounts_round_halves_to_even_and_seconds_keep_microseconds() -> None:
    assert rounded(Fraction(5, 10**7)) == Decimal("0.000000")
    assert rounded(Fraction(15, 10**7)) == Decimal("0.000002")
    assert str(rounded(Fraction(0))) == "0.000000"
    assert str(rounded(Fraction(1, 3), 2)) == "0.33"
    assert str(seconds(1_234_567)) == "1.234567"


# --- properties over random lifecycles ---------------------------------------------------


@st.composite
def lifecycles(draw: st.DrawFn) -> tuple[Transition, ...]:
    """A legal replica history: created pending (with a node or not), then legal steps.

    A replica without a node may get one at any later row (the assignment writes no row of
    its own); steps are 0-1000 s apart, zero-length steps included.
    """
    node = draw(st.sampled_from([A, B, C, None]))
    second = draw(st.integers(0, 1000))
    history = [row(R.PENDING, node, second)]
    status = R.PENDING
    while REPLICA_TRANSITIONS[status] and draw(st.booleans()):
        status = draw(st.sampled_from(sorted(REPLICA_TRANSITIONS[status])))
        if node is None and status is not R.STOPPED:
            node = draw(st.sampled_from([A, B, C, None]))
        second += draw(st.integers(0, 1000))
        history.append(row(status, node, second))
    return tuple(history)


def replayed_micros(history: tuple[Transition, ...], end: datetime) -> int:
    """Held time the plain way: each row's status holds until the next row (or `end`)."""
    total = 0
    for current, following in zip(history, [*history[1:], None], strict=True):
        if holds_capacity(status=current.status, has_node=current.node_id is not None):
            until = end if following is None else following.at
            total += round((until - current.at).total_seconds() * 10**6)
    return total


END = at(20_000)  # after every drawn history: lifecycles are at most 1000 + 5 * 1000 s long


@given(st.lists(lifecycles(), max_size=5))
def test_held_time_is_the_replayed_history(histories: list[tuple[Transition, ...]]) -> None:
    result = report(*(replica(*h) for h in histories), end=20_000)
    assert result.total.held == sum(replayed_micros(h, END) for h in histories)
    priced_or_not = result.total.held - result.total.unpriced
    assert priced_or_not >= 0


@given(
    st.lists(lifecycles(), max_size=5),
    st.integers(0, 20_000),
    st.integers(0, 20_000),
)
def test_cost_is_additive_over_adjacent_windows(
    histories: list[tuple[Transition, ...]], first: int, second: int
) -> None:
    split, end = sorted((first, second))
    records = [replica(*h) for h in histories]
    whole = report(*records, start=0, end=end).total
    before = report(*records, start=0, end=split).total
    after = report(*records, start=split, end=end).total
    assert whole.held == before.held + after.held
    assert whole.unpriced == before.unpriced + after.unpriced
    assert whole.charge.total == before.charge.total + after.charge.total


@given(st.lists(lifecycles(), max_size=5), st.integers(0, 20_000))
def test_a_window_never_costs_more_than_the_whole_history(
    histories: list[tuple[Transition, ...]], start: int
) -> None:
    records = [replica(*h) for h in histories]
    assert report(*records, start=start).total.charge.total <= report(*records).total.charge.total
