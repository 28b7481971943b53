"""What GitOps tools conclude from a FogDeployment's status, computed by their own libraries.

The tests check status against the real kstatus library (sigs.k8s.io/cli-utils, which kpt,
Config Sync and Flux's default health checks use) and against Flux's CEL health-check reader
(github.com/fluxcd/pkg/runtime/cel) fed `deploy/flux/fog-controller.yaml`. Both are Go, so
`tools/verdicts/` is a small Go command that prints their verdicts for one object; like the
control-plane binaries (binaries.py) it is built once from the Go module proxy into the
per-user cache, under a key derived from its sources, so an edit rebuilds it and a clean clone
needs nothing but Go.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.sandbox import binaries
from controller.sandbox.errors import SandboxError
from controller.sandbox.gotools import GoTool

TOOL_DIR = binaries.TOOLS_DIR.parent / "verdicts"
FLUX_KUSTOMIZATION = TOOL_DIR.parents[1] / "deploy" / "flux" / "fog-controller.yaml"
SOURCES = ("go.mod", "go.sum", "main.go")
NAME = "fog-verdicts"
# One verdict is a process start and two library calls: well under a second. A minute means
# the command hung.
RUN_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    """One tool's conclusion: kstatus statuses (Current, InProgress, Failed, Unknown, ...)."""

    status: str
    message: str
    error: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> Verdict:
        """From the command's JSON for one tool."""
        return cls(str(data["status"]), str(data.get("message", "")), str(data.get("error", "")))


@dataclass(frozen=True, slots=True)
class Verdicts:
    """kstatus' and Flux's verdicts on one object."""

    kstatus: Verdict
    flux: Verdict


# Measured on the 2-core machine: 68 s from an empty Go build cache with the modules already
# downloaded (the Flux and cli-utils libraries pull in client-go), about 25 s when the
# control-plane build has warmed the cache, and nothing at all once it is in the cache.
TOOL = GoTool(name=NAME, folder="verdicts", package=".", sources=SOURCES)


def ensure() -> Path:
    """The built command (see TOOL)."""
    return TOOL.ensure()


def verdicts(obj: dict[str, Any], kustomization: Path = FLUX_KUSTOMIZATION) -> Verdicts:
    """Both verdicts on `obj` (an object as the API server returns it)."""
    result = subprocess.run(
        [str(ensure()), str(kustomization)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxError(result.stderr.strip() or f"{NAME} exited with {result.returncode}")
    data = json.loads(result.stdout)
    return Verdicts(kstatus=Verdict.of(data["kstatus"]), flux=Verdict.of(data["flux"]))


if __name__ == "__main__":  # `make verdicts`: build it ahead of the tests
    try:
        print(f"{NAME}: {ensure()}")
    except SandboxError as exc:
        sys.exit(f"{NAME}: {exc}")
