"""The FogDeployment `.status` body, as written through the `/status` subresource.

The pure status computation gives phase, counts and conditions; this adds what exists only
for Kubernetes' sake: the `ready` string the printer column shows ("3/5"), the label selector
string the scale subresource requires, and the revision and unplaced count for `-o yaml`.
"""

from __future__ import annotations

from typing import Any

from controller.model.status import FogDeploymentStatus

SELECTOR_LABEL = "fogcompute.io/deployment"
# Printed in `kubectl get -o wide` and `describe`; twelve hex digits identify a revision
# among a deployment's few, as git's short hashes do.
SHORT_REVISION = 12


def selector(name: str) -> str:
    """The label selector string of a deployment's replicas (for `/scale` and autoscalers)."""
    return f"{SELECTOR_LABEL}={name}"


def status_body(
    *, name: str, status: FogDeploymentStatus, desired: int, revision: str, unplaced: int
) -> dict[str, Any]:
    """The whole `.status` we own (kopf's own `status.kopf` is left alone)."""
    return {
        **status.as_patch(),
        "ready": f"{status.ready_replicas}/{desired}",
        "selector": selector(name),
        "revision": revision[:SHORT_REVISION],
        "unplacedReplicas": unplaced,
    }
