"""Builders and a tiny in-memory cluster for the model's unit tests.

The cluster applies plans the way the reconciler and the node agents will (allocations grow
on assignment, shrink when a replica stops), so tests can replay several reconcile loops.
"""

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from controller.model.placement import NodeCapacity, Strategy
from controller.model.planner import DesiredState, Plan, plan
from controller.model.protocol import Assignment
from controller.model.replicas import ReplicaState
from controller.model.resources import ZERO, Resources
from controller.model.states import ReplicaStatus, check_replica_transition, holds_capacity
from controller.model.status import FogDeploymentStatus, compute_status
from controller.model.strategy import DEFAULT_ROLLOUT, Rollout, RolloutType

# Example counts, deadlines and the example database come from the hypothesis profile
# loaded in tests/conftest.py ("default", or "ci" with more examples); nothing here pins them.

_IDS = uuid.UUID("00000000-0000-0000-0000-00000000f09c")


def node_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"node/{name}")


def replica_id(seq: int) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"replica/{seq}")


def assignment(replica: uuid.UUID, status: ReplicaStatus, node: str = "edge-1") -> Assignment:
    """One line of a node's list, as the agent API pushes it to an agent."""
    return Assignment(
        replica_id=replica,
        node=node,
        status=status,
        namespace="team-a",
        deployment="web",
        ordinal=0,
        image="app:1",
        container_spec={},
        container_id=None,
    )


def res(
    cpu_millis: int = 0, memory_mb: int = 0, gpu_units: int = 0, storage_gb: int = 0
) -> Resources:
    return Resources(
        cpu_millis=cpu_millis, memory_mb=memory_mb, gpu_units=gpu_units, storage_gb=storage_gb
    )


def node(
    name: str,
    capacity: Resources,
    allocated: Resources = ZERO,
    *,
    labels: Mapping[str, str] | None = None,
    schedulable: bool = True,
) -> NodeCapacity:
    return NodeCapacity(
        node_id=node_id(name),
        name=name,
        labels=labels or {},
        capacity=capacity,
        allocated=allocated,
        schedulable=schedulable,
    )


def replica(
    seq: int,
    status: ReplicaStatus = ReplicaStatus.RUNNING,
    *,
    on: str | None = "n1",
    revision: str = "r1",
) -> ReplicaState:
    return ReplicaState(
        replica_id=replica_id(seq),
        node_id=None if on is None else node_id(on),
        status=status,
        revision=revision,
        created_seq=seq,
    )


def desired(
    replicas: int,
    *,
    revision: str = "r1",
    request: Resources | None = None,
    strategy: Strategy = Strategy.SPREAD,
    node_selector: Mapping[str, str] | None = None,
) -> DesiredState:
    return DesiredState(
        replicas=replicas,
        revision=revision,
        request=request or res(500, 512),
        strategy=strategy,
        node_selector=node_selector or {},
    )


@dataclass
class Cluster:
    """Nodes and one deployment's replicas, with each replica's request remembered."""

    nodes: dict[uuid.UUID, NodeCapacity]
    replicas: dict[uuid.UUID, ReplicaState] = field(default_factory=dict)
    requests: dict[uuid.UUID, Resources] = field(default_factory=dict)
    next_seq: int = 1

    @classmethod
    def of(cls, *nodes: NodeCapacity) -> "Cluster":
        return cls(nodes={n.node_id: n for n in nodes})

    def _allocate(self, where: uuid.UUID, amount: Resources) -> None:
        if where in self.nodes:
            current = self.nodes[where]
            self.nodes[where] = replace(current, allocated=current.allocated + amount)

    def _set_status(self, rid: uuid.UUID, status: ReplicaStatus) -> None:
        current = self.replicas[rid]
        check_replica_transition(old=current.status, new=status)
        held = holds_capacity(status=current.status, has_node=current.node_id is not None)
        if (
            current.node_id is not None
            and held
            and not holds_capacity(status=status, has_node=True)
        ):
            self._allocate(current.node_id, self.requests[rid] * -1)
        self.replicas[rid] = replace(current, status=status)

    def plan(self, spec: DesiredState) -> Plan:
        return plan(
            desired=spec, replicas=list(self.replicas.values()), nodes=list(self.nodes.values())
        )

    def apply(self, step: Plan, spec: DesiredState) -> None:
        """Write a plan the way the reconciler will: assignments, creations, transitions."""
        for assignment in step.assign:
            current = self.replicas[assignment.replica_id]
            assert current.is_unassigned
            # Only current-revision replicas are assigned, so the spec's request is theirs.
            self.replicas[current.replica_id] = replace(current, node_id=assignment.node_id)
            self.requests[current.replica_id] = spec.request
            self._allocate(assignment.node_id, spec.request)
        for new in step.create:
            rid = replica_id(self.next_seq)
            self.replicas[rid] = ReplicaState(
                replica_id=rid,
                node_id=new.node_id,
                status=ReplicaStatus.PENDING,
                revision=spec.revision,
                created_seq=self.next_seq,
            )
            self.requests[rid] = spec.request
            self.next_seq += 1
            if new.node_id is not None:
                self._allocate(new.node_id, spec.request)
        for transition in step.transitions:
            assert self.replicas[transition.replica_id].status is transition.from_status
            self._set_status(transition.replica_id, transition.to_status)

    def agents_act(self) -> None:
        """Every agent starts its pending replicas and finishes stopping its stopping ones."""
        for rid, current in list(self.replicas.items()):
            if current.status is ReplicaStatus.PENDING and current.node_id is not None:
                self._set_status(rid, ReplicaStatus.STARTING)
                self._set_status(rid, ReplicaStatus.RUNNING)
            elif current.status is ReplicaStatus.STOPPING:
                self._set_status(rid, ReplicaStatus.STOPPED)

    def available(self) -> int:
        return sum(1 for r in self.replicas.values() if r.is_available)

    def active(self) -> list[ReplicaState]:
        return [r for r in self.replicas.values() if r.is_active]

    def held(self) -> dict[uuid.UUID, Resources]:
        """Capacity this deployment's replicas hold, per node, recomputed from the rows."""
        totals: dict[uuid.UUID, Resources] = {}
        for rid, current in self.replicas.items():
            if current.node_id is not None and holds_capacity(status=current.status, has_node=True):
                totals[current.node_id] = totals.get(current.node_id, ZERO) + self.requests[rid]
        return totals


