"""The FogDeployment `.status`, every field of it, built here and nowhere else.

Users and tools read a deployment's health from `.status` alone, so it must be derived the
same way every time from the same facts; doing it here, without I/O, lets the reconciler
compare the result with the live status and skip patches that would change nothing. The body
of a reconcile that went through (`status_body`) and of one that could not (`failure_status`)
are both built in this module, so a new status field is added in one place.
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from controller.model.canary import Stage, Verdict
from controller.model.conditions import Condition, ConditionType, condition_set
from controller.model.health import UNCHECKED, Readiness
from controller.model.progress import ProgressReason, RolloutCounts, progressing
from controller.model.quota import QUOTA_EXCEEDED
from controller.model.replicas import ReplicaState
from controller.model.revisions import RevisionPlan
from controller.model.states import DeploymentStatus, ReplicaStatus
from controller.model.strategy import Rollout
from controller.model.usage import CurrentUsage


class Phase(StrEnum):
    """The one-word summary shown in `.status.phase`; values are spelled as in the CRD."""

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    STOPPED = "Stopped"
    FAILED = "Failed"


SELECTOR_LABEL = "fogcompute.io/deployment"
# Kubernetes' label value limit, and how many hex digits of a name's hash stand in for the part
# of a longer name that does not fit (40 bits: no collision among any real set of names).
LABEL_VALUE_MAX = 63
SELECTOR_HASH = 10
# Printed in `kubectl get -o wide` and `describe`; twelve hex digits identify a revision
# among a deployment's few, as git's short hashes do.
SHORT_REVISION = 12


def counted(count: int, noun: str) -> str:
    """The count and its noun in the right number: 1 replica, 2 replicas."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def short_revision(revision: str) -> str:
    """The revision as `status.revision`, messages and events show it."""
    return revision[:SHORT_REVISION]


def selector(name: str) -> str:
    """The label selector string of a deployment's replicas (for `/scale` and autoscalers).

    A label value holds at most 63 characters and a FogDeployment name up to 100, and `kubectl
    scale` (like any autoscaler) parses the selector: a longer name is cut, and a hash of the
    whole name appended so that two long names sharing a prefix still select apart.
    """
    if len(name) <= LABEL_VALUE_MAX:
        return f"{SELECTOR_LABEL}={name}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:SELECTOR_HASH]
    return f"{SELECTOR_LABEL}={name[: LABEL_VALUE_MAX - SELECTOR_HASH - 1]}-{digest}"


_NO_STATUS: Mapping[str, Any] = MappingProxyType({})

PHASE_STATUS: Mapping[Phase, DeploymentStatus] = MappingProxyType(
    {
        Phase.PENDING: DeploymentStatus.PENDING,
        Phase.SCHEDULED: DeploymentStatus.SCHEDULED,
        Phase.RUNNING: DeploymentStatus.RUNNING,
        Phase.STOPPED: DeploymentStatus.STOPPED,
        Phase.FAILED: DeploymentStatus.FAILED,
    }
)
"""The database status recorded for each phase."""


@dataclass(frozen=True, slots=True)
class _Counts:
    desired: int
    active: int  # any revision
    ready: int  # available (model/health.py: healthy for minReadySeconds), any revision
    updated: int  # active on the desired revision
    unassigned: int  # pending without a node
    stopping: int

    @classmethod
    def of(
        cls,
        *,
        desired: int,
        revision: str,
        replicas: Sequence[ReplicaState],
        readiness: Readiness,
        now: datetime,
    ) -> "_Counts":
        active = [replica for replica in replicas if replica.is_active]
        return cls(
            desired=desired,
            active=len(active),
            ready=sum(1 for replica in active if readiness.available(replica, now=now)),
            updated=sum(1 for replica in active if replica.revision == revision),
            unassigned=sum(1 for replica in active if replica.is_unassigned),
            stopping=sum(1 for replica in replicas if replica.status is ReplicaStatus.STOPPING),
        )

    def waiting(self, *, unplaced: int) -> int:
        """Replicas without a node: the planner's count, or the rows if they say more."""
        return max(unplaced, self.unassigned)


@dataclass(frozen=True, slots=True)
class _Summary:
    verdict: ConditionType  # the one condition that is True
    reason: str
    message: str


