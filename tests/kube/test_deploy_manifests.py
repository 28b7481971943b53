"""deploy/ as `kubectl apply -k deploy/` sends it: accepted by a real API server, and hygienic.

Rendered with the pinned kubectl's kustomize and dry-run applied server-side (full schema
validation and admission, nothing stored), then checked for what kube-score and checkov asked
for: a NetworkPolicy around each pod (the operator's and the agent API's), readiness probes,
ephemeral-storage requests and limits, and the database URL as a mounted Secret file rather
than an environment variable.
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
OPERATOR = "fog-controller"
AGENT_API = "fog-agent-api"

Rendered = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture
def rendered(kubectl: Kubectl, fogdeployment_crd: str) -> Rendered:
    """The rendered objects by kind and name, after the API server accepted them in a dry run."""
    text = kubectl("kustomize", str(DEPLOY)).stdout
    # Namespaced objects are checked against their namespace, which a dry run does not create.
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", NAMESPACE)
    kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=text)
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(text) if doc}


def container_of(rendered: Rendered, deployment: str = OPERATOR) -> dict[str, Any]:
    (only,) = rendered[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


@pytest.mark.parametrize("deployment", [OPERATOR, AGENT_API])
def test_the_database_url_is_a_mounted_secret_file(rendered: Rendered, deployment: str) -> None:
    pod = rendered[("Deployment", deployment)]["spec"]["template"]["spec"]
    container = container_of(rendered, deployment)
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


def test_probes_and_ephemeral_storage(rendered: Rendered) -> None:
    container = container_of(rendered)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert f"--health-probe-bind-address=:{ports['health']}" in container["args"]
    assert f"--metrics-bind-address=:{ports['metrics']}" in container["args"]
    assert container["resources"]["requests"]["ephemeral-storage"]
    assert container["resources"]["limits"]["ephemeral-storage"]


def test_the_network_policy_fences_the_operator_pod(rendered: Rendered) -> None:
    policy = rendered[("NetworkPolicy", OPERATOR)]["spec"]
    template = rendered[("Deployment", OPERATOR)]["spec"]["template"]
    assert rendered[("NetworkPolicy", OPERATOR)]["metadata"]["namespace"] == NAMESPACE
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: the metrics and health ports only, the ones the container declares.
    declared = {(p["protocol"], p["containerPort"]) for p in container_of(rendered)["ports"]}
    (ingress,) = policy["ingress"]
    assert {(p["protocol"], p["port"]) for p in ingress["ports"]} == declared
    # Egress: the API server, PostgreSQL and DNS (to kube-dns only), nothing else.
    allowed = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert allowed == {("TCP", 443), ("TCP", 6443), ("TCP", 5432), ("UDP", 53), ("TCP", 53)}
    (dns,) = [rule for rule in policy["egress"] if "to" in rule]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_two_replicas_elect_a_leader_and_migrate_first(rendered: Rendered) -> None:
    deployment = rendered[("Deployment", OPERATOR)]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "--leader-elect" in container_of(rendered)["args"]
    pod = deployment["template"]["spec"]
    (spread,) = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (migrate,) = pod["initContainers"]
    assert (migrate["command"], migrate["args"]) == (["fogctl"], ["db", "upgrade"])
    assert migrate["image"] == container_of(rendered)["image"]
    assert rendered[("PodDisruptionBudget", OPERATOR)]["spec"]["minAvailable"] == 1
    # The Lease, in the operator's namespace, and nothing more than the election needs.
    role = rendered[("Role", "fog-controller-leader-election")]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    binding = rendered[("RoleBinding", "fog-controller-leader-election")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_agent_api_serves_agents_without_kubernetes_credentials(rendered: Rendered) -> None:
    deployment = rendered[("Deployment", AGENT_API)]["spec"]
    pod = deployment["template"]["spec"]
    agents = container_of(rendered, AGENT_API)
    # The operator's image, a command of its own, and no way into the Kubernetes API.
    assert agents["image"] == container_of(rendered)["image"]
    assert (agents["command"], agents["args"][0]) == (["fogctl"], "serve-agents")
    ports = {port["name"]: port["containerPort"] for port in agents["ports"]}
    assert f"--listen=:{ports['agents']}" in agents["args"]
    assert f"--metrics-bind-address=:{ports['metrics']}" in agents["args"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    # Probes on the agents' port; two replicas kept apart and kept through a drain.
    assert agents["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "agents"}
    assert agents["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "agents"}
    assert agents["resources"]["limits"]["ephemeral-storage"]
    assert agents["securityContext"] == container_of(rendered)["securityContext"]
    assert (
        pod["securityContext"]
        == rendered[("Deployment", OPERATOR)]["spec"]["template"]["spec"]["securityContext"]
    )
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["template"]["metadata"]["labels"]
    budget = rendered[("PodDisruptionBudget", AGENT_API)]["spec"]
    assert (budget["minAvailable"], budget["selector"]["matchLabels"]) == (1, labels)
    # The Service sends agents to these pods only, on the port the server listens on.
    service = rendered[("Service", AGENT_API)]["spec"]
    assert service["selector"] == labels
    (port,) = service["ports"]
    assert port["targetPort"] == "agents"
    # Each policy selects its own pods only.
    operator_policy = rendered[("NetworkPolicy", OPERATOR)]["spec"]["podSelector"]["matchLabels"]
    assert not operator_policy.items() <= labels.items()


def test_the_network_policy_fences_the_agent_api(rendered: Rendered) -> None:
    policy = rendered[("NetworkPolicy", AGENT_API)]["spec"]
    labels = rendered[("Deployment", AGENT_API)]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"] == labels
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    # Agents from anywhere on 8443; /metrics from the monitoring namespace only.
    anywhere, monitoring = policy["ingress"]
    assert "from" not in anywhere
    assert anywhere["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert monitoring["ports"] == [{"protocol": "TCP", "port": 8080}]
    (source,) = monitoring["from"]
    assert source["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    # Egress: PostgreSQL and DNS (kube-dns only); no Kubernetes API.
    allowed = {(p["protocol"], p["port"]) for rule in policy["egress"] for p in rule["ports"]}
    assert allowed == {("TCP", 5432), ("UDP", 53), ("TCP", 53)}
    (dns,) = [rule for rule in policy["egress"] if "to" in rule]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


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
