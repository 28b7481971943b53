"""The Argo CD health check (deploy/argocd/health.lua), run in a real Lua 5.1 interpreter.

The statuses it is shown are built by the operator's own status builder (model/status.py), so
the reasons and messages are the ones the operator emits; the few that only a hand-written or
older status could show are built the same way and then altered, and say so.

The interpreter and the conversion of the object into Lua tables are in tests/gitops.py, shared
with the kube tests that assess objects read from the API server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml
from gitops import HEALTH_LUA, NOW, assess, built
from model_builders import replica

from controller.model.replicas import ReplicaState
from controller.model.status import failure_status
from controller.model.strategy import Rollout

REPO = Path(__file__).resolve().parents[2]
README = REPO / "deploy" / "argocd" / "README.md"
ARGOCD_KEY = "resource.customizations.health.fogcompute.io_FogDeployment"


def running(count: int = 3) -> list[ReplicaState]:
    return [replica(seq) for seq in range(1, count + 1)]


def condition_of(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def fog_deployment(
    *,
    generation: int = 2,
    status: dict[str, Any] | None = None,
    replicas: int = 3,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "fogcompute.io/v1alpha1",
        "kind": "FogDeployment",
        "metadata": {"name": "hello-fog", "namespace": "demo", "generation": generation},
        "spec": {
            "image": "ghcr.io/fog-controller/hello:1.0",
            "replicas": replicas,
            "resources": {"cpuCores": 0.5, "memoryMB": 512},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_healthy_when_ready_for_current_generation() -> None:
    assert assess(fog_deployment(status=built(3, running()))) == {
        "status": "Healthy",
        "message": "3 of 3 replicas running revision r1",
    }


def test_progressing_for_a_new_object_without_status() -> None:
    assert assess(fog_deployment(generation=1)) == {
        "status": "Progressing",
        "message": "Waiting for fog-controller to observe the FogDeployment",
    }


def test_progressing_while_status_lacks_observed_generation() -> None:
    health = assess(fog_deployment(status={"phase": "Pending"}))
    assert health["status"] == "Progressing"
    assert health["message"] == "Waiting for fog-controller to observe the FogDeployment"


def test_progressing_when_generation_is_ahead_even_if_ready() -> None:
    # The spec changed (generation 3) but the operator last reported on generation 2,
    # whose Ready=True says nothing about the new spec.
    assert assess(fog_deployment(generation=3, status=built(3, running()))) == {
        "status": "Progressing",
        "message": "Waiting for fog-controller to observe generation 3 (observed 2)",
    }


def test_degraded_when_stalled_with_its_message() -> None:
    shortfall = "2 of 3 replicas placed; best remaining node offers 1000m of 2000m CPU"
    status = built(3, running(2), unplaced=1, shortfall=shortfall)
    assert condition_of(status, "Stalled")["reason"] == "InsufficientCapacity"
    assert assess(fog_deployment(status=status)) == {"status": "Degraded", "message": shortfall}


def test_degraded_when_crash_looping() -> None:
    status = built(3, [], stalled="CrashLoopBackOff")
    assert status["phase"] == "Failed"
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "reconciliation stalled: CrashLoopBackOff; 0 of 3 replicas running",
    }


def test_degraded_stalled_without_message_falls_back_to_reason() -> None:
    status = built(3, running(2), unplaced=1)
    condition_of(status, "Stalled")["message"] = ""  # e.g. trimmed by a tool on the way
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "InsufficientCapacity",
    }


def test_progressing_while_rolling_out_with_reconciling_message() -> None:
    replicas = [replica(1, revision="r0"), replica(2, revision="r0"), replica(3)]
    status = built(3, replicas)
    assert condition_of(status, "Reconciling")["reason"] == "RollingUpdate"
    assert assess(fog_deployment(status=status)) == {
        "status": "Progressing",
        "message": "1 of 3 replicas on revision r1; 3 of 3 replicas running",
    }


def test_suspended_while_paused_as_argo_cd_says_of_a_paused_deployment() -> None:
    replicas = [replica(1, revision="r0"), replica(2, revision="r0"), replica(3)]
    status = built(3, replicas, rollout=Rollout(paused=True))
    assert assess(fog_deployment(status=status)) == {
        "status": "Suspended",
        "message": "the rollout is paused (spec.paused)",
    }


def test_progressing_while_the_database_is_unavailable() -> None:
    status = built(3, running())
    status.update(
        failure_status(
            reason="DatabaseUnavailable",
            message="connection refused; retrying in 4 s",
            stalled=False,
            generation=2,
            previous_conditions=status["conditions"],
            now=NOW,
        )
    )
    assert assess(fog_deployment(status=status)) == {
        "status": "Progressing",
        "message": "connection refused; retrying in 4 s",
    }


def test_degraded_for_a_new_object_with_an_invalid_spec() -> None:
    # The operator's only status for an object whose spec it refused from the start.
    status = failure_status(
        reason="InvalidSpec",
        message="spec.resources.cpuCores: must be at most 32",
        stalled=True,
        generation=1,
        previous_conditions=(),
        now=NOW,
        desired_replicas=3,
    )
    assert (status["phase"], status["ready"], status["observedGeneration"]) == ("Failed", "0/3", 1)
    assert assess(fog_deployment(generation=1, status=status)) == {
        "status": "Degraded",
        "message": "spec.resources.cpuCores: must be at most 32",
    }


def test_progressing_without_reconciling_uses_ready_message() -> None:
    status = built(3, running(2))
    status["conditions"] = [c for c in status["conditions"] if c["type"] != "Reconciling"]
    assert assess(fog_deployment(status=status)) == {
        "status": "Progressing",
        "message": "2 of 3 replicas running",
    }


def test_stale_ready_condition_is_not_healthy() -> None:
    # status.observedGeneration is current, but the Ready condition was computed for gen 1.
    status = {**built(3, running(), generation=1), "observedGeneration": 2}
    health = assess(fog_deployment(status=status))
    assert health["status"] == "Progressing"


def test_stopped_and_ready_is_healthy() -> None:
    status = built(0, [])
    assert status["phase"] == "Stopped"
    assert assess(fog_deployment(replicas=0, status=status)) == {
        "status": "Healthy",
        "message": "0 of 0 replicas running revision r1",
    }


def test_stopped_without_a_message_says_stopped() -> None:
    status = built(0, [])
    condition_of(status, "Ready")["message"] = ""
    assert assess(fog_deployment(replicas=0, status=status)) == {
        "status": "Healthy",
        "message": "FogDeployment is stopped (0 replicas)",
    }


def test_failed_phase_without_stalled_is_degraded() -> None:
    # Only a status written by hand (or by an older operator) says Failed without Stalled.
    status = built(3, [], stalled="CrashLoopBackOff")
    condition_of(status, "Stalled")["status"] = "False"
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "reconciliation stalled: CrashLoopBackOff; 0 of 3 replicas running",
    }


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"name": "x"}},
        {"metadata": {"name": "x"}, "status": {"observedGeneration": 1}},
        {
            "metadata": {"name": "x", "generation": 1},
            "status": {"observedGeneration": 1, "conditions": []},
        },
    ],
)
def test_sparse_objects_never_raise(obj: dict[str, Any]) -> None:
    assert assess(obj)["status"] == "Progressing"


def test_runtime_is_lua_51_like_argo_cd() -> None:
    assert lupa.LuaRuntime().eval("_VERSION") == "Lua 5.1"


def test_readme_snippet_is_the_same_script() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    configmaps = [yaml.safe_load(block) for block in blocks]
    snippets = [cm["data"][ARGOCD_KEY] for cm in configmaps if ARGOCD_KEY in cm.get("data", {})]
    assert snippets == [HEALTH_LUA.read_text()]
