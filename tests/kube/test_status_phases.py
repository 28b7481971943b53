"""One FogDeployment through every phase, judged at each step as GitOps tools and people judge it.

The sandbox runs the real stack: kube-apiserver, the operator (`fogctl run`), PostgreSQL and a
simulated agent whose replicas of `bad:*` images fail. At each step the object is read back
from the API server and checked for:

- the verdict of the real kstatus library, of Flux's CEL health check (deploy/flux/) and of the
  Argo CD health check (deploy/argocd/health.lua), all through tests/gitops.py;
- the printer columns as `kubectl get` prints them;
- the condition message;
- the events the step posted.

Steps: apply (with the operator down, then up), Ready, scale, insufficient capacity, a spec
change while the operator is stopped, a crash loop, the crash loop fixed by a new image, an
invalid spec, scale to zero, delete.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

from conftest import Kubectl, Stack, wait_for
from gitops import health
from test_operator import get, manifest, sql

NAME = "web"
# Three nodes of 8 CPU and plenty of memory and storage: CPU alone limits placement, at
# 16 replicas of 0.5 CPU per node, 48 in all.
NODES = ("edge-1", "edge-2", "edge-3")
NODE_CPU = 8
NODE_MEMORY_MB = 65536
CAPACITY = 48
# A rollout takes 25% of the desired count out of service and surges 25% at a time: at 20
# replicas, 10 replicas of a bad image start at once, more than the restart policy's failure
# limit (5), so the crash loop is reported after one round of failures rather than after a
# minute of backoff.
REPLICAS = 20
CPU_MAX = 32  # the CRD's and the seed's spec.resources.cpuCores maximum
# The printer columns written from the status (IMAGE and AGE come from the object itself).
STATUS_COLUMNS = ("READY", "UP-TO-DATE", "PHASE")


def patch_spec(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Change the spec as a person does (a merge patch), not through a whole manifest."""
    return kubectl(
        "patch",
        "-n",
        namespace,
        f"fogdeploy/{NAME}",
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        check=check,
    )


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def true_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The one True condition (Ready, Reconciling or Stalled), if the status is current."""
    generation = obj["metadata"]["generation"]
    if obj.get("status", {}).get("observedGeneration") != generation:
        return None
    kstatus = ("Ready", "Reconciling", "Stalled")  # Progressing is a Deployment's, apart
    found = [c for c in conditions(obj).values() if c["type"] in kstatus and c["status"] == "True"]
    return found[0] if len(found) == 1 and found[0]["observedGeneration"] == generation else None


def columns(kubectl: Kubectl, namespace: str, *names: str) -> tuple[str, ...]:
    """The cells under `names` in the row `kubectl get fogdeploy NAME` prints ("" if empty)."""
    header, row = kubectl("get", "-n", namespace, f"fogdeploy/{NAME}").stdout.splitlines()
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    cells = {
        header[start:end].strip(): row[start:end].strip()
        for start, end in zip(starts, [*starts[1:], None], strict=True)
    }
    return tuple(cells[name] for name in names)


class Events:
    """The object's events, and which of them a step posted (new, or counted again)."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.seen: dict[str, int] = {}

    def _current(self) -> dict[str, dict[str, Any]]:
        listed = self.kubectl("get", "events", "-n", self.namespace, "-o", "json").stdout
        return {
            item["metadata"]["name"]: item
            for item in json.loads(listed)["items"]
            if item["involvedObject"].get("name") == NAME
            and item["involvedObject"].get("kind") == "FogDeployment"
        }

    def posted(self, *expected: tuple[str, str]) -> dict[str, dict[str, Any]]:
        """Wait until events of each (type, reason) were posted since the last step's.

        Returns them by reason, and marks everything so far as seen.
        """

        def fresh() -> dict[str, dict[str, Any]]:
            return {
                item["reason"]: item
                for key, item in self._current().items()
                if (item.get("count") or 1) > self.seen.get(key, 0)
            }

        def arrived() -> dict[str, dict[str, Any]] | None:
            new = fresh()
            found = {(item["type"], reason) for reason, item in new.items()}
            return new if set(expected) <= found else None

        new: dict[str, dict[str, Any]] = wait_for(f"events {expected}", arrived)
        self.seen = {key: item.get("count") or 1 for key, item in self._current().items()}
        return new


