"""The Argo CD health check (deploy/argocd/health.lua), run in a real Lua 5.1 interpreter.

Argo CD evaluates custom health checks with gopher-lua, a Lua 5.1 implementation: it converts
the live object from JSON into nested tables, binds it to the global `obj`, runs the script as a
chunk and reads the table the chunk returns. lupa's Lua 5.1 runtime reproduces that here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa  # a hard dependency of this test on purpose: no importorskip
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"
README = REPO / "deploy" / "argocd" / "README.md"
ARGOCD_KEY = "resource.customizations.health.fogcompute.io_FogDeployment"
T0 = "2025-01-01T00:00:00Z"


def _to_lua(runtime: Any, value: Any) -> Any:
    """Convert JSON-like Python data to Lua values the way Argo CD does (1-based arrays)."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            table[key] = _to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(runtime, item)
        return table
    return value


def assess(obj: dict[str, Any]) -> dict[str, Any]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=False)
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute(HEALTH_LUA.read_text())
    assert hs is not None, "the script must return the hs table"
    result = dict(hs.items())
    assert set(result) <= {"status", "message"}
    return result


def condition(
    type_: str, status: str, reason: str, message: str, observed_generation: int = 2
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": observed_generation,
        "lastTransitionTime": T0,
        "reason": reason,
        "message": message,
    }


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


def running_status(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 2,
        "phase": "Running",
        "replicas": 3,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "ready": "3/3",
        "conditions": [
            condition("Ready", "True", "ReplicasReady", "3/3 replicas ready"),
            condition("Reconciling", "False", "ReconcileSucceeded", "Up to date"),
            condition("Stalled", "False", "ReconcileSucceeded", "Up to date"),
        ],
    }
    status.update(overrides)
    return status


def test_healthy_when_ready_for_current_generation() -> None:
    assert assess(fog_deployment(status=running_status())) == {
        "status": "Healthy",
        "message": "3/3 replicas ready",
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
    assert assess(fog_deployment(generation=3, status=running_status())) == {
        "status": "Progressing",
        "message": "Waiting for fog-controller to observe generation 3 (observed 2)",
    }


def test_degraded_when_stalled_with_its_message() -> None:
    status = running_status(
        phase="Pending",
        readyReplicas=0,
        ready="0/3",
        conditions=[
            condition("Ready", "False", "Unschedulable", "0/3 replicas ready"),
            condition("Reconciling", "False", "Unschedulable", "Not progressing"),
            condition(
                "Stalled",
                "True",
                "Unschedulable",
                "no fog node has 32 free CPU cores for replica 1",
            ),
        ],
    )
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "no fog node has 32 free CPU cores for replica 1",
    }


def test_degraded_stalled_without_message_falls_back_to_reason() -> None:
    status = running_status(conditions=[condition("Stalled", "True", "ImageRejected", "")])
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "ImageRejected",
    }


def test_progressing_while_rolling_out_with_reconciling_message() -> None:
    status = running_status(
        readyReplicas=2,
        updatedReplicas=1,
        ready="2/3",
        conditions=[
            condition("Ready", "False", "RollingOut", "2/3 replicas ready"),
            condition(
                "Reconciling", "True", "RollingOut", "Rolling out revision 5d41402a: 1/3 updated"
            ),
            condition("Stalled", "False", "RollingOut", "Progressing"),
        ],
    )
    assert assess(fog_deployment(status=status)) == {
        "status": "Progressing",
        "message": "Rolling out revision 5d41402a: 1/3 updated",
    }


def test_progressing_without_reconciling_uses_ready_message() -> None:
    status = running_status(
        conditions=[condition("Ready", "Unknown", "Placing", "placing 3 replicas")]
    )
    assert assess(fog_deployment(status=status)) == {
        "status": "Progressing",
        "message": "placing 3 replicas",
    }


def test_stale_ready_condition_is_not_healthy() -> None:
    # status.observedGeneration is current, but the Ready condition was computed for gen 1.
    status = running_status(
        conditions=[condition("Ready", "True", "ReplicasReady", "3/3", observed_generation=1)]
    )
    health = assess(fog_deployment(status=status))
    assert health["status"] == "Progressing"


def test_stopped_and_ready_is_healthy() -> None:
    status = running_status(
        phase="Stopped",
        replicas=0,
        readyReplicas=0,
        updatedReplicas=0,
        ready="0/0",
        conditions=[condition("Ready", "True", "Stopped", "")],
    )
    assert assess(fog_deployment(replicas=0, status=status)) == {
        "status": "Healthy",
        "message": "FogDeployment is stopped (0 replicas)",
    }


def test_failed_phase_without_stalled_is_degraded() -> None:
    status = running_status(
        phase="Failed",
        conditions=[condition("Ready", "False", "ReplicasFailed", "3/3 replicas failed")],
    )
    assert assess(fog_deployment(status=status)) == {
        "status": "Degraded",
        "message": "3/3 replicas failed",
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
