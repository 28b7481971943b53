"""What the agent protocol carries: a node's assignments and the reports its agent sends back.

Plain values, shared by the database side (db/reports.py), the agent API that carries them
over HTTP (agentapi/) and the agents themselves (agent/), none of which should depend on
another's libraries for them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from controller.model.health import HealthCheck
from controller.model.resources import Resources
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.usage import Usage

# Kubernetes object names are DNS subdomains (253 characters at most); namespaces and labels
# are shorter, but one width for every name keeps the columns interchangeable.
K8S_NAME_MAX = 253
# Container runtimes print 64-hex IDs; 255 leaves room for a runtime prefix (containerd://...).
CONTAINER_ID_MAX = 255
# A reason is a short word or sentence ("Started", "ImagePullFailed: ..."); 1,024 characters, as
# the CRD allows a condition's reason, is plenty, and keeps an agent from filling the history.
REASON_MAX = 1024


@dataclass(frozen=True, slots=True)
class Assignment:
    """A replica placed on one of the agent's nodes, with what it must run."""

    replica_id: uuid.UUID
    node: str
    status: ReplicaStatus
    namespace: str
    deployment: str
    ordinal: int
    image: str
    container_spec: dict[str, Any]
    container_id: str | None
    # What the replica was placed with: what a real agent limits it to, and what the
    # simulated one reports a share of as its usage.
    request: Resources | None = None
    # The health check the agent runs on it once it runs (None: none), and what the agent's
    # last accepted health report said (None: none yet): it reports a change only.
    health_check: HealthCheck | None = None
    health: ReplicaHealth | None = None

    @property
    def replica_name(self) -> str:
        """A readable replica name: `<deployment>-<ordinal>`."""
        return f"{self.deployment}-{self.ordinal}"


@dataclass(frozen=True, slots=True)
class Report:
    """One status change an agent reports for a replica on its node."""

    node: str
    replica_id: uuid.UUID
    status: ReplicaStatus
    reason: str
    container_id: str | None = None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What an agent's health check says of a running replica on its node: a change of it.

    The agent decides: unhealthy after the check's failureThreshold failures in a row.
    """

    node: str
    replica_id: uuid.UUID
    health: ReplicaHealth
    reason: str


@dataclass(frozen=True, slots=True)
class ReportResult:
    """Which reports were written and why the others were refused."""

    accepted: int
    refused: list[tuple[uuid.UUID, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UsageSample:
    """What one running replica on the agent's node uses, as the agent measured it."""

    node: str
    replica_id: uuid.UUID
    usage: Usage