def reach(
    kubectl: Kubectl, namespace: str, what: str, test: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The object once `test` holds for it."""

    def probe() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, NAME)
        return obj if obj is not None and test(obj) else None

    found: dict[str, Any] = wait_for(what, probe)
    return found


def verdict_of(
    kubectl: Kubectl, namespace: str, type_: str, reason: str, **status: Any
) -> dict[str, Any]:
    """The object once its current status has `type_`=True with `reason` (and `status`)."""

    def holds(obj: dict[str, Any]) -> bool:
        condition = true_condition(obj)
        return (
            condition is not None
            and (condition["type"], condition["reason"]) == (type_, reason)
            and all(obj["status"].get(key) == value for key, value in status.items())
        )

    return reach(kubectl, namespace, f"{type_}={reason} {status}", holds)


def judged(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(kstatus, Flux, Argo CD) on the object."""
    verdict = health(obj)
    return verdict.kstatus, verdict.flux, verdict.argocd


def set_cpu_past_the_crd(kubectl: Kubectl, namespace: str, cpu: float) -> None:
    """Store a spec the operator must refuse, as an object kept from a looser, older CRD is.

    The API server enforces the same limit as the operator, so for a moment the CRD allows
    more; it is put back at once, and the stored object keeps its now-invalid value (the API
    server's validation ratcheting accepts later updates that leave that field alone).
    """
    path = (
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/resources"
        "/properties/cpuCores/maximum"
    )

    def limit(value: float) -> None:
        patch = [{"op": "replace", "path": path, "value": value}]
        kubectl(
            "patch", "crd", "fogdeployments.fogcompute.io", "--type=json", "-p", json.dumps(patch)
        )

    limit(cpu)
    try:
        # The new schema takes effect for writes within a moment; retried until it has.
        wait_for(
            "the looser CRD in force",
            lambda: (
                patch_spec(
                    kubectl, namespace, {"resources": {"cpuCores": cpu}}, check=False
                ).returncode
                == 0
            ),
        )
    finally:
        limit(CPU_MAX)


def test_one_fogdeployment_through_every_phase(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    for node in NODES:
        stack.register_node(node, cpu=NODE_CPU, memory_mb=NODE_MEMORY_MB)
    stack.agent.args += ["--fail-image", "bad:*"]
    stack.agent.start()
    events = Events(kubectl, namespace)

    # 1. Applied while no operator runs: no status at all. kstatus calls that Current; Flux
    #    (with deploy/flux/) and Argo CD do not call it healthy.
    kubectl("apply", "-f", "-", stdin=manifest(NAME, 4, namespace=namespace))
    new = get(kubectl, namespace, NAME)
    assert new is not None
    assert "status" not in new
    assert judged(new) == ("Current", "Unknown", "Progressing")
    assert health(new).flux_error.endswith("no such attribute(s): status.observedGeneration")
    assert columns(kubectl, namespace, "NAME", "READY", "UP-TO-DATE", "PHASE", "IMAGE") == (
        NAME,
        "",
        "",
        "",
        "app:1",
    )

    # 2. The operator starts: Ready.
    stack.operator.start()
    ready = verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", readyReplicas=4)
    assert judged(ready) == ("Current", "Current", "Healthy")
    revision = ready["status"]["revision"]
    assert true_condition(ready)["message"] == f"4 of 4 replicas running revision {revision}"
    assert columns(kubectl, namespace, *STATUS_COLUMNS) == ("4/4", "4", "Running")
    posted = events.posted(("Normal", "Ready"))
    assert posted["Ready"]["message"] == "4 replicas running"
    assert "ScaledUp" not in posted  # creating an object is no scaling event (issue 15)

    # 3. Scaled up.
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", f"--replicas={REPLICAS}")
    scaled = verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", readyReplicas=REPLICAS)
    assert judged(scaled) == ("Current", "Current", "Healthy")
    assert columns(kubectl, namespace, *STATUS_COLUMNS) == ("20/20", "20", "Running")
    assert events.posted(("Normal", "ScaledUp"))["ScaledUp"]["message"] == "created 16 replicas"

    # 4. More than the nodes hold: Stalled, and the message says what is short where.
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", f"--replicas={CAPACITY + 2}")
    short = verdict_of(
        kubectl,
        namespace,
        "Stalled",
        "InsufficientCapacity",
        unplacedReplicas=2,
        readyReplicas=CAPACITY,
    )
    assert judged(short) == ("Failed", "Failed", "Degraded")
    message = true_condition(short)["message"]
    assert f"{CAPACITY} of {CAPACITY + 2} replicas placed" in message
    assert message.endswith("is short of 0.5 CPU")
    assert columns(kubectl, namespace, "READY", "PHASE") == (
        f"{CAPACITY}/{CAPACITY + 2}",
        "Pending",
    )
    assert (
        events.posted(("Warning", "InsufficientCapacity"))["InsufficientCapacity"]["message"]
        == message
    )
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", f"--replicas={REPLICAS}")
    verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", readyReplicas=REPLICAS)
    assert events.posted(("Normal", "ScaledDown"))["ScaledDown"]["message"] == (
        "stopping 30 replicas"
    )

    # 5. The spec changes while the operator is stopped: the status describes the old
    #    generation, so every tool waits; the row shows the new image beside the old status.
    stack.operator.stop()
    patch_spec(kubectl, namespace, {"image": "app:2"})
    stale = get(kubectl, namespace, NAME)
    assert stale is not None
    assert stale["status"]["observedGeneration"] < stale["metadata"]["generation"]
    assert judged(stale) == ("InProgress", "InProgress", "Progressing")
    assert columns(kubectl, namespace, *STATUS_COLUMNS, "IMAGE") == (
        "20/20",
        "20",
        "Running",
        "app:2",
    )
    stack.operator.start()
    rolled = verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", updatedReplicas=20)
    assert rolled["status"]["revision"] != revision
    assert judged(rolled) == ("Current", "Current", "Healthy")
    # With 25% of 20 both unavailable and surging, a wave stops at most 5 + 5 old replicas;
    # how many a later wave takes depends on how fast the agent reports the previous one ready
    # (the event shows the latest wave).
    wave = events.posted(("Normal", "RollingUpdate"))["RollingUpdate"]["message"]
    found = re.fullmatch(r"replacing (\d+) replicas? with revision (\w+)", wave)
    assert found is not None, wave
    assert 1 <= int(found.group(1)) <= 10
    assert found.group(2) == rolled["status"]["revision"]

    # 6. A bad image: its replicas fail, the crash loop is reported, the old ones keep running.
    patch_spec(kubectl, namespace, {"image": "bad:1"})
    crashing = verdict_of(kubectl, namespace, "Stalled", "CrashLoopBackOff", phase="Failed")
    assert judged(crashing) == ("Failed", "Failed", "Degraded")
    assert true_condition(crashing)["message"].startswith(
        "reconciliation stalled: CrashLoopBackOff; "
    )
    assert columns(kubectl, namespace, "PHASE", "IMAGE") == ("Failed", "bad:1")
    events.posted(("Warning", "CrashLoopBackOff"))

    # 7. Fixed by a new image: a clean slate. At the new generation the object never reads
    #    Failed, and it is Ready once its replicas run.
    patch_spec(kubectl, namespace, {"image": "app:3"})
    fixed_generation = crashing["metadata"]["generation"] + 1
    seen_at_new_generation: set[tuple[str, str]] = set()

    def fixed(obj: dict[str, Any]) -> bool:
        condition = true_condition(obj)
        if condition is not None and obj["metadata"]["generation"] == fixed_generation:
            seen_at_new_generation.add((condition["type"], condition["reason"]))
            seen_at_new_generation.add(("phase", obj["status"].get("phase", "")))
        return (
            condition is not None
            and condition["type"] == "Ready"
            and obj["status"].get("updatedReplicas") == REPLICAS
        )

    fixed_obj = reach(kubectl, namespace, "the fixed image Ready", fixed)
    assert fixed_obj["metadata"]["generation"] == fixed_generation
    assert ("phase", "Failed") not in seen_at_new_generation
    assert not [seen for seen in seen_at_new_generation if seen[0] == "Stalled"]
    assert judged(fixed_obj) == ("Current", "Current", "Healthy")
    assert columns(kubectl, namespace, *STATUS_COLUMNS, "IMAGE") == (
        "20/20",
        "20",
        "Running",
        "app:3",
    )
    events.posted(("Normal", "RollingUpdate"), ("Normal", "Ready"))

    # 8. A spec the operator must refuse (stored past the API server): Stalled InvalidSpec,
    #    with a phase and the field named as the manifest spells it.
    set_cpu_past_the_crd(kubectl, namespace, CPU_MAX + 8)
    invalid = verdict_of(kubectl, namespace, "Stalled", "InvalidSpec")
    assert judged(invalid) == ("Failed", "Failed", "Degraded")
    assert true_condition(invalid)["message"] == (
        f"spec.resources.cpuCores: must be at most {CPU_MAX}"
    )
    assert columns(kubectl, namespace, "PHASE") == ("Failed",)
    assert events.posted(("Warning", "InvalidSpec"))["InvalidSpec"]["message"] == (
        f"spec.resources.cpuCores: must be at most {CPU_MAX}"
    )
    patch_spec(kubectl, namespace, {"resources": {"cpuCores": 0.5}})
    repaired = verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", readyReplicas=REPLICAS)
    assert judged(repaired) == ("Current", "Current", "Healthy")

    # 9. Scaled to zero: Stopped, and that is healthy.
    kubectl("scale", "-n", namespace, f"fogdeploy/{NAME}", "--replicas=0")
    stopped = verdict_of(kubectl, namespace, "Ready", "AllReplicasReady", phase="Stopped")
    assert judged(stopped) == ("Current", "Current", "Healthy")
    assert columns(kubectl, namespace, *STATUS_COLUMNS) == ("0/0", "0", "Stopped")
    assert events.posted(("Normal", "ScaledDown"))["ScaledDown"]["message"] == (
        f"stopping {REPLICAS} replicas"
    )

    # 10. Deleted: the finalizer lets go once the row is soft-deleted; history stays.
    kubectl("delete", "-n", namespace, f"fogdeploy/{NAME}", "--wait=true", "--timeout=60s")
    assert get(kubectl, namespace, NAME) is None
    assert sql(stack, "SELECT deleted_at IS NOT NULL FROM deployments WHERE name = %s", NAME) == [
        (True,)
    ]
