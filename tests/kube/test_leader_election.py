"""Two operators with --leader-elect on the sandbox: one leads, one takes over, none writes twice.

Short timings (lease 4 s, renew 3 s, retry 1 s) so that a takeover takes seconds; how long it
takes at the production defaults is the benchmark's business, not asserted here.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import Kubectl, Stack, wait_for
from test_operator import manifest, ready

from controller.sandbox import processes
from controller.sandbox.harness import FogctlProcess

TIMING = (
    *("--leader-elect-lease-duration", "4"),
    *("--leader-elect-renew-deadline", "3"),
    *("--leader-elect-retry-period", "1"),
)


def candidates(stack: Stack, namespace: str) -> tuple[FogctlProcess, FogctlProcess]:
    """The stack's operator and a second one, both campaigning for one Lease in `namespace`."""
    election = ("--leader-elect", "--leader-election-namespace", namespace, *TIMING)
    stack.operator.args += list(election)
    second = FogctlProcess(stack.folder / "operator-2.log", stack.operator.args, stack.env)
    stack.extra_agents["operator-2"] = second  # stopped and its log attached with the stack
    return stack.operator, second


def leading(*operators: FogctlProcess, epoch: int) -> FogctlProcess | None:
    """The operator whose log says it leads with this fencing epoch."""
    line = f"leading with fencing epoch {epoch}"
    found = [op for op in operators if op.log.exists() and line in op.log.read_text()]
    return found[0] if len(found) == 1 else None


def holder(kubectl: Kubectl, namespace: str) -> str | None:
    lease = kubectl("get", "lease", "-n", namespace, "fog-controller", "-o", "json", check=False)
    if lease.returncode != 0:
        return None
    identity: str | None = json.loads(lease.stdout)["spec"].get("holderIdentity")
    return identity


def leased_by(operator: FogctlProcess) -> str:
    """The identity an operator's log says it leads as."""
    for line in operator.log.read_text().splitlines():
        if " leads (Lease " in line:
            return line.split("] ")[-1].split(" leads (Lease ")[0]
    raise AssertionError(f"{operator.log} never led")


def check_passes(stack: Stack, namespace: str) -> None:
    result = stack.fogctl("check", "--kube", "-n", namespace, "-o", "json")
    assert json.loads(result.stdout)["ok"], result.stdout


def start(stack: Stack, namespace: str) -> tuple[FogctlProcess, FogctlProcess]:
    """Nodes, an agent and two candidates; returns (the leader, the standby) once one leads."""
    for name in ("edge-1", "edge-2"):
        stack.register_node(name)
    first, second = candidates(stack, namespace)
    first.start()
    second.start()
    stack.agent.start()
    leader = wait_for("a leader", lambda: leading(first, second, epoch=1))
    return leader, second if leader is first else first


def web(kubectl: Kubectl, namespace: str, replicas: int, change: str = "apply") -> None:
    """Apply (or scale) `web` and wait until it is Ready with `replicas`."""
    if change == "apply":
        kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=replicas))
    else:
        kubectl("scale", "-n", namespace, "fogdeploy/web", f"--replicas={replicas}")
    wait_for(f"Ready with {replicas}", lambda: ready(kubectl, namespace, "web", replicas))


def test_one_leads_the_standby_takes_over_when_it_is_killed(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    leader, standby = start(stack, namespace)
    web(kubectl, namespace, 2)
    # The standby wrote nothing: it never led, so its store refused every write.
    assert "leading with fencing epoch" not in standby.log.read_text()

    leader.signal(signal.SIGKILL)
    wait_for("the standby leads", lambda: leading(standby, epoch=2))
    web(kubectl, namespace, 3, change="scale")  # under the new leader
    check_passes(stack, namespace)


def test_sigterm_releases_the_lease_for_a_quick_takeover(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    leader, standby = start(stack, namespace)
    leader.signal(signal.SIGTERM)
    wait_for("the leader exits", lambda: not processes.alive(leader.pid), 30)
    assert "released the Lease" in leader.log.read_text()
    wait_for("the standby leads", lambda: leading(standby, epoch=2))


def test_a_paused_leader_wakes_up_deposed_and_writes_nothing(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    leader, standby = start(stack, namespace)
    web(kubectl, namespace, 2)

    leader.signal(signal.SIGSTOP)  # a long GC pause, a frozen VM: it still believes it leads
    wait_for("the standby leads", lambda: leading(standby, epoch=2))
    web(kubectl, namespace, 4, change="scale")  # under the new leader
    leader.signal(signal.SIGCONT)  # it wakes with the old spec and a queue of stale work
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=1")
    wait_for("the old leader stops", lambda: not processes.alive(leader.pid), 60)
    log = Path(leader.log).read_text()
    assert "lost the leader election Lease" in log, log[-2000:]
    wait_for("Ready with 1", lambda: ready(kubectl, namespace, "web", 1))
    check_passes(stack, namespace)
    # The Lease is the new leader's: the old one never got it back.
    assert holder(kubectl, namespace) == leased_by(standby)
