"""The controller's view of one replica row, shared by the planner and the status computation.

Both need the same facts about a replica (is it active, does it wait for a node, does it
serve), so those facts are defined once here rather than re-derived in each place.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from controller.model.states import ACTIVE_REPLICA_STATUSES, ReplicaHealth, ReplicaStatus


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica of a deployment; created_seq orders replicas by creation (larger = newer)."""

    replica_id: uuid.UUID
    node_id: uuid.UUID | None
    status: ReplicaStatus
    revision: str
    created_seq: int
    # What its agent's health check last said (None: no check, or none ran yet) and since
    # when, and since when it runs: the facts model/health.py judges availability by.
    health: ReplicaHealth | None = None
    health_since: datetime | None = None
    running_since: datetime | None = None

    def __post_init__(self) -> None:
        # Only a pending replica may lack a node while it matters; anything that has started
        # runs somewhere. A stopped/failed one may never have had a node (pending -> stopped).
        if self.node_id is None and self.status in _NEEDS_NODE:
            raise ValueError(f"replica {self.replica_id} is {self.status} but has no node")

    @property
    def is_active(self) -> bool:
        """Whether it holds a slot toward the desired replica count."""
        return self.status in ACTIVE_REPLICA_STATUSES

    @property
    def is_unassigned(self) -> bool:
        """Whether it is pending and still waits for a node with room."""
        return self.status is ReplicaStatus.PENDING and self.node_id is None

    @property
    def is_available(self) -> bool:
        """Whether it serves now: running and not reported unhealthy.

        A stopping replica is on its way out. How long it has served is model/health.py's.
        """
        return self.status is ReplicaStatus.RUNNING and self.health is not ReplicaHealth.UNHEALTHY

    @property
    def is_unhealthy(self) -> bool:
        """Whether its agent reports it running but failing its health check: to replace."""
        return self.status is ReplicaStatus.RUNNING and self.health is ReplicaHealth.UNHEALTHY


_NEEDS_NODE = frozenset({ReplicaStatus.STARTING, ReplicaStatus.RUNNING, ReplicaStatus.STOPPING})
