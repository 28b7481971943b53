"""Replica health: the spec's health check, and when a replica counts as available.

The agent runs `spec.healthCheck` and reports a running replica healthy or unhealthy; the
operator never probes. What the operator decides from the recorded facts (status, health and
since when, running since when) is pure and lives here: whether a replica is available now,
and the moment it will be, so the reconcile can ask to run again then (a replica crossing
`minReadySeconds` changes nothing in the database, so no event would wake it). Canaries
(issue 16 item 5) need the same "healthy for minReadySeconds" per replica: it is `available`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.model.replicas import ReplicaState
from controller.model.states import ReplicaHealth, ReplicaStatus

# The probe kinds of `spec.healthCheck`, exactly one of which is set (the CRD enforces it).
PROBE_KINDS = ("http", "tcp", "exec")
# Kubernetes' probe defaults, the same for the same reasons: a check every 10 s, each given
# 1 s, and a replica unhealthy after 3 failures in a row (one slow answer is not a verdict).
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_FAILURE_THRESHOLD = 3


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """`spec.healthCheck` with its defaults filled in: what the agent runs."""

    kind: str  # one of PROBE_KINDS
    probe: Mapping[str, Any]  # {path, port}, {port} or {command}
    period_seconds: int = DEFAULT_PERIOD_SECONDS
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD

    def __post_init__(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise ValueError(f"unknown health check kind {self.kind!r}")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> HealthCheck:
        """Parse the CRD's camelCase shape; absent numbers take the Kubernetes defaults."""
        kinds = [kind for kind in PROBE_KINDS if kind in spec]
        if len(kinds) != 1:
            raise ValueError(f"healthCheck needs exactly one of {', '.join(PROBE_KINDS)}")
        return cls(
            kind=kinds[0],
            probe=dict(spec[kinds[0]]),
            period_seconds=int(spec.get("periodSeconds", DEFAULT_PERIOD_SECONDS)),
            timeout_seconds=int(spec.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
            failure_threshold=int(spec.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD)),
        )

    def as_spec(self) -> dict[str, Any]:
        """The CRD's shape with every default written out: what the assignment carries."""
        return {
            self.kind: dict(self.probe),
            "periodSeconds": self.period_seconds,
            "timeoutSeconds": self.timeout_seconds,
            "failureThreshold": self.failure_threshold,
        }


@dataclass(frozen=True, slots=True)
class Readiness:
    """When replicas count as available: `spec.minReadySeconds` and whether a check runs.

    A replica with a health check is available once healthy for `min_ready`; one without, once
    running for `min_ready`. The current revision has a check when the spec has one. A replica
    of another revision had its own template's check, which the spec no longer says: it is
    judged by what it reported (a replica that never reported health is taken as unchecked).
    """

    revision: str
    checked: bool
    min_ready: timedelta = timedelta(0)

    def _checked(self, replica: ReplicaState) -> bool:
        if replica.revision == self.revision:
            return self.checked
        return replica.health is not None

    def _serving_since(self, replica: ReplicaState) -> tuple[bool, datetime | None]:
        """Whether it serves now, and since when (None: a row from before the stamps)."""
        if replica.status is not ReplicaStatus.RUNNING:
            return False, None
        if self._checked(replica):
            return replica.health is ReplicaHealth.HEALTHY, replica.health_since
        return True, replica.running_since

    def available(self, replica: ReplicaState, *, now: datetime) -> bool:
        """Whether it has served (healthy, or running when unchecked) for `min_ready` by now.

        A serving replica whose moment was never recorded has served all along, as far as
        anyone can tell.
        """
        serving, since = self._serving_since(replica)
        return serving and (since is None or since + self.min_ready <= now)

    def next_crossing(self, replicas: Iterable[ReplicaState], *, now: datetime) -> datetime | None:
        """The earliest moment after `now` at which one of these replicas becomes available.

        Nothing is written then, so nothing would wake the reconcile: it requeues itself.
        """
        moments = []
        for replica in replicas:
            serving, since = self._serving_since(replica)
            if serving and since is not None and since + self.min_ready > now:
                moments.append(since + self.min_ready)
        return min(moments, default=None)


UNCHECKED = Readiness(revision="", checked=False)
"""Every running replica available at once: no health check and minReadySeconds 0."""