# --- hypothesis strategies ----------------------------------------------------------------

amounts = st.builds(
    res, st.integers(0, 4000), st.integers(0, 8192), st.integers(0, 2), st.integers(0, 100)
)
requests = st.builds(
    res, st.integers(0, 2000), st.integers(0, 4096), st.integers(0, 1), st.integers(0, 50)
)
selectors = st.dictionaries(st.sampled_from(["zone", "gpu"]), st.sampled_from("ab"), max_size=1)


@st.composite
def overcommitted(draw: st.DrawFn, *, room_for: Resources = ZERO) -> tuple[Resources, Resources]:
    """(allocated, capacity) of a node holding more than it has in at least one dimension.

    As after an agent re-registers its node with less capacity than its replicas hold. The
    other dimensions may have room for several replicas of room_for, and the over-committed
    one is one that room_for does not ask for, when there is such a dimension: so only a fit
    check of every dimension, not just the requested ones, keeps placement away.
    """
    capacity = draw(amounts) + room_for * draw(st.integers(0, 4))
    used = [draw(st.integers(0, have)) for have in capacity.as_tuple()]
    unrequested = [index for index, need in enumerate(room_for.as_tuple()) if need == 0]
    over = draw(st.sampled_from(unrequested or [0, 1, 2, 3]))
    used[over] = capacity.as_tuple()[over] + draw(st.integers(1, 1000))
    return res(*used), capacity


@st.composite
def node_sets(
    draw: st.DrawFn, *, min_size: int = 0, room_for: Resources = ZERO
) -> list[NodeCapacity]:
    """Up to six nodes with some labels, mostly schedulable, partly allocated.

    Each node gets free room for 0-4 extra replicas of room_for on top of a random rest, so
    examples are not dominated by nodes that fit nothing. About one node in six is
    over-committed instead (see overcommitted): it must never receive a replica.
    """
    result = []
    for index in range(draw(st.integers(min_size, 6))):
        if draw(st.integers(0, 5)) == 0:
            used, capacity = draw(overcommitted(room_for=room_for))
        else:
            used = draw(amounts)
            capacity = used + draw(amounts) + room_for * draw(st.integers(0, 4))
        labels = draw(st.dictionaries(st.sampled_from(["zone", "gpu"]), st.sampled_from("ab")))
        schedulable = draw(st.integers(0, 3)) > 0  # 3 in 4, so most nodes are candidates
        result.append(node(f"n{index}", capacity, used, labels=labels, schedulable=schedulable))
    return result


UNBOUNDED = 10**9  # a zero request fits any number of times


def slots(n: NodeCapacity, request: Resources) -> int:
    """How many replicas of request fit on n, counted independently of any algorithm."""
    free = n.free
    if not free.is_non_negative:
        return 0
    per_dimension = [
        have // need for have, need in zip(free.as_tuple(), request.as_tuple(), strict=True) if need
    ]
    return min(per_dimension, default=UNBOUNDED)


int_or_percent = st.one_of(st.integers(0, 4), st.integers(0, 100).map(lambda p: f"{p}%"))


