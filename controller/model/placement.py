"""Choosing fog nodes for replicas without over-committing any node.

Placement is the one decision that must never be wrong in the unsafe direction: a node
handed more than it has fails workloads at runtime, far from the cause. Keeping it a pure
function over a snapshot of node capacity makes that guarantee testable in isolation; the
caller is responsible for taking the snapshot under a lock.

Scoring follows kube-scheduler's NodeResourcesFit: a node's allocation fraction is the mean,
over the dimensions it has (capacity > 0), of allocated / capacity counting the replica
being placed. Spread (LeastAllocated) picks the lowest fraction, BinPack (MostAllocated) the
highest; ties go to the node name, then its id, so results are deterministic.
"""

import heapq
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from controller.model.resources import Resources, describe_shortfall


class Strategy(StrEnum):
    """How replicas are distributed; values are spelled as in the CRD."""

    SPREAD = "Spread"
    BIN_PACK = "BinPack"


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """A snapshot of one node: what it has and what replicas already hold of it."""

    node_id: uuid.UUID
    name: str
    labels: Mapping[str, str]
    capacity: Resources
    allocated: Resources
    schedulable: bool

    def __post_init__(self) -> None:
        if not (self.capacity.is_non_negative and self.allocated.is_non_negative):
            raise ValueError(f"node {self.name}: capacity and allocation must be >= 0")

    @property
    def free(self) -> Resources:
        """Capacity not yet held by any replica (negative where over-committed)."""
        return self.capacity - self.allocated

    def accepts(self, *, node_selector: Mapping[str, str]) -> bool:
        """Whether new replicas may go here: schedulable and labels include the selector."""
        return self.schedulable and all(
            self.labels.get(key) == value for key, value in node_selector.items()
        )


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of one place() call.

    allocated holds the new allocation of every node that received a replica (and only
    those); apply_to() folds it into a node snapshot so several requests can be placed in
    sequence against the same snapshot without re-reading it.
    """

    node_ids: tuple[uuid.UUID, ...]
    unplaced: int
    shortfall: str | None
    allocated: Mapping[uuid.UUID, Resources]

    def apply_to(self, *, nodes: Sequence[NodeCapacity]) -> tuple[NodeCapacity, ...]:
        """Return nodes with this placement's allocations applied."""
        return tuple(
            replace(node, allocated=self.allocated.get(node.node_id, node.allocated))
            for node in nodes
        )


def allocation_fraction(
    *, capacity: Resources, allocated: Resources, request: Resources | None = None
) -> float:
    """Mean of allocated / capacity over the dimensions that matter for this request.

    Those are the dimensions the node has (capacity > 0) and the request asks for: as in
    kube-scheduler, which scores only requested resources. Counting a dimension the request
    does not use (a node's idle GPU) would make a GPU node look emptier than it is and
    attract CPU-only replicas. With no request, or one that asks for nothing, every
    dimension the node has counts.
    """
    wanted = request.as_tuple() if request is not None else (1, 1, 1, 1)
    if not any(wanted):
        wanted = (1, 1, 1, 1)
    shares = [
        used / total
        for used, total, need in zip(allocated.as_tuple(), capacity.as_tuple(), wanted, strict=True)
        if total > 0 and need > 0
    ]
    return sum(shares) / len(shares) if shares else 0.0


# (score, name, node_id, index into the eligible list); lower sorts first.
_HeapEntry = tuple[float, str, uuid.UUID, int]


def _entry(
    *, node: NodeCapacity, index: int, allocated: Resources, request: Resources, sign: int
) -> _HeapEntry | None:
    """Heap entry for a node that can take one more replica; None when it cannot."""
    after = allocated + request
    if not after.fits_in(node.capacity):
        return None
    score = sign * allocation_fraction(capacity=node.capacity, allocated=after, request=request)
    return (score, node.name, node.node_id, index)


def _check_arguments(
    *, request: Resources, count: int, nodes: Sequence[NodeCapacity], already_placed: int
) -> None:
    if not request.is_non_negative:
        raise ValueError(f"request must be >= 0 in every dimension, got {request}")
    if count < 0 or already_placed < 0:
        raise ValueError("count and already_placed must be >= 0")
    if len({node.node_id for node in nodes}) != len(nodes):
        raise ValueError("node ids must be unique")


def _closest_fit(
    *,
    eligible: Sequence[NodeCapacity],
    allocated: Mapping[uuid.UUID, Resources],
    request: Resources,
) -> tuple[str, Resources] | None:
    """Name and free capacity of the eligible node that comes closest to fitting one more.

    Closeness is the free amount of the node's scarcest dimension relative to the request
    (db/deployments.candidate_nodes orders full nodes the same way).
    """

    def closeness(node: NodeCapacity) -> tuple[float, str, uuid.UUID]:
        free = node.capacity - allocated[node.node_id]
        ratios = [
            have / need
            for have, need in zip(free.as_tuple(), request.as_tuple(), strict=True)
            if need > 0
        ]
        return (-min(ratios, default=math.inf), node.name, node.node_id)

    if not eligible:
        return None
    best = min(eligible, key=closeness)
    return best.name, best.capacity - allocated[best.node_id]


def place(
    *,
    request: Resources,
    count: int,
    nodes: Sequence[NodeCapacity],
    strategy: Strategy,
    node_selector: Mapping[str, str],
    already_placed: int = 0,
) -> Placement:
    """Place count replicas of request greedily, re-scoring a node after each replica.

    A node that cannot take the request leaves the heap for good: the request is the same
    for every replica of the call and allocations only grow, so it will not fit later
    either. That keeps the cost at O((count + nodes) log nodes). already_placed only shapes
    the shortfall message ("N of M replicas placed"): how many replicas of the same workload
    already have a node outside this call.
    """
    _check_arguments(request=request, count=count, nodes=nodes, already_placed=already_placed)
    sign = 1 if strategy is Strategy.SPREAD else -1
    eligible = [node for node in nodes if node.accepts(node_selector=node_selector)]
    allocated = {node.node_id: node.allocated for node in eligible}
    candidates = (
        _entry(node=node, index=index, allocated=node.allocated, request=request, sign=sign)
        for index, node in enumerate(eligible)
    )
    heap = [entry for entry in candidates if entry is not None]
    heapq.heapify(heap)
    placed: list[uuid.UUID] = []
    while heap and len(placed) < count:
        index = heap[0][3]
        node = eligible[index]
        allocated[node.node_id] += request
        placed.append(node.node_id)
        entry = _entry(
            node=node, index=index, allocated=allocated[node.node_id], request=request, sign=sign
        )
        if entry is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, entry)
    unplaced = count - len(placed)
    shortfall = None
    if unplaced:
        shortfall = describe_shortfall(
            request=request,
            placed=already_placed + len(placed),
            wanted=already_placed + count,
            closest=_closest_fit(eligible=eligible, allocated=allocated, request=request),
            selector=bool(node_selector),
        )
    return Placement(
        node_ids=tuple(placed),
        unplaced=unplaced,
        shortfall=shortfall,
        allocated=MappingProxyType({node_id: allocated[node_id] for node_id in placed}),
    )
