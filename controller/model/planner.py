"""The replica plan for one deployment: what to create, assign and stop to approach the spec.

Planning is level-triggered: it looks only at the desired state and the current rows, never
at what happened before, so a missed or repeated event cannot confuse it, and planning again
on the state a plan produced yields an empty plan. Keeping it pure lets the reconciler
apply the plan in one transaction and lets tests replay whole rollouts without a database.
"""

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from operator import attrgetter

from controller.model import restarts
from controller.model.placement import NodeCapacity, Placement, Strategy, place
from controller.model.replicas import ReplicaState
from controller.model.resources import Resources
from controller.model.states import ACTIVE_REPLICA_STATUSES, ReplicaStatus, check_replica_transition
from controller.model.strategy import DEFAULT_ROLLOUT, Budget, Rollout


class StopReason(StrEnum):
    """Why the planner stops a replica."""

    SCALED_DOWN = "ScaledDown"
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"
    DELETED = "DeploymentDeleted"
    # Of a rollout aborted by spec.strategy.autoRevert (model/canary.py): stopped at once.
    ROLLOUT_ABORTED = "RolloutAborted"
    # Its agent reports it failing its health check: replaced, counted as a failure.
    UNHEALTHY = restarts.UNHEALTHY


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The deployment spec as the planner needs it.

    revision identifies image + resources + container spec (hashed elsewhere); a replica on
    another revision is replaced.
    """

    replicas: int
    revision: str
    request: Resources
    strategy: Strategy
    node_selector: Mapping[str, str]
    # Nodes being drained: their replicas are replaced like an old revision's.
    evacuate: frozenset[uuid.UUID] = frozenset()
    # Restart backoff in force: create no new replicas yet (see model/restarts.py).
    hold_new: bool = False
    # The most replicas this plan may place, what the namespace's quotas still admit
    # (model/quota.py); None when no quota limits it. Replicas beyond it wait without a node.
    quota_room: int | None = None
    # How old-revision replicas give way (strategy, surge, paused): model/strategy.py.
    rollout: Rollout = DEFAULT_ROLLOUT
    # Whether a replica counts as available toward the rollout's floor (maxUnavailable): by
    # default while it serves; for a FogDeployment, once healthy for minReadySeconds at the
    # reconcile's moment (model/health.py), as Kubernetes counts a Deployment's pods.
    available: Callable[[ReplicaState], bool] = attrgetter("is_available")
    # While a new revision's canaries wait for promotion (model/canary.py): at most this many
    # replicas of `revision` beside the old ones, which are not replaced meanwhile.
    canary: int | None = None
    # Revisions of an aborted rollout: their replicas are stopped at once, whatever the budget.
    aborted: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {self.replicas}")
        if self.canary is not None and self.canary < 1:
            raise ValueError(f"canary must be >= 1, got {self.canary}")

    def is_canary_wait(self, replica: ReplicaState) -> bool:
        """Whether it is an old-revision replica kept as it is while canaries wait."""
        return self.canary is not None and replica.revision != self.revision


@dataclass(frozen=True, slots=True)
class NewReplica:
    """A row to insert: status pending, the desired revision, on node_id (None: no room yet)."""

    node_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Assignment:
    """Give an existing unassigned pending replica a node."""

    replica_id: uuid.UUID
    node_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ReplicaTransition:
    """A status change for an existing replica; illegal changes cannot be constructed."""

    replica_id: uuid.UUID
    from_status: ReplicaStatus
    to_status: ReplicaStatus
    reason: str

    def __post_init__(self) -> None:
        check_replica_transition(old=self.from_status, new=self.to_status)


@dataclass(frozen=True, slots=True)
class Plan:
    """Changes that move one deployment toward its desired state.

    Apply assign before create: assignments were placed first. unplaced/shortfall report
    replicas left without a node, quota_held how many of those a quota held back (the rest
    found no node with room); they are not actions, so is_empty ignores them.
    allocated is the resulting allocation of every node that received a replica (see
    Placement.allocated).
    """

    create: tuple[NewReplica, ...]
    assign: tuple[Assignment, ...]
    transitions: tuple[ReplicaTransition, ...]
    unplaced: int
    shortfall: str | None
    allocated: Mapping[uuid.UUID, Resources]
    quota_held: int = 0

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to write."""
        return not (self.create or self.assign or self.transitions)

    @property
    def unhoused(self) -> int:
        """Replicas left without a node that a node could have taken: no quota held them."""
        return self.unplaced - self.quota_held


