"""Health checks end to end (issue 16 item 1): the real API server, operator, agent API and agent.

The simulated agent runs each replica's health check virtually and fails those of `sick:*`
images (`--fail-health`). One stack serves two deployments: a healthy one whose Ready waits for
`minReadySeconds` of health, and a sick one whose replica is replaced and whose history shows
why.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from conftest import Kubectl, Stack, wait_for
from test_operator import get, manifest, sql

# Long enough that the Ready transition is seconds after the replicas turned healthy, so the
# assertion below could not hold by accident; short, as the test waits for it.
MIN_READY_SECONDS = 4
# Checks every second, unhealthy at the first failure: the sick replica is judged at once.
CHECK = {"tcp": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}


def checked(name: str, *, image: str, min_ready: int = 0) -> str:
    """Two replicas under CHECK, ready after `min_ready` seconds healthy."""
    return manifest(name, 2, image, storage_gb=None, healthCheck=CHECK, minReadySeconds=min_ready)


def ready_since(kubectl: Kubectl, namespace: str, name: str) -> datetime | None:
    """When the object's Ready condition turned True for its generation, with 2 ready."""
    obj = get(kubectl, namespace, name)
    status = (obj or {}).get("status", {})
    ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready", {})
    if ready.get("status") != "True" or status.get("readyReplicas") != 2:
        return None
    return datetime.fromisoformat(ready["lastTransitionTime"].replace("Z", "+00:00"))


def history(stack: Stack, namespace: str, name: str) -> list[dict[str, Any]]:
    result = stack.fogctl("history", f"{namespace}/{name}", "-o", "json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["history"])


def test_health_gates_ready_and_an_unhealthy_replica_is_replaced(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    stack.register_node("edge-1", cpu=8, memory_mb=16384)
    stack.agent.args += ["--fail-health", "sick:*"]
    stack.operator.start()
    stack.agent.start()
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=checked("good", image="app:1", min_ready=MIN_READY_SECONDS),
    )
    kubectl("apply", "-n", namespace, "-f", "-", stdin=checked("sick", image="sick:1"))

    # Ready only once both replicas have been healthy for minReadySeconds. Nothing is written
    # at that moment: the reconcile's own requeue brings it (the resync is 600 s away).
    became_ready = wait_for("good Ready", lambda: ready_since(kubectl, namespace, "good"))
    ((healthy_at, healthy),) = sql(
        stack,
        "SELECT max(r.health_since), bool_and(r.health = 'healthy') FROM deployment_replicas r"
        " JOIN deployments d ON d.id = r.deployment_id WHERE d.name = 'good'",
    )
    assert healthy
    # The condition's time is written to the second.
    assert became_ready >= (healthy_at + timedelta(seconds=MIN_READY_SECONDS)).replace(
        microsecond=0
    )

    # The sick deployment's replicas run, are reported unhealthy, and are stopped as
    # Unhealthy (a failure for the backoff) and replaced.
    def replaced() -> list[dict[str, Any]] | None:
        story = history(stack, namespace, "sick")
        stopped = {e["replica"] for e in story if e["new_status"] == "stopping"}
        return story if stopped and any(e["replica"] == "sick-2" for e in story) else None

    story = wait_for("a sick replica replaced", replaced)
    first = [e for e in story if e["replica"] == "sick-0"]
    steps = [(e["old_status"], e["new_status"], e["new_health"]) for e in first]
    judged_at = steps.index(("running", "running", "unhealthy"))
    assert steps[judged_at - 1 : judged_at + 2] == [
        ("starting", "running", None),
        ("running", "running", "unhealthy"),
        ("running", "stopping", "unhealthy"),
    ]
    judged, stopped = first[judged_at], first[judged_at + 1]
    assert (judged["actor"], judged["reason"]) == (
        "agent:edge-1",
        "tcp check failed 1 times in a row",
    )
    assert (stopped["actor"], stopped["reason"]) == ("operator", "Unhealthy")
    ((failures,),) = sql(stack, "SELECT consecutive_failures FROM deployments WHERE name = 'sick'")
    assert failures >= 1
    table = stack.fogctl("history", f"{namespace}/sick").stdout
    assert any(
        "sick-0" in line and "- -> unhealthy" in line and "tcp check failed" in line
        for line in table.splitlines()
    ), table
