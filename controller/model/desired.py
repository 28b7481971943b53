"""What a FogDeployment asks for, declared once.

The spec reaches three consumers: the planner (how many replicas of which revision, where), the
deployment row that records it, and the status that reports on it. Each used to copy the
fields it needed from the parsed spec by hand; now the kube layer parses the spec into this
one value, the planner's input is derived from it here, and the db layer's one table of tracked
columns reads it (controller/db/deployments.py). A new spec field is added here once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from controller.model.health import HealthCheck, Readiness
from controller.model.placement import Strategy
from controller.model.planner import DesiredState
from controller.model.resources import Resources
from controller.model.revision import Template
from controller.model.revisions import DEFAULT_HISTORY_LIMIT
from controller.model.strategy import DEFAULT_ROLLOUT, Rollout


@dataclass(frozen=True, slots=True)
class DesiredDeployment:
    """The tracked fields of one FogDeployment's spec, validated, in our own types.

    `revision` is derived from what a replica runs (`template`: image, request, container spec,
    node selector, health check; model/revision.py): a change there rolls the replicas, a
    change of count or strategy does not.
    """

    name: str
    image: str
    replicas: int
    request: Resources
    container_spec: Mapping[str, Any]
    node_selector: Mapping[str, str]
    strategy: Strategy
    # spec.healthCheck (None: none; the agents report no health, replicas serve once running)
    # and spec.minReadySeconds: when a replica counts as available (model/health.py).
    health_check: HealthCheck | None = None
    min_ready_seconds: int = 0
    # spec.revisionHistoryLimit: old revisions kept beside those still running (model/revisions.py).
    revision_history_limit: int = DEFAULT_HISTORY_LIMIT
    # spec.strategy, spec.paused, spec.progressDeadlineSeconds (model/strategy.py).
    rollout: Rollout = DEFAULT_ROLLOUT
    revision: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "revision", self.template.revision)  # frozen: set once, derived

    @property
    def template(self) -> Template:
        """What a replica of this spec runs: the revision's fields."""
        return Template(
            image=self.image,
            request=self.request,
            container_spec=self.container_spec,
            node_selector=self.node_selector,
            health_check=None if self.health_check is None else self.health_check.as_spec(),
        )

    @property
    def readiness(self) -> Readiness:
        """When this spec's replicas count as available (Ready, AVAILABLE)."""
        return Readiness(
            revision=self.revision,
            checked=self.health_check is not None,
            min_ready=timedelta(seconds=self.min_ready_seconds),
        )

    def planner_input(
        self, *, evacuate: frozenset[uuid.UUID], hold_new: bool, now: datetime
    ) -> DesiredState:
        """The planner's view of this spec, given what the snapshot and restart policy say.

        `now` is the reconcile's moment: a replica counts toward the rollout's floor once it
        is available then (healthy for minReadySeconds).
        """
        return DesiredState(
            replicas=self.replicas,
            revision=self.revision,
            request=self.request,
            strategy=self.strategy,
            node_selector=self.node_selector,
            evacuate=evacuate,
            hold_new=hold_new,
            rollout=self.rollout,
            available=partial(self.readiness.available, now=now),
        )