NO_STAGE = Verdict(stage=Stage.NONE)
"""No canary wait and nothing aborted: the status as the strategy alone makes it."""


def _aborted(stage: Verdict, *, counts: _Counts, revision: str) -> _Summary | None:
    """The summary of a rollout aborted by autoRevert, which nothing else overrides."""
    if stage.stage is not Stage.ABORTED or stage.revert_to is None:
        return None
    message = (
        f"the rollout of revision {revision} was aborted ({stage.aborted_reason},"
        f" spec.strategy.autoRevert): revision {stage.revert_to.number} serves;"
        f" {counts.ready} of {counts.desired} replicas running"
    )
    return _Summary(ConditionType.STALLED, ProgressReason.ABORTED, message)


def _rolling(
    *, counts: _Counts, revision: str, running: str, paused: bool, stage: Verdict
) -> _Summary:
    """Replicas of two revisions: canaries waiting, a paused rollout, or one going on."""
    if stage.stage is Stage.CANARY_WAITING:
        message = (
            f"{stage.canaries_available} of {counted(stage.canaries or 0, 'canary')} of"
            f" revision {revision} available, waiting for promotion (fogctl rollout promote)"
            f"; {running}"
        )
        return _Summary(ConditionType.RECONCILING, ProgressReason.CANARY_WAITING, message)
    message = f"{counts.updated} of {counts.desired} replicas on revision {revision}; {running}"
    # Paused half way is a state the user asked for: in progress (not Stalled), as kstatus
    # says of a paused Deployment, with the reason a Deployment's Progressing gives.
    reason = ProgressReason.PAUSED if paused else "RollingUpdate"
    return _Summary(ConditionType.RECONCILING, reason, message)


def _no_room(*, counts: _Counts, message: str) -> _Summary:
    """Replicas wait for a node: stuck, unless something under way will make or use room."""
    if counts.stopping:
        # Stopping replicas still hold capacity (a rollout on a full cluster waits for
        # them); that is progress, not a dead end, so do not report Stalled yet.
        message = f"{message}; waiting for {counted(counts.stopping, 'stopping replica')}"
        return _Summary(ConditionType.RECONCILING, "AwaitingCapacity", message)
    coming = counts.active - counts.unassigned - counts.ready  # placed, not yet available
    if counts.active > counts.desired and coming:
        # A surge replica with no room while others come up: the rollout goes on within
        # maxUnavailable (each one available lets an old one go), so it is not stuck.
        message = f"{message}; waiting for {counted(coming, 'replica')} to become available"
        return _Summary(ConditionType.RECONCILING, "AwaitingCapacity", message)
    return _Summary(ConditionType.STALLED, "InsufficientCapacity", message)


def _summarize(
    *,
    counts: _Counts,
    revision: str,
    unplaced: int,
    shortfall: str | None,
    stalled: str | None,
    quota: str | None,
    paused: bool = False,
    stage: Verdict = NO_STAGE,
) -> _Summary:
    """One reason and message for the whole status; every condition shares them.

    An autoRevert that found nothing to go back to says so after the count of running ones.
    """
    waiting = counts.waiting(unplaced=unplaced)
    running = f"{counts.ready} of {counts.desired} replicas running"
    if stage.stage is Stage.NO_REVERT:
        running += f"; not reverted ({stage.aborted_reason}): no earlier revision completed"
    if stalled is not None:
        return _Summary(
            ConditionType.STALLED, stalled, f"reconciliation stalled: {stalled}; {running}"
        )
    if waiting and quota is not None:
        # Held by the namespace's quota, not by the fleet: more nodes would not help. Our own
        # stopping replicas will free quota, so that is progress (as for capacity below).
        verdict = ConditionType.RECONCILING if counts.stopping else ConditionType.STALLED
        return _Summary(verdict, QUOTA_EXCEEDED, f"{quota}; {running}")
    if waiting:
        return _no_room(
            counts=counts,
            message=shortfall or f"no node with room for {counted(waiting, 'replica')}",
        )
    if counts.updated < counts.active:
        return _rolling(
            counts=counts, revision=revision, running=running, paused=paused, stage=stage
        )
    if counts.ready < counts.desired:
        return _Summary(ConditionType.RECONCILING, "ScalingUp", running)
    if counts.active > counts.desired:
        message = f"{counted(counts.active, 'replica')} active, {counts.desired} desired"
        return _Summary(ConditionType.RECONCILING, "ScalingDown", message)
    if counts.stopping:
        stopping = f"{counted(counts.stopping, 'replica')} stopping"
        return _Summary(ConditionType.RECONCILING, "Terminating", stopping)
    return _Summary(ConditionType.READY, "AllReplicasReady", f"{running} revision {revision}")


