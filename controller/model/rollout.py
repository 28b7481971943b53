"""Where a FogDeployment's rollout stands, read from the object alone, as `kubectl rollout status`.

`kubectl rollout status` knows only Deployments, DaemonSets and StatefulSets; people and CI
scripts still want its loop for ours: wait until the new spec runs everywhere, fail loudly when
it cannot. Judging one object body is pure, so the whole verdict table is unit-tested and the
command (controller/cli/rollout_commands.py) only watches and prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.model.conditions import ConditionType
from controller.model.progress import ProgressReason

UNOBSERVED = "Waiting for fogdeployment spec update to be observed..."


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    """One look at the object: finished, failed (with why), or what it still waits for."""

    done: bool
    failed: bool
    message: str


def _condition(status: Mapping[str, Any], type_: ConditionType) -> Mapping[str, Any]:
    found: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == type_), {}
    )
    return found


def progress(body: Mapping[str, Any]) -> RolloutProgress:
    """The rollout's state, in kubectl's words for a Deployment.

    Done means the status describes the current generation, every desired replica is of the
    current revision, none of an older one is left, and the Ready condition is True. Failed
    means the operator gave up on this generation (Stalled=True: no room, a crash loop, an
    invalid spec), which a wait would not change; a passed progress deadline is told in
    kubectl's words for a Deployment, a rollout aborted by autoRevert as such. Canaries
    waiting for promotion (`.status.canary`) are a wait, not a failure.
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    name = f'fogdeployment "{meta.get("name", "")}"'
    generation = int(meta.get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return RolloutProgress(
            False, False, "Waiting for fogdeployment spec update to be observed..."
        )
    deadline = _condition(status, ConditionType.PROGRESSING).get("reason")
    if deadline == ProgressReason.DEADLINE_EXCEEDED:
        return RolloutProgress(False, True, f"{name} exceeded its progress deadline")
    stalled = _condition(status, ConditionType.STALLED)
    if stalled.get("status") == "True" and stalled.get("reason") == ProgressReason.ABORTED:
        return RolloutProgress(False, True, f"{name} rollout aborted: {stalled.get('message')}")
    if stalled.get("status") == "True":
        why = f"{stalled.get('reason', '')}: {stalled.get('message', '')}"
        return RolloutProgress(False, True, f"{name} is stalled: {why}")
    desired = int(spec.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    active = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    waiting = f"Waiting for {name} rollout to finish: "
    canary = status.get("canary")
    if canary:
        return RolloutProgress(
            False,
            False,
            f"{waiting}{canary.get('available', 0)} of {canary.get('replicas', 0)} canaries of"
            f" revision {canary.get('revision')} available, waiting for promotion"
            " (fogctl rollout promote)...",
        )
    if updated < desired:
        return RolloutProgress(
            False, False, f"{waiting}{updated} out of {desired} new replicas have been updated..."
        )
    if active > updated:
        old = active - updated
        return RolloutProgress(
            False, False, f"{waiting}{old} old replicas are pending termination..."
        )
    if _condition(status, ConditionType.READY).get("status") != "True":
        return RolloutProgress(
            False, False, f"{waiting}{ready} of {desired} updated replicas are available..."
        )
    return RolloutProgress(True, False, f"{name} successfully rolled out")
