"""The Progressing condition: is a rollout moving, and has it stopped moving for too long.

A Kubernetes Deployment reports this the same way, and tools read it (Argo CD, `kubectl
rollout status`, people): Progressing=True while a rollout moves or once it completed,
False with reason ProgressDeadlineExceeded once nothing moved for progressDeadlineSeconds,
Unknown with reason DeploymentPaused while the spec says paused. The object is then Stalled
for kstatus (model/status.py), which a wait would not change.

Where the time of the last progress lives: in the condition itself, as `lastUpdateTime`
(a Deployment's condition field), not in a database column. It is what a person reading the
condition wants to see, it needs no migration, and the reconcile already reads the live status
it compares with. Progress is judged, as the Deployment controller judges it, by comparing the
status last written with the one just computed: more replicas available, fewer of an old
revision, or a new generation (a new goal restarts the clock; so does resuming). A replica
that fails and is replaced by another that fails again is not progress: the counts compared
do not move. Times are the database's clock (`now` of the snapshot), as every stored time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controller.model.conditions import Condition, ConditionType, make_condition, rfc3339
from controller.model.strategy import Rollout


class ProgressReason(StrEnum):
    """The Progressing condition's reasons; Kubernetes' where it has one for a Deployment."""

    PROGRESSING = "RevisionProgressing"
    COMPLETE = "NewRevisionAvailable"
    DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    PAUSED = "DeploymentPaused"
    # Issue 16 item 5 (model/canary.py): every canary available, the rollout waits for its
    # promotion (no deadline runs: a person decides); or aborted by autoRevert.
    CANARY_WAITING = "CanaryWaiting"
    ABORTED = "RolloutAborted"


@dataclass(frozen=True, slots=True)
class RolloutCounts:
    """What progress is judged by, as `.status` spells it."""

    generation: int
    desired: int
    active: int  # status.replicas: any revision
    ready: int  # status.readyReplicas: available, any revision
    updated: int  # status.updatedReplicas: active on the current revision

    @property
    def old(self) -> int:
        """Active replicas of another revision."""
        return self.active - self.updated

    @property
    def complete(self) -> bool:
        """Every desired replica is of the current revision and available, no other is left."""
        return self.updated == self.active == self.ready == self.desired

    @classmethod
    def written(cls, status: Mapping[str, Any]) -> RolloutCounts:
        """The counts of a `.status` as last written (zeros where absent)."""
        return cls(
            generation=int(status.get("observedGeneration") or 0),
            desired=0,  # the status does not carry it, and progress never compares it
            active=int(status.get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
        )


@dataclass(frozen=True, slots=True)
class Progress:
    """The Progressing condition computed, and whether it makes the object Stalled.

    due: when the deadline passes if nothing moves before (reconcile then, as no event
    will come), None when no deadline runs.
    """

    condition: Condition
    exceeded: bool
    due: datetime | None


def _previous(conditions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    found: Mapping[str, Any] = next(
        (c for c in conditions if c.get("type") == ConditionType.PROGRESSING), {}
    )
    return found


def _moved(*, now: RolloutCounts, before: Mapping[str, Any]) -> bool:
    """Whether the rollout moved since the status `before` was written."""
    was = RolloutCounts.written(before)
    return now.generation != was.generation or now.ready > was.ready or now.old < was.old


# The clock starts afresh after these: nothing ran against the deadline (Kubernetes, too,
# never times out a Deployment whose condition says complete, until a new rollout starts).
_RESTART_FROM = frozenset(
    {
        ProgressReason.COMPLETE,
        ProgressReason.PAUSED,
        ProgressReason.CANARY_WAITING,
        ProgressReason.ABORTED,
    }
)


def _since(condition: Mapping[str, Any], *, fallback: datetime) -> datetime:
    stamp = condition.get("lastUpdateTime")
    try:
        return datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return fallback  # absent or unreadable: count from now, as for a new rollout


def deadline_exceeded(status: Mapping[str, Any], *, generation: int) -> bool:
    """Whether `status` (as last written) says ProgressDeadlineExceeded for this generation.

    What an automatic revert reads (model/canary.py): a verdict about an older spec says
    nothing about this one.
    """
    prior = _previous(status.get("conditions") or ())
    return (
        prior.get("reason") == ProgressReason.DEADLINE_EXCEEDED
        and status.get("observedGeneration") == generation
    )


def progressing(
    *,
    counts: RolloutCounts,
    rollout: Rollout,
    revision: str,
    previous_status: Mapping[str, Any],
    now: datetime,
    stage: ProgressReason | None = None,
) -> Progress:
    """The Progressing condition for `counts`, given the status last written.

    Once exceeded it stays so until the rollout moves again (or a new spec, or a resume).
    `stage` CANARY_WAITING (every canary available, waiting for promotion) or ABORTED (by
    autoRevert) says so instead, with no deadline running.
    lastUpdateTime is the last progress; lastTransitionTime, as for every condition, the
    last change of status.
    """
    prior = _previous(previous_status.get("conditions") or ())
    restart = not prior or prior.get("reason") in _RESTART_FROM
    moved = restart or _moved(now=counts, before=previous_status)
    last = now if moved else _since(prior, fallback=now)
    stuck = prior.get("reason") == ProgressReason.DEADLINE_EXCEEDED
    deadline = timedelta(seconds=rollout.progress_deadline_seconds)
    status: bool | None
    if rollout.paused:
        status, reason, due = None, ProgressReason.PAUSED, None
        message = "the rollout is paused (spec.paused)"
    elif stage is ProgressReason.CANARY_WAITING:
        status, reason, due = True, stage, None
        message = f"the canaries of revision {revision} are available and wait for promotion"
    elif stage is ProgressReason.ABORTED:
        status, reason, due = False, stage, None
        message = f"the rollout of revision {revision} was aborted (spec.strategy.autoRevert)"
    elif counts.complete:
        status, reason, due = True, ProgressReason.COMPLETE, None
        message = f"revision {revision} has successfully progressed"
    elif not moved and (stuck or now - last >= deadline):
        status, reason, due = False, ProgressReason.DEADLINE_EXCEEDED, None
        message = (
            f"revision {revision} has made no progress for {rollout.progress_deadline_seconds}s"
            f" (progressDeadlineSeconds): {counts.updated} of {counts.desired} replicas"
            f" updated, {counts.ready} available"
        )
    else:
        status, reason, due = True, ProgressReason.PROGRESSING, last + deadline
        message = (
            f"revision {revision} is progressing: {counts.updated} of {counts.desired} replicas"
            f" updated, {counts.ready} available"
        )
    if reason in _RESTART_FROM and prior.get("reason") == reason:
        # At rest (complete, paused, waiting or aborted) the stamp stays when it came to rest:
        # a new stamp per reconcile would make every resync of a settled object a status
        # patch, as Kubernetes avoids by leaving a complete Deployment's condition alone.
        last = _since(prior, fallback=last)
    condition = make_condition(
        type_=ConditionType.PROGRESSING,
        status=status,
        reason=reason,
        message=message,
        generation=counts.generation,
        previous=previous_status.get("conditions") or (),
        now=now,
    )
    return Progress(
        condition=replace(condition, last_update_time=rfc3339(moment=last)),
        exceeded=reason is ProgressReason.DEADLINE_EXCEEDED,
        due=due,
    )
