"""Canaries and the automatic revert (issue 16 item 5): Nomad's model, without writing the spec.

With `spec.strategy.canary.replicas: N`, a new revision first gets N replicas beside the old
ones, which keep their full count, and waits: for `fogctl rollout promote` or, with
`canary.autoPromote`, for every canary to be available (healthy for minReadySeconds). Then
the rollout goes on within the RollingUpdate budget. There are canaries only when there is
something to run them beside (replicas of another revision): a first rollout, or one from
zero replicas, has nobody to protect.

With `spec.strategy.autoRevert: true`, a rollout whose new revision fails (a replica of it
failed to start, crashed or was replaced as unhealthy: the failure count of model/restarts.py,
which counts from the moment the spec's revision became the deployment's, so an old replica
failing meanwhile counts too, as a sign the rollout is not safe) or that passed its progress
deadline is aborted: the new revision's
replicas are stopped and the last completed revision ("the last fully healthy one", the
completed row with the highest number, model/revisions.py) is planned in its place, from its
stored template, at the full count. The operator never writes the spec: it stays the bad
revision, the object stays Stalled with reason RolloutAborted, and the next spec change (a new
hash) starts a new rollout. Without a completed revision there is nothing to go back to: the
rollout stalls as it would without autoRevert, and the status says why it was not reverted.

Promotion and abort are stored on the revision row (migration 0015), not in memory, so they
survive an operator restart: this module decides, the reconcile writes and reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from controller.model.planner import DesiredState
from controller.model.replicas import ReplicaState
from controller.model.revision import Template
from controller.model.revisions import KnownRevision
from controller.model.strategy import Rollout

# Who promoted, when the operator did (autoPromote): promoted_by's value, and the value the
# 0015 trigger leaves alone (the operator's own write needs no wake-up).
OPERATOR = "operator"


class AbortReason(StrEnum):
    """Why a rollout was aborted: the revision row's abort_reason and the status message."""

    FAILED = "NewRevisionFailed"
    DEADLINE = "ProgressDeadlineExceeded"


class Stage(StrEnum):
    """Where a rollout stands as far as canaries and reverts go."""

    NONE = "None"  # no canary wait and nothing aborted: the strategy as the spec says
    CANARY_WAITING = "CanaryWaiting"
    ABORTED = "RolloutAborted"
    NO_REVERT = "NothingToRevertTo"  # would abort, but no revision ever completed


@dataclass(frozen=True, slots=True)
class Facts:
    """What the decision reads: the spec's revision and the rows and replicas as observed."""

    rollout: Rollout
    revision: str
    known: Sequence[KnownRevision]
    replicas: Sequence[ReplicaState]
    available: Callable[[ReplicaState], bool]
    # Counted failures (model/restarts.py) of replicas while the spec's revision is the
    # deployment's: the new revision is failing.
    failures: int
    # The live status says ProgressDeadlineExceeded for this generation.
    deadline_exceeded: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision: what the planner is told, what to store, what the status says."""

    stage: Stage
    canaries: int | None = None  # canary.replicas while they wait
    canaries_available: int = 0
    promote: bool = False  # store the promotion now (autoPromote)
    abort: AbortReason | None = None  # store the abort now, with this reason
    aborted_reason: str | None = None  # the stored or new reason while aborted
    revert_to: KnownRevision | None = None

    def planner_input(self, desired: DesiredState, *, aborted_revision: str) -> DesiredState:
        """The planner's input under this verdict.

        Aborted: the revert target's revision, request and node selector from its stored
        template, the aborted revision's replicas stopped, no restart hold (the failures
        counted were the aborted revision's, not the target's).
        """
        if self.canaries is not None:
            return replace(desired, canary=self.canaries)
        if self.stage is not Stage.ABORTED or self.revert_to is None:
            return desired
        template = Template.from_spec(self.revert_to.template or {})
        return replace(
            desired,
            revision=self.revert_to.hash,
            request=template.request,
            node_selector=template.node_selector,
            aborted=frozenset({aborted_revision}),
            hold_new=False,
            canary=None,
        )


def last_completed(known: Sequence[KnownRevision], *, revision: str) -> KnownRevision | None:
    """The completed revision with the highest number other than `revision`, with a template.

    A row without a stored template (older than migration 0011) cannot be planned from.
    """
    done = [
        row for row in known if row.completed and row.hash != revision and row.template is not None
    ]
    return max(done, key=lambda row: row.number, default=None)


def decide(facts: Facts) -> Verdict:
    """Canary wait, promotion, abort, or nothing, for the spec's revision."""
    own = next((row for row in facts.known if row.hash == facts.revision), None)
    target = last_completed(facts.known, revision=facts.revision)
    if own is not None and own.aborted is not None:
        if target is None:  # the target was pruned or edited away since: nothing to serve
            return Verdict(stage=Stage.NO_REVERT, aborted_reason=own.aborted)
        return Verdict(stage=Stage.ABORTED, aborted_reason=own.aborted, revert_to=target)
    if own is not None and own.completed:
        return Verdict(stage=Stage.NONE)
    waiting = _canary_wait(facts, own=own)
    reason = _abort_reason(facts)
    if reason is not None and target is None:
        # Nothing to go back to: the rollout stalls as without autoRevert (canaries keep
        # waiting), and nothing is stored, so a later completed revision is not needed.
        return replace(waiting, stage=Stage.NO_REVERT, aborted_reason=reason, promote=False)
    if reason is not None:
        return Verdict(stage=Stage.ABORTED, abort=reason, aborted_reason=reason, revert_to=target)
    return waiting


def _abort_reason(facts: Facts) -> AbortReason | None:
    """Why the rollout of the spec's revision must be aborted now, if autoRevert says so."""
    if not facts.rollout.auto_revert:
        return None
    if facts.failures > 0:
        return AbortReason.FAILED
    return AbortReason.DEADLINE if facts.deadline_exceeded else None


def _canary_wait(facts: Facts, *, own: KnownRevision | None) -> Verdict:
    """Canaries waiting, to be promoted now (autoPromote), or no canary stage at all."""
    rollout = facts.rollout
    beside = any(
        replica.is_active and replica.revision != facts.revision for replica in facts.replicas
    )
    promoted = own is not None and own.promoted
    if rollout.canary_replicas is None or promoted or not beside:
        return Verdict(stage=Stage.NONE)
    canaries = [
        replica
        for replica in facts.replicas
        if replica.is_active and replica.revision == facts.revision
    ]
    available = sum(1 for replica in canaries if facts.available(replica))
    if rollout.auto_promote and own is not None and available >= rollout.canary_replicas:
        return Verdict(stage=Stage.NONE, promote=True)
    return Verdict(
        stage=Stage.CANARY_WAITING,
        canaries=rollout.canary_replicas,
        canaries_available=available,
    )
