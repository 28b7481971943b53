"""A real control plane (etcd + kube-apiserver) per test session, a fresh namespace per test.

The servers are tied to the pytest process (they die with it even if it is killed), stopped
at the end of the session whatever happened, and their logs are attached to any failing test
that used them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.sandbox import binaries, controlplane

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "fogdeployment.yaml"
# Lines of each server log attached to a failed test: enough for the error and its context.
LOG_TAIL_LINES = 40
# kubectl calls against a local server return in well under a second; 60 s means "hung".
KUBECTL_TIMEOUT_SECONDS = 60

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """The session's control plane."""
    plane = controlplane.start(tmp_path_factory.mktemp("control-plane"), attached=True)
    try:
        yield plane
    finally:
        controlplane.stop(plane)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the servers' log tails to a failed test that used the control plane."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    plane = funcargs.get("control_plane")
    stack = funcargs.get("stack")
    logs = dict(plane.logs) if isinstance(plane, controlplane.ControlPlane) else {}
    if isinstance(stack, Stack):
        logs.update(stack.logs())
    if report.failed:
        for name, log in logs.items():
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append(
                    (f"{name} log (last {LOG_TAIL_LINES} lines)", "\n".join(tail))
                )
    return report


def make_kubectl(kubeconfig: str) -> Kubectl:
    """A kubectl runner bound to one kubeconfig, using the pinned kubectl binary."""
    found = binaries.ensure()
    environment = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(
        *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(found.kubectl), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    return run


@pytest.fixture(scope="session")
def kubectl(control_plane: controlplane.ControlPlane) -> Kubectl:
    """kubectl against the session's control plane."""
    return make_kubectl(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def fogdeployment_crd(kubectl: Kubectl) -> str:
    """The product's CRD, installed and established once per session."""
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/fogdeployments.fogcompute.io"
    )
    return "fogdeployments.fogcompute.io"


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace of the test's own, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


# How long an e2e expectation may take: reconciles happen within a second or two here; a
# loaded CI machine may need several times that.
E2E_TIMEOUT_SECONDS = 60.0
# kopf stops gracefully on SIGTERM within a few seconds; beyond that we kill it.
PROCESS_STOP_SECONDS = 15.0


class Service:
    """A `fogctl` process (operator or agent) run for a test, its output kept in a log."""

    def __init__(self, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.log = log
        self.args = args
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "controller.cli.main", *self.args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(PROCESS_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class Stack:
    """What one end-to-end test runs: a database, a namespace, the operator and an agent."""

    def __init__(
        self, *, kubeconfig: str, database_url: str, namespaces: list[str], folder: Path
    ) -> None:
        self.env = {**os.environ, "KUBECONFIG": kubeconfig, "FOG_DATABASE_URL": database_url}
        self.namespaces = namespaces
        self.folder = folder
        watch = [arg for ns in namespaces for arg in ("-n", ns)]
        self.operator = Service(
            folder / "operator.log", ["run", *watch, "--resync-seconds", "1", "-v"], self.env
        )
        self.agent = Service(
            folder / "agent.log",
            ["agent", "simulate", "--start-delay", "0", "--tick", "0.2"],
            self.env,
        )

    def fogctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller.cli.main", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def register_node(self, name: str, cpu: float = 4, memory: int = 8192) -> None:
        result = self.fogctl(
            "node",
            "register",
            name,
            "--cpu",
            str(cpu),
            "--memory-mb",
            str(memory),
            "--storage-gb",
            "100",
        )
        assert result.returncode == 0, result.stderr

    def logs(self) -> dict[str, Path]:
        return {"operator": self.operator.log, "agent": self.agent.log}


@pytest.fixture
def stack(
    control_plane: controlplane.ControlPlane,
    fogdeployment_crd: str,
    database_url: Any,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    """The operator (watching the test's namespace) and a simulated agent, on a fresh DB."""
    running = Stack(
        kubeconfig=control_plane.kubeconfig,
        database_url=database_url.render_as_string(hide_password=False),
        namespaces=[namespace],
        folder=tmp_path,
    )
    try:
        yield running
    finally:
        running.operator.stop()
        running.agent.stop()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = E2E_TIMEOUT_SECONDS) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