# Order in which surplus replicas are stopped: those that serve nobody yet go first.
_SCALE_DOWN_TIER = {ReplicaStatus.PENDING: 1, ReplicaStatus.STARTING: 2, ReplicaStatus.RUNNING: 3}
_UNASSIGNED_TIER = 0  # a replica waiting for a node costs nothing to drop


def _scale_down_order(
    replica: ReplicaState, *, desired: DesiredState
) -> tuple[int, bool, bool, int]:
    """Sort key: not running, then unavailable, then old revision first; newest first.

    Kubernetes, too, ranks not-ready pods before ready ones when it scales down.

    Availability before revision matters when a surge is cut back (the backoff holds new
    replicas, or a pause): the new replicas not yet available go before old ones that serve,
    so the cut never takes the available count below the rollout's floor.
    """
    tier = _UNASSIGNED_TIER if replica.is_unassigned else _SCALE_DOWN_TIER[replica.status]
    return (
        tier,
        desired.available(replica),
        replica.revision == desired.revision,
        -replica.created_seq,
    )


def _recreated(replica: ReplicaState, *, desired: DesiredState) -> bool:
    """Whether Recreate stops it at once: of an old revision, while the rollout is not paused."""
    rollout = desired.rollout
    return rollout.recreate and not rollout.paused and replica.revision != desired.revision


def _rolled(replica: ReplicaState, *, desired: DesiredState) -> bool:
    """Whether it is replaced within the rolling budget (surge and unavailability).

    Replicas on a node being drained always are (a drain is not a rollout: pausing or
    Recreate does not hold it up), and so are old-revision ones under an unpaused RollingUpdate.
    Old-revision replicas are not while canaries wait, even on a drained node: their
    replacements would be more canaries than spec.strategy.canary.replicas allows.
    """
    if _recreated(replica, desired=desired) or desired.is_canary_wait(replica):
        return False
    if replica.node_id in desired.evacuate:
        return True
    rollout = desired.rollout
    return replica.revision != desired.revision and not (rollout.recreate or rollout.paused)


def _rollout_victims(
    *, kept: Sequence[ReplicaState], desired: DesiredState, budget: Budget
) -> tuple[list[ReplicaState], list[ReplicaState]]:
    """Replicas to replace now: (stopped at once by Recreate, rolled within the budget).

    Rolled replicas that are not running serve nobody, so replacing them costs no budget;
    available ones go oldest first while the available replicas stay at or above the floor
    (desired - maxUnavailable); running ones not yet available within a cap (below). While
    the restart backoff holds new replicas back nothing is replaced: no replacement could be
    created.
    """
    if desired.hold_new:
        return [], []
    recreated = [replica for replica in kept if _recreated(replica, desired=desired)]
    rolled = [replica for replica in kept if _rolled(replica, desired=desired)]
    old_running = sorted(
        (replica for replica in rolled if desired.available(replica)), key=lambda r: r.created_seq
    )
    available = sum(
        1
        for replica in kept
        if desired.available(replica) and not _recreated(replica, desired=desired)
    )
    floor = budget.floor(desired.replicas)
    room = max(0, available - floor)
    idle = [replica for replica in rolled if not desired.available(replica)]
    # Not available yet but running (within minReadySeconds, say): it may serve already, so
    # these go only as far as Kubernetes lets a Deployment clean up unhealthy old pods: the
    # active replicas beyond the floor and the new revision's unavailable ones. The rest
    # (waiting, starting) serve nobody and go at once.
    serving = sorted(
        (r for r in idle if r.status is ReplicaStatus.RUNNING and not r.is_unassigned),
        key=lambda r: r.created_seq,
    )
    new_unavailable = sum(
        1 for r in kept if r.revision == desired.revision and not desired.available(r)
    )
    cap = max(0, len(kept) - len(recreated) - floor - new_unavailable)
    free = [replica for replica in idle if replica not in serving]
    return recreated, free + serving[:cap] + old_running[:room]


def _surplus(
    *, active: Sequence[ReplicaState], desired: DesiredState, budget: Budget
) -> tuple[list[ReplicaState], list[ReplicaState]]:
    """(scaled down, kept) of the active replicas, taken in scale-down order.

    Replicas that are not being rolled count toward desired on their own: beyond it they are
    surplus. Then all together may exceed desired only by maxSurge, and only while some are
    being rolled (never while the restart backoff holds new ones back). Cutting in this order
    makes the result final: what is kept never becomes surplus at the next plan.
    """
    staying = [replica for replica in active if not _rolled(replica, desired=desired)]
    # While canaries wait, the old revision and the canaries are counted apart, each to its own
    # count (spec.replicas, canary.replicas): neither is cut to make room for the other.
    groups = (
        [
            ([r for r in staying if desired.is_canary_wait(r)], desired.replicas),
            ([r for r in staying if not desired.is_canary_wait(r)], desired.canary),
        ]
        if desired.canary is not None
        else [(staying, desired.replicas)]
    )
    cut = {
        replica.replica_id
        for group, limit in groups
        for replica in group[: max(0, len(group) - limit)]
    }
    remaining = [replica for replica in active if replica.replica_id not in cut]
    ceiling = _ceiling(desired=desired, budget=budget, kept=remaining)
    cut |= {replica.replica_id for replica in remaining[: max(0, len(remaining) - ceiling)]}
    return (
        [replica for replica in active if replica.replica_id in cut],
        [replica for replica in active if replica.replica_id not in cut],
    )


