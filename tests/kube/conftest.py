"""A real control plane (etcd + kube-apiserver) per test session, a fresh namespace per test.

The servers are tied to the pytest process (they die with it even if it is killed), stopped
at the end of the session whatever happened, and their logs are attached to any failing test
that used them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

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
    plane = getattr(item, "funcargs", {}).get("control_plane")
    if report.failed and isinstance(plane, controlplane.ControlPlane):
        for name, log in plane.logs.items():
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
