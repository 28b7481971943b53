"""deploy/ as `kubectl apply -k deploy/` sends it: accepted by a real API server, and hygienic.

Rendered with the pinned kubectl's kustomize and dry-run applied server-side (full schema
validation and admission, nothing stored), then checked for what kube-score and checkov asked
for: a NetworkPolicy around the operator pod, a readiness probe, ephemeral-storage requests and
limits, and the database URL as a mounted Secret file rather than an environment variable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl

from controller.sandbox import linters

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMESPACE = "fog-system"


@pytest.fixture
def rendered(kubectl: Kubectl, fogdeployment_crd: str) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind, after the API server accepted them in a dry run."""
    text = kubectl("kustomize", str(DEPLOY)).stdout
    # Namespaced objects are checked against their namespace, which a dry run does not create.
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", NAMESPACE)
    kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=text)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def operator_container(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def test_the_database_url_is_a_mounted_secret_file(rendered: dict[str, dict[str, Any]]) -> None:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    container = operator_container(rendered)
    env = {item["name"]: item for item in container["env"]}
    assert "FOG_DATABASE_URL" not in env
    assert not [item for item in container["env"] if "secretKeyRef" in item.get("valueFrom", {})]
    path = Path(env["FOG_DATABASE_URL_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "fog-controller-db"
    assert volume["secret"]["items"] == [{"key": "url", "path": path.name}]
    # 0440 with the pod's fsGroup: the non-root user reads it, nobody else does.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_probes_and_ephemeral_storage(rendered: dict[str, dict[str, Any]]) -> None:
    container = operator_container(rendered)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert f"--health-probe-bind-address=:{ports['health']}" in container["args"]
    assert f"--metrics-bind-address=:{ports['metrics']}" in container["args"]
    assert container["resources"]["requests"]["ephemeral-storage"]
    assert container["resources"]["limits"]["ephemeral-storage"]


def test_the_network_policy_fences_the_operator_pod(rendered: dict[str, dict[str, Any]]) -> None:
    policy = rendered["NetworkPolicy"]["spec"]
    template = rendered["Deployment"]["spec"]["template"]
    assert rendered["NetworkPolicy"]["metadata"]["namespace"] == NAMESPACE
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: the metrics and health ports only, the ones the container declares.
    declared = {(p["protocol"], p["containerPort"]) for p in operator_container(rendered)["ports"]}
    (ingress,) = policy["ingress"]
    assert {(p["protocol"], p["port"]) for p in ingress["ports"]} == declared
    # Egress: the API server, PostgreSQL and DNS (to kube-dns only), nothing else.
    allowed = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert allowed == {("TCP", 443), ("TCP", 6443), ("TCP", 5432), ("UDP", 53), ("TCP", 53)}
    (dns,) = [rule for rule in policy["egress"] if "to" in rule]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_two_replicas_elect_a_leader_and_migrate_first(rendered: dict[str, dict[str, Any]]) -> None:
    deployment = rendered["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "--leader-elect" in operator_container(rendered)["args"]
    pod = deployment["template"]["spec"]
    (spread,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (migrate,) = pod["initContainers"]
    assert (migrate["command"], migrate["args"]) == (["fogctl"], ["db", "upgrade"])
    assert migrate["image"] == operator_container(rendered)["image"]
    assert rendered["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    # The Lease, in the operator's namespace, and nothing more than the election needs.
    role = rendered["Role"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    assert rendered["RoleBinding"]["roleRef"]["name"] == role["metadata"]["name"]


def test_kube_score_finds_nothing_that_deploy_does_not_explain(kubectl: Kubectl) -> None:
    """Each kube-score finding on the rendered deploy/ is explained beside its setting."""
    findings = linters.kube_score(kubectl("kustomize", str(DEPLOY)).stdout)
    explained = set(
        re.findall(
            r"kube-score ([a-z-]+)",
            " ".join(path.read_text() for path in DEPLOY.glob("*.yaml")).replace("\n#", " "),
        )
    )
    unexplained = [f for f in findings if f.check not in explained]
    assert unexplained == [], unexplained
    # The ones left in place are there, so the check can fail: CPU limits, pull policy.
    assert {f.check for f in findings} == {"container-resources", "container-image-pull-policy"}
