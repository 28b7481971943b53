"""`fogctl rollout status`, against the real API server and operator, as a CI script uses it.

kubectl's own `rollout status` refuses custom resources; ours follows a FogDeployment the same
way and exits the same way: 0 once rolled out, 1 with one line when it failed or timed out.
"""

from __future__ import annotations

import subprocess

from conftest import Kubectl, Stack
from test_operator import manifest

ROLLED_OUT = 'fogdeployment "web" successfully rolled out'


def one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fogctl: error: ")
    assert expected in lines[0], lines[0]


def test_rollout_status_waits_for_the_rollout_and_exits_like_kubectl(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    stack.register_node("edge-1", cpu=4, memory_mb=8192)
    stack.operator.start()
    one_error_line(
        stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "30s"),
        f'fogdeployments.fogcompute.io "web" in namespace {namespace} not found',
    )

    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=2))
    # No agent runs its replicas yet: the wait ends at the timeout, having said what it waits for.
    timed_out = stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "3s")
    one_error_line(timed_out, "timed out waiting for the condition")
    assert "Waiting for" in timed_out.stdout
    # --watch=false says where it stands, once, and succeeds.
    once = stack.fogctl("rollout", "status", f"{namespace}/web", "--watch=false")
    assert once.returncode == 0, once
    assert len(once.stdout.splitlines()) == 1
    assert once.stdout.startswith("Waiting for")

    stack.agent.start()
    done = stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "100s")
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[-1] == ROLLED_OUT

    # A new image rolls; the command follows it to the end.
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=2, image="app:2"))
    rolled = stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "100s")
    assert rolled.returncode == 0, rolled
    assert rolled.stdout.splitlines()[-1] == ROLLED_OUT

    # More than the node holds: the operator gives up on this generation, and so does the wait.
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=40")
    one_error_line(
        stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "100s"),
        'fogdeployment "web" is stalled: InsufficientCapacity: ',
    )