def _ceiling(*, desired: DesiredState, budget: Budget, kept: Sequence[ReplicaState]) -> int:
    """The most active replicas: desired, + maxSurge while rolling, + canaries while they wait."""
    rolling = not desired.hold_new and any(_rolled(r, desired=desired) for r in kept)
    return desired.replicas + (budget.surge if rolling else 0) + (desired.canary or 0)


# A replica in these statuses still runs somewhere (or is about to): Recreate waits for it.
_STILL_RUNS = ACTIVE_REPLICA_STATUSES | {ReplicaStatus.STOPPING}


def _old_revision_runs(
    *,
    replicas: Sequence[ReplicaState],
    transitions: Sequence[ReplicaTransition],
    desired: DesiredState,
) -> bool:
    """Whether Recreate must still wait: an old-revision replica runs once `transitions` apply."""
    if not desired.rollout.recreate:
        return False
    after = {change.replica_id: change.to_status for change in transitions}
    return any(
        replica.revision != desired.revision
        and after.get(replica.replica_id, replica.status) in _STILL_RUNS
        for replica in replicas
    )


def _stop(replica: ReplicaState, *, reason: StopReason) -> ReplicaTransition:
    # An unassigned replica runs nowhere, so there is nothing to wait for.
    target = ReplicaStatus.STOPPED if replica.is_unassigned else ReplicaStatus.STOPPING
    return ReplicaTransition(
        replica_id=replica.replica_id,
        from_status=replica.status,
        to_status=target,
        reason=reason,
    )


def plan(
    *, desired: DesiredState, replicas: Sequence[ReplicaState], nodes: Sequence[NodeCapacity]
) -> Plan:
    """Plan one step toward desired for a deployment with these replicas.

    nodes are the candidate nodes, their allocation already including every replica that
    holds capacity (stopping ones too: they still run). Surplus replicas stop first, then
    old-revision ones are replaced within the rollout budget, then unassigned pending
    replicas and missing ones get nodes, as many as the quota room admits.

    Surplus means beyond desired, or beyond desired + maxSurge while replicas are being
    rolled; old-revision replicas go all at once under Recreate, within maxUnavailable
    (oldest first) under RollingUpdate, and not while paused (model/strategy.py). New
    replicas keep the active count within desired + maxSurge: a surge replica that finds no
    room waits without a node while the rollout goes on within maxUnavailable. Recreate
    creates none while an old-revision replica still runs.
    """
    budget = desired.rollout.budget(desired.replicas)
    # An unhealthy replica is stopped whatever else happens (even while the backoff holds its
    # replacement back): it serves nobody, and its slot is refilled like any missing one.
    unhealthy = [replica for replica in replicas if replica.is_unhealthy]
    aborted = [
        replica
        for replica in replicas
        if replica.is_active and not replica.is_unhealthy and replica.revision in desired.aborted
    ]
    active = sorted(
        (
            replica
            for replica in replicas
            if replica.is_active
            and not replica.is_unhealthy
            and replica.revision not in desired.aborted
        ),
        key=lambda r: _scale_down_order(r, desired=desired),
    )
    scaled_down, kept = _surplus(active=active, desired=desired, budget=budget)
    ceiling = _ceiling(desired=desired, budget=budget, kept=kept)
    recreated, rolled = _rollout_victims(kept=kept, desired=desired, budget=budget)
    replaced_ids = {replica.replica_id for replica in (*recreated, *rolled)}
    survivors = [replica for replica in kept if replica.replica_id not in replaced_ids]
    unassigned = sorted(
        (replica for replica in survivors if replica.is_unassigned), key=lambda r: r.created_seq
    )
    transitions = (
        tuple(_stop(r, reason=StopReason.UNHEALTHY) for r in unhealthy)
        + tuple(_stop(r, reason=StopReason.ROLLOUT_ABORTED) for r in aborted)
        + tuple(_stop(r, reason=StopReason.SCALED_DOWN) for r in scaled_down)
        + tuple(_stop(r, reason=StopReason.RECREATE) for r in recreated)
        + tuple(_stop(r, reason=StopReason.ROLLING_UPDATE) for r in rolled)
    )
    # While canaries wait, only the canaries count toward what is created (up to their count).
    staying = sum(
        1
        for replica in survivors
        if not _rolled(replica, desired=desired) and not desired.is_canary_wait(replica)
    )
    target = desired.replicas if desired.canary is None else desired.canary
    waits = desired.hold_new or _old_revision_runs(
        replicas=replicas, transitions=transitions, desired=desired
    )
    to_create = 0 if waits else max(0, min(target - staying, ceiling - len(survivors)))
    wanted = len(unassigned) + to_create
    placeable = wanted if desired.quota_room is None else min(wanted, desired.quota_room)
    placement = place(
        request=desired.request,
        count=placeable,
        nodes=nodes,
        strategy=desired.strategy,
        node_selector=desired.node_selector,
        already_placed=len(survivors) - len(unassigned),
    )
    assigned_nodes = placement.node_ids[: len(unassigned)]
    new_nodes = placement.node_ids[len(unassigned) :]
    return Plan(
        create=tuple(NewReplica(node_id=node_id) for node_id in new_nodes)
        + (NewReplica(node_id=None),) * (to_create - len(new_nodes)),
        assign=tuple(
            Assignment(replica_id=replica.replica_id, node_id=node_id)
            for replica, node_id in zip(unassigned, assigned_nodes, strict=False)
        ),
        transitions=transitions,
        unplaced=placement.unplaced + wanted - placeable,
        shortfall=placement.shortfall,
        allocated=placement.allocated,
        quota_held=wanted - placeable,
    )


