"""Lifecycle states of deployments and replicas, and which changes between them are legal.

The values double as the PostgreSQL enum labels (`deploymentstatus`, `replicastatus`), so
the database and the controller share one vocabulary. Keeping the transition tables as
data, next to the enums, lets every writer check a change before recording it instead of
each one re-deriving the rules.
"""

from collections import deque
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class DeploymentStatus(StrEnum):
    """Lifecycle of a FogDeployment as recorded in the database."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETED = "deleted"


class ReplicaStatus(StrEnum):
    """Lifecycle of one replica row; a replacement is always a new row."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ReplicaHealth(StrEnum):
    """What the agent's health check last said of a running replica (enum `replicahealth`).

    No value (NULL) until the first report: the replica has no check, or none ran yet.
    """

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


_D = DeploymentStatus
_R = ReplicaStatus

DEPLOYMENT_TRANSITIONS: Mapping[DeploymentStatus, frozenset[DeploymentStatus]] = MappingProxyType(
    {
        _D.PENDING: frozenset({_D.SCHEDULED, _D.RUNNING, _D.STOPPED, _D.FAILED, _D.DELETED}),
        _D.SCHEDULED: frozenset({_D.PENDING, _D.RUNNING, _D.STOPPED, _D.FAILED, _D.DELETED}),
        _D.RUNNING: frozenset({_D.PENDING, _D.SCHEDULED, _D.STOPPED, _D.FAILED, _D.DELETED}),
        # Scaling up from zero goes through pending: new replicas need placing first.
        _D.STOPPED: frozenset({_D.PENDING, _D.DELETED}),
        _D.FAILED: frozenset({_D.PENDING, _D.SCHEDULED, _D.RUNNING, _D.STOPPED, _D.DELETED}),
        _D.DELETED: frozenset(),
    }
)
"""Legal successors of each deployment status; a status never transitions to itself."""

REPLICA_TRANSITIONS: Mapping[ReplicaStatus, frozenset[ReplicaStatus]] = MappingProxyType(
    {
        # pending -> stopped is for a replica that never got a node: nothing runs to stop.
        _R.PENDING: frozenset({_R.STARTING, _R.STOPPING, _R.STOPPED, _R.FAILED}),
        _R.STARTING: frozenset({_R.RUNNING, _R.STOPPING, _R.FAILED}),
        _R.RUNNING: frozenset({_R.STOPPING, _R.FAILED}),
        _R.STOPPING: frozenset({_R.STOPPED, _R.FAILED}),
        _R.STOPPED: frozenset(),
        _R.FAILED: frozenset(),
    }
)
"""Legal successors of each replica status; a status never transitions to itself."""

AGENT_REPLICA_TRANSITIONS: Mapping[ReplicaStatus, frozenset[ReplicaStatus]] = MappingProxyType(
    {
        _R.PENDING: frozenset({_R.STARTING, _R.FAILED}),
        _R.STARTING: frozenset({_R.RUNNING, _R.FAILED}),
        _R.RUNNING: frozenset({_R.FAILED}),
        _R.STOPPING: frozenset({_R.STOPPED, _R.FAILED}),
        _R.STOPPED: frozenset(),
        _R.FAILED: frozenset(),
    }
)
"""What a node's agent may report: what its containers did. Stopping a replica, or dropping one
that never ran, is the operator's decision, never the agent's; a subset of REPLICA_TRANSITIONS."""

ACTIVE_REPLICA_STATUSES = frozenset({_R.PENDING, _R.STARTING, _R.RUNNING})
"""Replicas that count toward the desired replica count."""

CAPACITY_HOLDING_STATUSES = frozenset({_R.PENDING, _R.STARTING, _R.RUNNING, _R.STOPPING})
"""Statuses that hold node capacity, provided the replica has a node (see holds_capacity)."""

TERMINAL_REPLICA_STATUSES = frozenset(s for s, nxt in REPLICA_TRANSITIONS.items() if not nxt)
TERMINAL_DEPLOYMENT_STATUSES = frozenset(s for s, nxt in DEPLOYMENT_TRANSITIONS.items() if not nxt)


class IllegalTransitionError(ValueError):
    """A status change that the lifecycle does not allow."""

    def __init__(self, *, old: StrEnum, new: StrEnum) -> None:
        super().__init__(f"illegal {type(old).__name__} transition: {old} -> {new}")
        self.old = old
        self.new = new


def check_deployment_transition(*, old: DeploymentStatus, new: DeploymentStatus) -> None:
    """Raise IllegalTransitionError unless a deployment may move from old to new."""
    if new not in DEPLOYMENT_TRANSITIONS[old]:
        raise IllegalTransitionError(old=old, new=new)


def check_replica_transition(
    *,
    old: ReplicaStatus,
    new: ReplicaStatus,
    transitions: Mapping[ReplicaStatus, frozenset[ReplicaStatus]] = REPLICA_TRANSITIONS,
) -> None:
    """Raise IllegalTransitionError unless a replica may move from old to new (in `transitions`)."""
    if new not in transitions[old]:
        raise IllegalTransitionError(old=old, new=new)


def deployment_path(
    *, old: DeploymentStatus, new: DeploymentStatus
) -> tuple[DeploymentStatus, ...]:
    """Return the shortest chain of legal statuses leading from old to new, excluding old.

    The status computation derives a deployment's status from its replicas alone, so it can
    ask for a jump the lifecycle forbids (stopped -> scheduled when scaling up from zero).
    Recording each step of this path keeps the history legal: stopped -> pending ->
    scheduled. The path is empty when old == new; IllegalTransitionError when new is
    unreachable (anything after deleted).
    """
    if old == new:
        return ()
    came_from: dict[DeploymentStatus, DeploymentStatus] = {}
    queue = deque([old])
    while queue:
        current = queue.popleft()
        for successor in sorted(DEPLOYMENT_TRANSITIONS[current]):
            if successor not in came_from and successor != old:
                came_from[successor] = current
                queue.append(successor)
    if new not in came_from:
        raise IllegalTransitionError(old=old, new=new)
    path = [new]
    while (previous := came_from[path[-1]]) != old:
        path.append(previous)
    return tuple(reversed(path))


def holds_capacity(*, status: ReplicaStatus, has_node: bool) -> bool:
    """Tell whether a replica in this status counts against its node's capacity.

    A stopping replica still runs, so it keeps its share until the agent reports it stopped.
    """
    return has_node and status in CAPACITY_HOLDING_STATUSES
