"""`kubectl explain` on the installed CRD shows each field's description with its bounds.

The pinned kubectl against the real API server: the descriptions travel from the CRD through
the server's published OpenAPI v3 to the terminal, which is where a person reads them.
"""

from __future__ import annotations

import pytest
from conftest import Kubectl, wait_for


def explain(kubectl: Kubectl, path: str) -> str:
    """The text kubectl shows; a just-installed CRD's schema may take a moment to be published."""

    def shown() -> str | None:
        result = kubectl("explain", f"fogdeployments.{path}", check=False)
        return result.stdout if result.returncode == 0 and "<empty>" not in result.stdout else None

    text: str = wait_for(f"kubectl explain {path}", shown)
    return " ".join(text.split())  # kubectl wraps descriptions; compare words, not lines


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("spec.ports.containerPort", "Port number the container listens on, 1 to 65535."),
        ("spec.image", "1 to 500 characters"),
        ("spec.replicas", "Desired number of replicas, 0 to 100."),
        ("spec.env", "at most 64, names unique"),
        ("status.readyReplicas", "for at least spec.minReadySeconds"),
        ("spec.healthCheck", "exactly one of http, tcp and exec"),
        ("spec.healthCheck.failureThreshold", "1 to 100. Absent means 3."),
        ("spec.minReadySeconds", "0 to 86400. Absent means 0."),
        ("spec.strategy.type", "Absent means RollingUpdate."),
        ("spec.strategy.rollingUpdate.maxSurge", "0% to 100%, rounded up. Absent means 25%."),
        ("spec.progressDeadlineSeconds", "greater than minReadySeconds. Absent means 600."),
        ("spec.strategy.canary.replicas", "before the rollout waits for promotion: 1 to 100."),
        ("spec.strategy.canary.autoPromote", "Absent means false"),
        ("spec.strategy.autoRevert", "Stalled with reason RolloutAborted"),
        ("status.canary.available", "healthy for minReadySeconds"),
        ("status.conditions.lastUpdateTime", "progressDeadlineSeconds counts from it"),
        ("status.conditions.reason", "CamelCase token of 1 to 1024 characters"),
        ("status.kopf", "kopf's own bookkeeping"),
    ],
)
def test_explain_shows_the_description_and_its_bounds(
    kubectl: Kubectl, fogdeployment_crd: str, path: str, words: str
) -> None:
    assert words in explain(kubectl, path)


def test_explain_of_conditions_lists_no_field_without_a_description(
    kubectl: Kubectl, fogdeployment_crd: str
) -> None:
    text = kubectl("explain", "fogdeployments.status.conditions", "--recursive").stdout
    assert "lastTransitionTime" in text
    described = explain(kubectl, "status.conditions")
    assert "<empty>" not in described
    assert "exactly one of them True" in described