def _phase(*, counts: _Counts, unplaced: int, stalled: str | None) -> Phase:
    if counts.desired == 0:
        return Phase.STOPPED
    if stalled is not None:
        return Phase.FAILED
    if counts.waiting(unplaced=unplaced) or counts.active < counts.desired:
        return Phase.PENDING
    if counts.ready == counts.updated == counts.active == counts.desired:
        return Phase.RUNNING
    return Phase.SCHEDULED


@dataclass(frozen=True, slots=True)
class FogDeploymentStatus:
    """The computed `.status`; as_patch() gives its fields in the CRD's shape.

    `.status.selector` (the scale subresource's label selector) depends on the object's
    name, not on the replicas: `status_body` adds it.
    """

    phase: Phase
    observed_generation: int
    revision: str
    desired_replicas: int
    replicas: int  # active, any revision
    ready_replicas: int  # available (healthy for minReadySeconds), any revision
    updated_replicas: int  # active on the current revision
    unplaced_replicas: int  # waiting for a node with room
    conditions: tuple[Condition, ...]
    # When the progress deadline passes if nothing moves (model/progress.py): reconcile then.
    progress_due: datetime | None = None

    @property
    def rolled_out(self) -> bool:
        """Whether the revision's rollout completed (model/revisions.py).

        Every desired replica runs this revision and is available, and nothing else is active.
        Never at 0 desired, where nothing proved the template healthy.
        """
        return (
            self.desired_replicas > 0
            and self.updated_replicas == self.replicas == self.desired_replicas
            and self.ready_replicas >= self.desired_replicas
        )

    @property
    def deployment_status(self) -> DeploymentStatus:
        """The status to record in the database for this phase."""
        return PHASE_STATUS[self.phase]

    def as_patch(self) -> dict[str, Any]:
        """The `.status` body in the CRD's camelCase shape."""
        return {
            "phase": str(self.phase),
            "observedGeneration": self.observed_generation,
            "revision": short_revision(self.revision),
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            # A Deployment's AVAILABLE: ready here already means available (healthy for
            # minReadySeconds), so the two counts agree; the field is there for kubectl get's
            # column and for the scripts and tools that read Deployments' field.
            "availableReplicas": self.ready_replicas,
            "updatedReplicas": self.updated_replicas,
            "unplacedReplicas": self.unplaced_replicas,
            "ready": f"{self.ready_replicas}/{self.desired_replicas}",  # the printer column
            "conditions": [condition.as_dict() for condition in self.conditions],
        }