def plan_many(
    *,
    wants: Sequence[tuple[DesiredState, Sequence[ReplicaState]]],
    nodes: Sequence[NodeCapacity],
) -> tuple[list[Plan], tuple[NodeCapacity, ...]]:
    """Plan several deployments against one snapshot of node capacity, in order.

    Each plan sees the nodes as the plans before it left them (their allocations folded in, as
    Placement.apply_to does), so together they never hold more of a node than it has: the
    batched reconcile (issue 15 item 1) places many deployments from one node read. A plan that
    leaves a replica without a place (`unhoused`: replicas a quota held back are not) takes
    nothing from the snapshot, because the caller does not apply it: it plans that deployment
    again on its own, with the wider node read a lone reconcile makes. Returns the plans, in
    order, and the nodes as the accepted plans left them.
    """
    current = tuple(nodes)
    plans: list[Plan] = []
    for desired, replicas in wants:
        made = plan(desired=desired, replicas=replicas, nodes=current)
        if not made.unhoused:
            current = Placement(
                node_ids=(), unplaced=0, shortfall=None, allocated=made.allocated
            ).apply_to(nodes=current)
        plans.append(made)
    return plans, current


def outcome(
    *,
    replicas: Sequence[ReplicaState],
    plan: Plan,
    revision: str,
    new_ids: Sequence[uuid.UUID],
    first_seq: int,
) -> tuple[ReplicaState, ...]:
    """The deployment's replicas as they are once `plan` is applied.

    The status is computed from this, inside the same reconcile, so that `.status` describes
    what was just written rather than what was read. `new_ids` are the ids the caller gives
    the plan's new rows (in `plan.create` order); `first_seq` is the first free ordinal.
    """
    if len(new_ids) != len(plan.create):
        raise ValueError(f"{len(plan.create)} new replicas need as many ids, got {len(new_ids)}")
    moved = {change.replica_id: change.to_status for change in plan.transitions}
    assigned = {assignment.replica_id: assignment.node_id for assignment in plan.assign}
    existing = tuple(
        replace(
            replica,
            status=moved.get(replica.replica_id, replica.status),
            node_id=assigned.get(replica.replica_id, replica.node_id),
        )
        for replica in replicas
    )
    created = tuple(
        ReplicaState(
            replica_id=new_id,
            node_id=new.node_id,
            status=ReplicaStatus.PENDING,
            revision=revision,
            created_seq=first_seq + offset,
        )
        for offset, (new_id, new) in enumerate(zip(new_ids, plan.create, strict=True))
    )
    return existing + created


def stop_all(*, replicas: Sequence[ReplicaState]) -> tuple[ReplicaTransition, ...]:
    """Stop every active replica because its deployment is deleted."""
    return tuple(
        _stop(replica, reason=StopReason.DELETED) for replica in replicas if replica.is_active
    )
