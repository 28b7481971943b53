"""kstatus, Flux's CEL health check and Argo CD's health check on objects from the API server.

Each status is written through the /status subresource exactly as the operator's status
builder (model/status.py) makes it, then the object is read back with kubectl and judged by
the real libraries (tests/gitops.py). The headline case is the brand-new object with no status:
kstatus calls it Current, and deploy/flux/ exists so that Flux does not.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
import yaml
from conftest import Kubectl
from gitops import NOW, Health, built, health

from controller.model.canary import AbortReason, Stage, Verdict
from controller.model.replicas import ReplicaState
from controller.model.revisions import KnownRevision
from controller.model.states import ReplicaStatus
from controller.model.status import failure_status
from controller.model.strategy import Rollout

# Created objects are at generation 1: every status below describes that generation.
GENERATION = 1

NAME = "hello-fog"
NODE = uuid.UUID(int=1)


def replicas(count: int, *, revision: str = "r1", first: int = 1) -> list[ReplicaState]:
    return [
        ReplicaState(
            replica_id=uuid.UUID(int=1000 + seq),
            node_id=NODE,
            status=ReplicaStatus.RUNNING,
            revision=revision,
            created_seq=seq,
        )
        for seq in range(first, first + count)
    ]


# Half way through a rollout: one new replica running, two old ones.
ROLLING = [*replicas(2, revision="r0"), *replicas(1, first=3)]


def create(kubectl: Kubectl, namespace: str, replicas: int = 3) -> None:
    manifest = {
        "apiVersion": "fogcompute.io/v1alpha1",
        "kind": "FogDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "image": "app:1",
            "replicas": replicas,
            "resources": {"cpuCores": 0.5, "memoryMB": 512},
        },
    }
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


def patch_status(kubectl: Kubectl, namespace: str, status: dict[str, Any]) -> None:
    """Replace the status through /status, as the operator writes it (a merge patch)."""
    kubectl(
        "patch",
        "-n",
        namespace,
        f"fogdeploy/{NAME}",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def judged(kubectl: Kubectl, namespace: str) -> Health:
    obj = json.loads(kubectl("get", "-n", namespace, f"fogdeploy/{NAME}", "-o", "json").stdout)
    return health(obj)


@pytest.fixture
def created(kubectl: Kubectl, fogdeployment_crd: str, namespace: str) -> str:
    create(kubectl, namespace)
    return namespace


def test_a_new_object_without_status_is_current_for_kstatus_but_not_for_flux(
    kubectl: Kubectl, created: str
) -> None:
    verdict = judged(kubectl, created)
    # kstatus' rule for an object without status: the gap deploy/flux/ closes.
    assert verdict.kstatus == "Current"
    assert verdict.flux == "Unknown"
    assert "no such attribute(s): status" in verdict.flux_error
    assert verdict.argocd == "Progressing"


def test_ready_for_the_current_generation_is_current_everywhere(
    kubectl: Kubectl, created: str
) -> None:
    patch_status(kubectl, created, built(3, replicas(3), generation=GENERATION))
    assert judged(kubectl, created) == Health(
        kstatus="Current",
        flux="Current",
        argocd="Healthy",
        flux_error="",
        argocd_message="3 of 3 replicas running revision r1",
    )


def test_a_spec_change_not_yet_observed_is_in_progress(kubectl: Kubectl, created: str) -> None:
    patch_status(kubectl, created, built(3, replicas(3), generation=GENERATION))
    kubectl(
        "patch",
        "-n",
        created,
        f"fogdeploy/{NAME}",
        "--type=merge",
        "-p",
        '{"spec":{"image":"app:2"}}',
    )
    verdict = judged(kubectl, created)
    assert (verdict.kstatus, verdict.flux, verdict.argocd) == (
        "InProgress",
        "InProgress",
        "Progressing",
    )


def test_a_ready_condition_of_an_older_generation_is_not_current_for_flux(
    kubectl: Kubectl, created: str
) -> None:
    # Only a hand-written or older status says this: observedGeneration current, Ready not.
    kubectl(
        "patch", "-n", created, f"fogdeploy/{NAME}", "--type=merge", "-p", '{"spec":{"replicas":4}}'
    )
    status = {**built(3, replicas(3), generation=GENERATION), "observedGeneration": GENERATION + 1}
    patch_status(kubectl, created, status)
    verdict = judged(kubectl, created)
    # kstatus reads only Reconciling and Stalled, both False: Current. Flux and Argo CD wait.
    assert (verdict.kstatus, verdict.flux, verdict.argocd) == (
        "Current",
        "InProgress",
        "Progressing",
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            built(
                3,
                replicas(2),
                unplaced=1,
                shortfall="best remaining node offers 0.5 of 1 CPU",
                generation=GENERATION,
            ),
            ("Failed", "Failed", "Degraded"),
            id="insufficient-capacity",
        ),
        pytest.param(
            built(3, [], stalled="CrashLoopBackOff", generation=GENERATION),
            ("Failed", "Failed", "Degraded"),
            id="crash-loop",
        ),
        pytest.param(
            built(3, [*replicas(2, revision="r0"), *replicas(1, first=3)], generation=GENERATION),
            ("InProgress", "InProgress", "Progressing"),
            id="rolling-update",
        ),
        pytest.param(
            built(
                3,
                ROLLING,
                generation=GENERATION,
                rollout=Rollout(progress_deadline_seconds=60),
                previous=built(3, ROLLING, generation=GENERATION, rollout=Rollout()),
                now=NOW + timedelta(seconds=60),
            ),
            ("Failed", "Failed", "Degraded"),
            id="progress-deadline-exceeded",
        ),
        pytest.param(
            built(
                3,
                [*replicas(3, revision="r0"), *replicas(1, first=4)],
                generation=GENERATION,
                rollout=Rollout(canary_replicas=1),
                stage=Verdict(stage=Stage.CANARY_WAITING, canaries=1, canaries_available=1),
            ),
            ("InProgress", "InProgress", "Progressing"),
            id="canaries-waiting",
        ),
        pytest.param(
            built(
                3,
                replicas(3, revision="r0"),
                generation=GENERATION,
                rollout=Rollout(canary_replicas=1, auto_revert=True),
                stage=Verdict(
                    stage=Stage.ABORTED,
                    aborted_reason=AbortReason.FAILED,
                    revert_to=KnownRevision(1, "r0", True),
                ),
            ),
            ("Failed", "Failed", "Degraded"),
            id="rollout-aborted",
        ),
        pytest.param(
            built(3, ROLLING, generation=GENERATION, rollout=Rollout(paused=True)),
            ("InProgress", "InProgress", "Suspended"),
            id="paused-half-way",
        ),
        pytest.param(
            built(3, replicas(3), generation=GENERATION)
            | failure_status(
                reason="DatabaseUnavailable",
                message="connection refused; retrying in 4 s",
                stalled=False,
                generation=GENERATION,
                previous_conditions=(),
                now=NOW,
            ),
            ("InProgress", "InProgress", "Progressing"),
            id="database-unavailable",
        ),
        pytest.param(
            failure_status(
                reason="InvalidSpec",
                message="spec.resources.cpuCores: must be at most 32",
                stalled=True,
                generation=GENERATION,
                previous_conditions=(),
                now=NOW,
                desired_replicas=3,
            ),
            ("Failed", "Failed", "Degraded"),
            id="invalid-spec-on-a-new-object",
        ),
        pytest.param(
            built(0, [], generation=GENERATION),
            ("Current", "Current", "Healthy"),
            id="stopped",
        ),
        pytest.param(
            {"kopf": {"progress": {}}},
            ("Current", "InProgress", "Progressing"),
            id="only-kopf-bookkeeping",
        ),
    ],
)
def test_each_status_the_operator_writes(
    kubectl: Kubectl, created: str, status: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    patch_status(kubectl, created, status)
    verdict = judged(kubectl, created)
    assert (verdict.kstatus, verdict.flux, verdict.argocd) == expected
    assert verdict.flux_error == ""
