"""deploy/'s RBAC, proven with the operator's own identity: it is enough, and it is no more.

The ServiceAccount and its roles are applied from deploy/rbac.yaml to the sandbox; `kubectl
create token` mints a token for that account; the operator runs with a kubeconfig holding only
that token (and --leader-elect, so the Lease Role is exercised too). A FogDeployment must reach
Ready with no 403 anywhere in the operator's log, and `kubectl auth can-i` as that account must
show that it cannot read Secrets or change what it has no business changing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl, Stack, wait_for
from test_operator import manifest, ready

from controller.sandbox import harness

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMESPACE = "fog-system"  # where deploy/ puts the ServiceAccount and the Lease Role
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:fog-controller"


@pytest.fixture
def operator_kubeconfig(kubectl: Kubectl, tmp_path: Path) -> Path:
    """A kubeconfig whose only credential is a token of deploy/'s ServiceAccount."""
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", NAMESPACE)
    kubectl("apply", "-f", str(DEPLOY / "rbac.yaml"))
    token = kubectl("create", "token", "fog-controller", "-n", NAMESPACE).stdout.strip()
    admin: dict[str, Any] = yaml.safe_load(Path(kubectl.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "fog-controller", "user": {"token": token}}],
        "contexts": [
            {
                "name": "fog-controller",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "fog-controller"},
            }
        ],
        "current-context": "fog-controller",
    }
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def can_i(kubectl: Kubectl, *what: str) -> bool:
    result = kubectl("auth", "can-i", *what, "--as", ACCOUNT, check=False)
    return result.stdout.strip() == "yes"


def test_the_operator_works_with_its_own_account_and_nothing_more(
    stack: Stack, kubectl: Kubectl, namespace: str, operator_kubeconfig: Path
) -> None:
    for name in ("edge-1", "edge-2"):
        stack.register_node(name)
    stack.operator.env = {**stack.operator.env, "KUBECONFIG": str(operator_kubeconfig)}
    stack.operator.args += ["--leader-elect", "--leader-election-namespace", NAMESPACE]
    stack.operator.args += ["--leader-election-id", f"fog-rbac-{namespace}"]
    stack.operator.start()
    stack.agent.start()
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=2))
    wait_for("Ready with 2 as itself", lambda: ready(kubectl, namespace, "web", 2))
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=1")
    wait_for("Ready with 1", lambda: ready(kubectl, namespace, "web", 1))
    kubectl("delete", "-n", namespace, "fogdeploy/web", "--timeout=60s")  # the finalizer too
    log = stack.operator.log.read_text()
    assert "leading with fencing epoch 1" in log  # the Lease Role was enough
    # A refused API call reads "(403)" or "403 Forbidden"; a bare 403 is also a timestamp's
    # milliseconds (",403]").
    assert re.search(r"\(403\)|\b403 Forbidden|status.?[:=]\s*403\b", log) is None
    assert "Forbidden" not in log
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert "Ready" in {event["reason"] for event in events["items"]}  # posted as itself

    # What it needs, and no more.
    assert can_i(kubectl, "patch", "fogdeployments.fogcompute.io/status", "-n", namespace)
    assert can_i(kubectl, "watch", "fogquotas.fogcompute.io", "-n", namespace)
    assert can_i(kubectl, "patch", "fogquotas.fogcompute.io/status", "-n", namespace)
    assert not can_i(kubectl, "update", "fogquotas.fogcompute.io", "-n", namespace)
    assert can_i(kubectl, "update", "leases.coordination.k8s.io", "-n", NAMESPACE)
    assert not can_i(kubectl, "get", "secrets", "-n", NAMESPACE)
    assert not can_i(kubectl, "list", "secrets", "--all-namespaces")
    assert not can_i(kubectl, "create", "fogdeployments.fogcompute.io", "-n", namespace)
    assert not can_i(kubectl, "update", "fogdeployments.fogcompute.io", "-n", namespace)
    assert not can_i(kubectl, "update", "leases.coordination.k8s.io", "-n", namespace)
    assert not can_i(kubectl, "create", "pods", "-n", namespace)
    assert not can_i(kubectl, "delete", "events", "-n", namespace)
    listed = kubectl("auth", "can-i", "--list", "--as", ACCOUNT, "-n", namespace).stdout
    assert "secrets" not in listed
    assert harness.fogctl(stack.env, "check", "--kube", "-n", namespace).returncode == 0
