"""End to end: measured usage reaches `fogctl top` and the FogDeployment's status.

The simulated agent samples each replica as soon as it runs and sends the samples through the
agent API. `fogctl top` reads them at once; the status takes them with the next reconcile that
happens anyway (here a scale-up; otherwise the resync, 600 s), never per sample.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import Kubectl, Stack, wait_for
from test_operator import get, manifest, ready, start

# The simulated agent's replicas use 10-90% of their CPU request and 30-80% of their memory,
# less or more by at most 15% and 3% per sample (controller/model/usage.py), never more than
# the request: the least share of each, per replica, is this.
REPLICAS, CPU, MEMORY = 2, 0.5, 512
LEAST_CPU, LEAST_MEMORY = 0.1 * 0.85, 0.3 * 0.97


def top_deployment(stack: Stack, namespace: str) -> dict[str, Any]:
    (row,) = json.loads(stack.fogctl("top", "deployments", "-n", namespace, "-o", "json").stdout)[
        "deployments"
    ]
    return row  # type: ignore[no-any-return]


def test_usage_shows_in_fogctl_top_and_in_status(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=1)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=REPLICAS))
    wait_for("web Ready", lambda: ready(kubectl, namespace, "web", REPLICAS))

    row = wait_for(
        "both replicas sampled",
        lambda: (row := top_deployment(stack, namespace))["sampledReplicas"] == REPLICAS and row,
    )
    assert (row["namespace"], row["name"], row["runningReplicas"]) == (namespace, "web", REPLICAS)
    assert row["requests"] == {"cpuCores": CPU * REPLICAS, "memoryMB": MEMORY * REPLICAS}
    assert LEAST_CPU * CPU * REPLICAS <= row["usage"]["cpuCores"] <= CPU * REPLICAS
    assert LEAST_MEMORY * MEMORY * REPLICAS <= row["usage"]["memoryMB"] <= MEMORY * REPLICAS

    table = stack.fogctl("top", "deployments", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAMESPACE",
        "NAME",
        "RUNNING",
        "SAMPLED",
        "CPU(cores)",
        "CPU/REQ",
        "MEMORY(MB)",
        "MEMORY/REQ",
    ]
    assert table[1].split()[:4] == [namespace, "web", str(REPLICAS), str(REPLICAS)]

    nodes = json.loads(stack.fogctl("top", "nodes", "-o", "json").stdout)["nodes"]
    assert [(n["name"], n["runningReplicas"]) for n in nodes] == [("edge-1", REPLICAS)]
    assert nodes[0]["capacity"] == {"cpuCores": 4.0, "memoryMB": 8192}
    assert 0 < nodes[0]["usage"]["cpuCores"] <= CPU * REPLICAS

    # A reconcile that happens anyway (a scale-up) writes the usage of the sampled replicas.
    kubectl("scale", "-n", namespace, "fogdeploy/web", f"--replicas={REPLICAS + 1}")
    obj = wait_for("web Ready with 3", lambda: ready(kubectl, namespace, "web", REPLICAS + 1))
    usage = obj["status"]["usage"]
    assert usage["sampledReplicas"] >= REPLICAS
    sampled = usage["sampledReplicas"]
    assert LEAST_CPU * CPU * sampled <= usage["cpuCores"] <= CPU * sampled
    assert LEAST_MEMORY * MEMORY * sampled <= usage["memoryMB"] <= MEMORY * sampled
    assert usage["sampledAt"].endswith("Z")

    # Scaled to zero, nothing runs, so nothing is in use: the figure goes with the replicas.
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=0")
    wait_for(
        "status.usage removed",
        lambda: (
            (obj := get(kubectl, namespace, "web"))
            and obj["status"].get("phase") == "Stopped"
            and "usage" not in obj["status"]
        ),
    )
