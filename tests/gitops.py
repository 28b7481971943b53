"""What GitOps tools conclude from a FogDeployment, each by its own code.

- Argo CD: deploy/argocd/health.lua in a real Lua 5.1 interpreter, as Argo CD runs it;
- kstatus (sigs.k8s.io/cli-utils) and Flux's CEL health checks (deploy/flux/fog-controller.yaml
  through github.com/fluxcd/pkg/runtime/cel): the Go libraries themselves, via the small
  command controller/sandbox/verdicts.py builds.

Unit tests feed these hand-built objects; kube tests feed them objects read from the API server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa  # a hard dependency of the tests on purpose: no importorskip

from controller.model.canary import Verdict
from controller.model.replicas import ReplicaState
from controller.model.status import NO_STAGE, compute_status, status_body
from controller.model.strategy import Rollout
from controller.sandbox import verdicts

REPO = Path(__file__).resolve().parents[1]
HEALTH_LUA = REPO / "deploy" / "argocd" / "health.lua"
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def built(
    want: int,
    replicas: Sequence[ReplicaState],
    *,
    generation: int = 2,
    unplaced: int = 0,
    shortfall: str | None = None,
    stalled: str | None = None,
    rollout: Rollout | None = None,
    previous: Mapping[str, Any] | None = None,
    now: datetime = NOW,
    stage: Verdict = NO_STAGE,
) -> dict[str, Any]:
    """A `.status` exactly as the operator writes it after a reconcile (model/status.py).

    With a rollout spec it carries the Progressing condition, judged against `previous`
    (the status last written) at `now`; `stage` is model/canary.py's verdict (canaries
    waiting, a rollout aborted).
    """
    previous = previous or {}
    status = compute_status(
        generation=generation,
        desired_replicas=want,
        revision="r1",
        replicas=replicas,
        unplaced=unplaced,
        shortfall=shortfall,
        previous_conditions=previous.get("conditions") or (),
        stalled_reason=stalled,
        now=now,
        rollout=rollout,
        previous_status=previous,
        stage=stage,
    )
    return status_body(status, name="hello-fog", stage=stage)


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
    """Argo CD's health of `obj`: {"status": ..., "message": ...}.

    Argo CD evaluates custom health checks with gopher-lua, a Lua 5.1 implementation: it
    converts the live object from JSON into nested tables, binds it to the global `obj`, runs
    the script as a chunk and reads the table the chunk returns. lupa's Lua 5.1 runtime
    reproduces that here.
    """
    runtime = lupa.LuaRuntime(unpack_returned_tuples=False)
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute(HEALTH_LUA.read_text())
    assert hs is not None, "the script must return the hs table"
    result = dict(hs.items())
    assert set(result) <= {"status", "message"}
    return result


@dataclass(frozen=True, slots=True)
class Health:
    """The three verdicts on one object, in each tool's own words."""

    kstatus: str
    flux: str
    argocd: str
    flux_error: str
    argocd_message: str


def health(obj: dict[str, Any]) -> Health:
    """kstatus', Flux's and Argo CD's verdicts on `obj`."""
    go = verdicts.verdicts(obj)
    argo = assess(obj)
    return Health(
        kstatus=go.kstatus.status,
        flux=go.flux.status,
        argocd=argo["status"],
        flux_error=go.flux.error,
        argocd_message=argo["message"],
    )
