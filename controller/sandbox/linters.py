"""kube-score, the manifest linter the tests run on the rendered deploy/ (tools/kube-score).

Users and security reviews judge deploy/ with the ecosystem's linters, so the tests do too. A
finding is acceptable only when deploy/ explains it in a comment that names the check
(`kube-score <check-id>`), beside the setting it is about.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from controller.sandbox.errors import SandboxError
from controller.sandbox.gotools import GoTool

# About 20 s to build on 2 cores with the modules downloaded; nothing once cached.
KUBE_SCORE = GoTool(
    name="kube-score",
    folder="kube-score",
    package="github.com/zegl/kube-score/cmd/kube-score",
    sources=("go.mod", "go.sum", "tools.go"),
)
# kube-score's grades: 1 critical, 5 warning, 7 almost OK, 10 OK.
ALMOST_OK = 7
# Scoring a handful of objects takes well under a second; a minute means it hung.
RUN_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Finding:
    """One check kube-score failed on one object."""

    check: str
    target: str
    summary: str


def kube_score(manifests: str) -> list[Finding]:
    """kube-score's failed checks (critical and warning) on `manifests`, a YAML stream."""
    result = subprocess.run(
        [str(KUBE_SCORE.ensure()), "score", "--output-format", "json", "-"],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    if not result.stdout.strip():  # it exits 1 when something fails, with its report
        raise SandboxError(f"kube-score failed: {result.stderr.strip()}")
    return [
        Finding(
            check=check["check"]["id"],
            target=scored["object_name"],
            summary="; ".join(sorted({c["summary"] for c in check.get("comments") or []})),
        )
        for scored in json.loads(result.stdout)
        for check in scored["checks"]
        if not check["skipped"] and check["grade"] < ALMOST_OK
    ]


if __name__ == "__main__":  # `make linters`: build it ahead of the tests
    try:
        print(f"kube-score: {KUBE_SCORE.ensure()}")
    except SandboxError as exc:
        sys.exit(f"kube-score: {exc}")