@st.composite
def rollout_specs(draw: st.DrawFn, *, moving: bool = False, pausable: bool = False) -> Rollout:
    """Any RollingUpdate or Recreate spec (both 0 excluded, as the CRD refuses it).

    moving: maxUnavailable is at least 1, so a rollout on a cluster with no room to surge
    still progresses (with 0 it waits for room, as a Kubernetes Deployment does).
    pausable: paused may be drawn true.
    """
    surge = draw(int_or_percent)
    unavailable = draw(st.integers(1, 4) if moving else int_or_percent)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1
    return Rollout(
        type=draw(st.sampled_from(RolloutType)),
        max_surge=surge,
        max_unavailable=unavailable,
        paused=pausable and draw(st.booleans()),
    )


# --- simulation driver and states to start from ------------------------------------------

DEFAULT_ROLLOUTS = st.just(DEFAULT_ROLLOUT)


def placed_on(step: Plan) -> list[uuid.UUID]:
    """The node of every replica the plan creates on a node or assigns to one."""
    created = [new.node_id for new in step.create if new.node_id is not None]
    return created + [assignment.node_id for assignment in step.assign]


def overcommitted_nodes(cluster: Cluster) -> set[uuid.UUID]:
    """Nodes whose allocation exceeds their capacity (a capacity shrink, say)."""
    return {n.node_id for n in cluster.nodes.values() if not n.allocated.fits_in(n.capacity)}


def finish(
    cluster: Cluster,
    spec: DesiredState,
    *,
    floor: int,
    check: Callable[[Cluster], None] | None = None,
) -> int:
    """Run reconcile + agent rounds until nothing changes; return how many rounds it took.

    floor: the fewest available replicas allowed right after any plan is applied. No plan
    may put a replica on a node that is over-committed when it is made. check, if given,
    looks at the cluster right after each plan is applied, too.
    """
    limit = 4 * spec.replicas + 8  # a rollout needs ~2 rounds per replica; the rest is slack
    for rounds in range(limit):
        overcommitted = overcommitted_nodes(cluster)
        step = cluster.plan(spec)
        cluster.apply(step, spec)
        assert not overcommitted & set(placed_on(step)), "placed on an over-committed node"
        assert cluster.available() >= floor
        if check is not None:
            check(cluster)
        before = dict(cluster.replicas)
        cluster.agents_act()
        if step.is_empty and before == cluster.replicas:
            return rounds
    raise AssertionError(f"no convergence within {limit} rounds")


@st.composite
def cluster_states(
    draw: st.DrawFn, *, rollouts: st.SearchStrategy[Rollout] = DEFAULT_ROLLOUTS
) -> tuple[Cluster, DesiredState]:
    """Any mix of replicas in any status and revision, on nodes that may or may not exist.

    The spec's rollout spec is drawn from `rollouts` (the defaults unless given).
    """
    request = draw(requests)
    nodes = draw(node_sets(room_for=request))
    cluster = Cluster.of(*nodes)
    places = [n.node_id for n in nodes] + [node_id("gone")]
    for seq in range(1, draw(st.integers(0, 10)) + 1):
        status = draw(st.sampled_from(ReplicaStatus))
        may_lack_node = status in {
            ReplicaStatus.PENDING,
            ReplicaStatus.STOPPED,
            ReplicaStatus.FAILED,
        }
        where = draw(st.sampled_from([*places, None] if may_lack_node else places))
        rid = replica_id(seq)
        cluster.replicas[rid] = ReplicaState(
            replica_id=rid,
            node_id=where,
            status=status,
            revision=draw(st.sampled_from(["r0", "r1"])),
            created_seq=seq,
        )
        cluster.requests[rid] = draw(requests)
        cluster.next_seq = seq + 1
    spec = DesiredState(
        replicas=draw(st.integers(0, 8)),
        revision=draw(st.sampled_from(["r0", "r1"])),
        request=request,
        strategy=draw(st.sampled_from(Strategy)),
        node_selector=draw(selectors),
        rollout=draw(rollouts),
    )
    return cluster, spec


def status_of(
    replicas: Sequence[ReplicaState],
    *,
    want: int,
    now: datetime,
    generation: int = 1,
    revision: str = "r1",
    unplaced: int = 0,
    shortfall: str | None = None,
    previous: Mapping[str, Any] | None = None,
    conditions: Sequence[Mapping[str, Any]] | None = None,
    stalled: str | None = None,
    **options: Any,
) -> FogDeploymentStatus:
    """`compute_status` with a quiet reconcile's defaults: only what a test varies is named.

    `previous` is the status last written (its conditions and, for the Progressing condition,
    the whole body); `conditions` gives previous conditions alone. `options` pass through
    (quota, readiness, rollout, stage).
    """
    if previous is not None:
        options["previous_status"] = previous
    if conditions is None:
        conditions = (previous or {}).get("conditions") or ()
    return compute_status(
        generation=generation,
        desired_replicas=want,
        revision=revision,
        replicas=replicas,
        unplaced=unplaced,
        shortfall=shortfall,
        previous_conditions=conditions,
        stalled_reason=stalled,
        now=now,
        **options,
    )