def compute_status(
    *,
    generation: int,
    desired_replicas: int,
    revision: str,
    replicas: Sequence[ReplicaState],
    unplaced: int,
    shortfall: str | None,
    previous_conditions: Sequence[Mapping[str, Any]],
    stalled_reason: str | None,
    now: datetime,
    quota: str | None = None,
    readiness: Readiness = UNCHECKED,
    rollout: Rollout | None = None,
    previous_status: Mapping[str, Any] = _NO_STATUS,
    stage: Verdict = NO_STAGE,
) -> FogDeploymentStatus:
    """Compute `.status` from the replicas as they are after the plan was applied.

    stalled_reason (a CamelCase token, e.g. from crash-loop detection) marks the deployment
    Failed; it is ignored at zero desired replicas, where nothing is meant to run. quota is
    the quota's message when it held replicas back (model/quota.py): reason QuotaExceeded.
    readiness says when a replica counts as ready (healthy for minReadySeconds; by default
    every running replica at once). rollout, when given, adds the Progressing condition,
    judged against previous_status (the live `.status`): past progressDeadlineSeconds
    without progress the deployment is Stalled with reason ProgressDeadlineExceeded, unless
    something more specific (a crash loop, no room, the quota) already stalls it.
    stage is model/canary.py's verdict: canaries waiting (Reconciling, CanaryWaiting), or an
    aborted rollout (Stalled, RolloutAborted: phase Failed, kstatus Failed).
    """
    counts = _Counts.of(
        desired=desired_replicas,
        revision=revision,
        replicas=replicas,
        readiness=readiness,
        now=now,
    )
    progress = (
        None
        if rollout is None
        else progressing(
            counts=RolloutCounts(
                generation=generation,
                desired=desired_replicas,
                active=counts.active,
                ready=counts.ready,
                updated=counts.updated,
            ),
            rollout=rollout,
            revision=short_revision(revision),
            previous_status=previous_status,
            now=now,
            stage=_progress_stage(stage),
        )
    )
    aborted = stage.stage is Stage.ABORTED and stage.revert_to is not None
    stalled = ProgressReason.ABORTED if aborted else stalled_reason
    stalled = stalled if desired_replicas > 0 else None

    def summarize() -> _Summary:
        aborted = _aborted(stage, counts=counts, revision=short_revision(revision))
        if aborted is not None:
            return aborted
        return _summarize(
            counts=counts,
            revision=short_revision(revision),
            unplaced=unplaced,
            shortfall=shortfall,
            stalled=stalled,
            quota=quota,
            paused=rollout is not None and rollout.paused,
            stage=stage,
        )

    summary = summarize()
    # A passed deadline stalls what nothing else stalls already: a crash loop, or no room or
    # quota, says better why nothing moves.
    deadline = progress is not None and progress.exceeded and desired_replicas > 0
    if deadline and summary.verdict is not ConditionType.STALLED:
        stalled = ProgressReason.DEADLINE_EXCEEDED
        summary = summarize()
    conditions = condition_set(
        verdict=summary.verdict,
        reason=summary.reason,
        message=summary.message,
        generation=generation,
        previous=previous_conditions,
        now=now,
    )
    return FogDeploymentStatus(
        phase=_phase(counts=counts, unplaced=unplaced, stalled=stalled),
        observed_generation=generation,
        revision=revision,
        desired_replicas=desired_replicas,
        replicas=counts.active,
        ready_replicas=counts.ready,
        updated_replicas=counts.updated,
        unplaced_replicas=counts.waiting(unplaced=unplaced),
        conditions=conditions if progress is None else (*conditions, progress.condition),
        progress_due=None if progress is None else progress.due,
    )


def _progress_stage(stage: Verdict) -> ProgressReason | None:
    """What the Progressing condition says instead of counting progress, if anything."""
    if stage.stage is Stage.ABORTED and stage.revert_to is not None:
        return ProgressReason.ABORTED
    waits = stage.stage is Stage.CANARY_WAITING
    if waits and stage.canaries_available >= (stage.canaries or 0):
        return ProgressReason.CANARY_WAITING
    return None


def status_body(
    status: FogDeploymentStatus,
    *,
    name: str,
    usage: CurrentUsage | None = None,
    revisions: RevisionPlan | None = None,
    stage: Verdict = NO_STAGE,
) -> dict[str, Any]:
    """The whole `.status` we own after a reconcile (kopf's own `status.kopf` is left alone).

    `usage` is what the running replicas use (None: none sampled yet), refreshed by the
    reconciles that happen anyway, not by every sample (docs/design/capacity-and-history.md):
    a null deletes a stale figure in the merge patch, and compares equal to an absent one.

    `revisions` gives the revision numbers, StatefulSet's field names with
    `fogctl rollout history`'s numbers: `updateRevision` is the spec's, `currentRevision` the
    newest whose rollout completed (null until one has): equal once a rollout is done.

    `canary` is there while canaries wait for promotion (model/canary.py): the revision's
    number, its active replicas and how many are available; null (removed) otherwise.
    """
    waiting = stage.stage is Stage.CANARY_WAITING and revisions is not None
    canary = (
        {
            "revision": revisions.number,
            "replicas": status.updated_replicas,
            "available": stage.canaries_available,
        }
        if waiting and revisions is not None
        else None
    )
    numbers = (
        {}
        if revisions is None
        else {"updateRevision": revisions.number, "currentRevision": revisions.current}
    )
    return {
        **status.as_patch(),
        **numbers,
        "selector": selector(name),
        "usage": None if usage is None else usage.as_status(),
        "canary": canary,
    }


