"""A real control plane (etcd + kube-apiserver) per test session, a fresh namespace per test.

The servers are tied to the pytest process (they die with it even if it is killed), stopped
at the end of the session whatever happened, and their logs are attached to any failing test
that used them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import config

from controller.kube.client import KubeClient
from controller.sandbox import controlplane, harness
from controller.sandbox.harness import Kubectl, Stack

# Lines of each server log attached to a failed test: enough for the error and its context.
LOG_TAIL_LINES = 40
# How long an e2e expectation may take: reconciles happen within a second or two here; a
# loaded CI machine may need several times that.
E2E_TIMEOUT_SECONDS = 60.0
# The operator in end-to-end tests: production defaults (resync every 600 s, so the watch and
# the database notifications must carry every change; a test that needs another resync says
# why), with kopf's per-object log lines for the log attached to a failure.
OPERATOR_ARGS = ("-v",)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """The session's control plane."""
    with harness.control_plane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


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


@pytest.fixture(scope="session")
def kubectl(control_plane: controlplane.ControlPlane) -> Kubectl:
    """kubectl against the session's control plane."""
    return Kubectl(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def fogdeployment_crd(kubectl: Kubectl) -> str:
    """The product's CRD, installed and established once per session."""
    return harness.install_crd(kubectl)


def fresh_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace of its own, deleted (without waiting) afterwards; for fixtures of any scope."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kube(control_plane: controlplane.ControlPlane) -> AsyncIterator[KubeClient]:
    """The operator's client, on the sandbox's kubeconfig (without touching the global one)."""
    api = await config.new_client_from_config(
        config_file=control_plane.kubeconfig, persist_config=False
    )
    client = KubeClient(api)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace of the test's own, deleted (without waiting) afterwards."""
    yield from fresh_namespace(kubectl)


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
        folder=tmp_path,
        env=harness.fogctl_env(kubeconfig=control_plane.kubeconfig, database_url=database_url),
        namespaces=[namespace],
        operator_args=OPERATOR_ARGS,
    )
    try:
        yield running
    finally:
        running.stop()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = E2E_TIMEOUT_SECONDS) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    return harness.wait_for(what, probe, timeout)
