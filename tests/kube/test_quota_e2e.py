"""FogQuota end to end: kubectl -> kube-apiserver -> the operator -> PostgreSQL -> agents.

A quota stops a deployment at its limit with reason QuotaExceeded naming the resource, and
raising it places the rest without a manual step; deployments racing for the last units of one
namespace's quota, reconciled by two operators at once, never together pass it (counted in the
database); the API server refuses a broken FogQuota naming the field; every change of the
limits is in the quota history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from conftest import Kubectl, Stack, wait_for
from test_operator import get, manifest, sql, start

from controller.sandbox.harness import FogctlProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "fogquota.yaml"


def quota(name: str, **hard: float) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "fogcompute.io/v1alpha1",
            "kind": "FogQuota",
            "metadata": {"name": name},
            "spec": {"hard": hard},
        }
    )


def true_condition(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The one True condition of a FogDeployment object, once it has one."""
    conditions = (obj or {}).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["status"] == "True"), None)


def condition(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The one True condition of a FogDeployment, once it has one."""
    return true_condition(get(kubectl, namespace, name))


def quota_exceeded(kubectl: Kubectl, namespace: str, name: str, placed: int) -> Any:
    """The QuotaExceeded condition once `placed` replicas run and the rest wait."""
    obj = get(kubectl, namespace, name)
    found = true_condition(obj)
    if obj is None or found is None or found["reason"] != "QuotaExceeded":
        return None
    return found if obj["status"].get("readyReplicas") == placed else None


def namespace_usage(stack: Stack) -> tuple[int, int]:
    """(replicas holding capacity, their CPU in millicores), summed in the database."""
    ((count, cpu),) = sql(
        stack,
        "SELECT count(*), coalesce(sum(cpu_millicores), 0) FROM deployment_replicas"
        " WHERE node_id IS NOT NULL"
        " AND status IN ('pending', 'starting', 'running', 'stopping')",
    )
    return int(count), int(cpu)


def quota_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "-n", namespace, f"fogquota/{name}", "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status", {})
    return status


def test_a_quota_stops_a_deployment_at_the_limit_and_raising_it_releases_the_rest(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=3)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=quota("team-a", cpuCores=2, replicas=10))
    wait_for("the quota stored", lambda: quota_status(kubectl, namespace, "team-a").get("hard"))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=6, cpu=0.5))

    held = wait_for("4 placed, 2 held", lambda: quota_exceeded(kubectl, namespace, "web", 4))
    assert held["type"] == "Stalled"
    assert held["message"].startswith("quota team-a: cpuCores 2/2 used, 1 more requested")
    assert namespace_usage(stack) == (4, 2000)
    status = wait_for(
        "used in the quota's status",
        lambda: (
            (s := quota_status(kubectl, namespace, "team-a")).get("used", {}).get("cpuCores") == 2
            and s
        ),
    )
    assert status["hard"] == {"cpuCores": 2, "replicas": 10}
    assert status["summary"]["cpuCores"] == "2/2"
    header, line = kubectl("get", "-n", namespace, "fogquota/team-a").stdout.splitlines()
    assert header.split()[:6] == ["NAME", "CPU", "MEMORY", "GPU", "REPLICAS", "AGE"]
    assert line.split()[:3] == ["team-a", "2/2", "4/10"]  # memory and GPU unlimited: blank
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert any(e["reason"] == "QuotaExceeded" for e in json.loads(events)["items"])

    kubectl("patch", "-n", namespace, "fogquota/team-a", "--type=merge", "-p",
            '{"spec": {"hard": {"cpuCores": 3}}}')  # fmt: skip
    wait_for("all 6 placed", lambda: (c := condition(kubectl, namespace, "web")) and
             c["reason"] == "AllReplicasReady")  # fmt: skip
    assert namespace_usage(stack) == (6, 3000)

    history = sql(
        stack,
        "SELECT old_hard->>'cpu_millicores', new_hard->>'cpu_millicores', actor"
        " FROM quota_history WHERE namespace = %s AND name = 'team-a' ORDER BY changed_at",
        namespace,
    )
    assert [(old, new) for old, new, _ in history] == [(None, "2000"), ("2000", "3000")]
    assert history[-1][2] == "kubectl-patch"


def test_freeing_room_places_waiting_replicas_and_fog_deployments_admits_the_oldest(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=2)
    limits = quota("small", replicas=3, fogDeployments=2)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=limits)
    wait_for("the quota stored", lambda: quota_status(kubectl, namespace, "small").get("hard"))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("first", replicas=2))
    wait_for("first ready", lambda: (c := condition(kubectl, namespace, "first")) and
             c["reason"] == "AllReplicasReady")  # fmt: skip
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("second", replicas=2))
    held = wait_for("second held", lambda: quota_exceeded(kubectl, namespace, "second", 1))
    assert held["message"].startswith("quota small: replicas 3/3 used, 1 more requested")
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("third", replicas=1))
    third = wait_for("third held", lambda: quota_exceeded(kubectl, namespace, "third", 0))
    assert third["message"].startswith("quota small: fogDeployments 2/2 used, 1 more requested")

    # A replica stopping frees room: the waiting one is placed without a manual step.
    kubectl("scale", "-n", namespace, "fogdeploy/first", "--replicas=1")
    wait_for("second placed", lambda: (c := condition(kubectl, namespace, "second")) and
             c["reason"] == "AllReplicasReady")  # fmt: skip
    # A deployment deleted makes the third one of the two oldest.
    kubectl("delete", "-n", namespace, "fogdeploy/first", "--timeout=60s")
    wait_for("third placed", lambda: (c := condition(kubectl, namespace, "third")) and
             c["reason"] == "AllReplicasReady")  # fmt: skip
    assert namespace_usage(stack)[0] == 3


def test_deployments_racing_for_the_last_units_never_pass_the_quota(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    """Eight deployments at once, reconciled by two operators at once, for five replicas."""
    start(stack, nodes=4)
    second = FogctlProcess(stack.folder / "operator-2.log", stack.operator.args, stack.env)
    stack.extra_agents["operator-2"] = second  # stopped and its log attached with the stack
    second.start()
    kubectl("apply", "-n", namespace, "-f", "-", stdin=quota("race", replicas=5, cpuCores=2.5))
    wait_for("the quota stored", lambda: quota_status(kubectl, namespace, "race").get("hard"))
    names = [f"racer-{index}" for index in range(8)]
    documents = "---\n".join(manifest(name, replicas=2, cpu=0.5) for name in names)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=documents)

    def settled() -> bool:
        reasons = [(condition(kubectl, namespace, name) or {}).get("reason") for name in names]
        return all(reason in ("QuotaExceeded", "AllReplicasReady") for reason in reasons)

    wait_for("every racer reconciled", settled)
    count, cpu = namespace_usage(stack)
    assert (count, cpu) == (5, 2500)  # filled to the limit, and not one past it
    # No replica was placed and then taken back either: only five ever had a node.
    assert sql(stack, "SELECT count(*) FROM deployment_replicas WHERE node_id IS NOT NULL") == [
        (5,)
    ]


def test_the_api_server_refuses_a_broken_quota_naming_the_field(
    fogdeployment_crd: str, kubectl: Kubectl, namespace: str
) -> None:
    """No operator needed: the CRD's schema is the API server's to enforce."""
    for hard, field in (
        ({"gpuUnits": -1}, "spec.hard.gpuUnits"),
        ({"memoryMB": "lots"}, "spec.hard.memoryMB"),
        ({"replicas": 1.5}, "spec.hard.replicas"),
    ):
        document = yaml.safe_dump(
            {
                "apiVersion": "fogcompute.io/v1alpha1",
                "kind": "FogQuota",
                "metadata": {"name": "broken"},
                "spec": {"hard": hard},
            }
        )
        result = kubectl("apply", "-n", namespace, "-f", "-", stdin=document, check=False)
        assert result.returncode != 0
        assert field in result.stderr, result.stderr


def test_the_example_quota_is_accepted_as_written(
    fogdeployment_crd: str, kubectl: Kubectl, namespace: str
) -> None:
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLE), "-o", "json")
    accepted = json.loads(result.stdout)
    assert accepted["spec"] == yaml.safe_load(EXAMPLE.read_text())["spec"]