def failure_status(
    *,
    reason: str,
    message: str,
    stalled: bool,
    generation: int,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime,
    ready_replicas: int = 0,
    desired_replicas: int | None = None,
) -> dict[str, Any]:
    """The `.status` of a reconcile that could not run: conditions that say why.

    Stalled for causes that wait for a spec change (InvalidSpec), Reconciling for those that
    are retried (DatabaseUnavailable). The counts are left as last written: nothing new is
    known about the replicas.

    A stalled verdict is a judgement of this generation's spec, so it also sets the top-level
    `observedGeneration` (kstatus and the Argo CD check read that first; without it a spec
    that can never work looked in progress forever), phase Failed, and the Ready column from
    `ready_replicas` (last written) and `desired_replicas` (the spec's count, None when that
    is itself unreadable). A retried cause leaves them: the spec was not looked at.
    """
    conditions = condition_set(
        verdict=ConditionType.STALLED if stalled else ConditionType.RECONCILING,
        reason=reason,
        message=message,
        generation=generation,
        previous=previous_conditions,
        now=now,
    )
    # Progressing is left as it was (a merge patch replaces the whole list): a failed reconcile
    # learnt nothing about the rollout, and its deadline clock must not restart.
    kept = [dict(c) for c in previous_conditions if c.get("type") == ConditionType.PROGRESSING]
    body: dict[str, Any] = {"conditions": [c.as_dict() for c in conditions] + kept}
    if stalled:
        desired = "?" if desired_replicas is None else str(desired_replicas)
        body |= {
            "observedGeneration": generation,
            "phase": str(Phase.FAILED),
            "ready": f"{ready_replicas}/{desired}",
        }
    return body


def status_changed(*, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether patching new over the live status old would change any field new sets."""
    return any(old.get(key) != value for key, value in new.items())


# `.status.usage` alone is rewritten when it is this much older than the latest samples: with
# the resync every 600 s, 5,000 objects cost 1.4 status writes a second for it (50,000: 14),
# where writing every new figure would be one write per object per resync (8 and 83).
USAGE_STATUS_MAX_AGE = timedelta(hours=1)
# ...or when the figure moved by at least half (doubled, or halved): a change a person would
# want to see; the simulated replicas' round-to-round variation (at most 15%) never does.
USAGE_STATUS_MOVE = 0.5


def _moved(fresh: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    for field in ("cpuCores", "memoryMB"):
        new, was = float(fresh[field]), float(old[field])
        if abs(new - was) >= USAGE_STATUS_MOVE * max(new, was, 0.0) and new != was:
            return True
    return False


def settled_usage(body: Mapping[str, Any], live: Mapping[str, Any]) -> Any:
    """The `usage` to write with `body`: the fresh figure only when it is worth an API write.

    Samples change the figure at every round, so a reconcile that found nothing else to change
    would otherwise patch the status each time (every resync of every object). The fresh figure
    is written when usage appears or goes, when the number of sampled replicas changes, when
    the status is patched anyway, when it moved by half, or when the written one is an hour
    older than the samples; otherwise the written one stays (and compares equal: no patch).
    Ages compare the two figures' own sample times, on the database's clock.
    """
    fresh, old = body.get("usage"), live.get("usage")
    if fresh is None or not isinstance(old, Mapping):
        return fresh
    others = {key: value for key, value in body.items() if key != "usage"}
    if (
        status_changed(old=live, new=others)
        or fresh.get("sampledReplicas") != old.get("sampledReplicas")
        or _moved(fresh, old)
        or _sampled_at(fresh) - _sampled_at(old) >= USAGE_STATUS_MAX_AGE
    ):
        return fresh
    return dict(old)


def _sampled_at(usage: Mapping[str, Any]) -> datetime:
    return datetime.strptime(str(usage["sampledAt"]), "%Y-%m-%dT%H:%M:%S%z")
