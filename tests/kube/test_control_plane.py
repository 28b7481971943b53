"""The local control plane is a real one: readiness, version, CRDs, watches, subresources."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import yaml
from conftest import Kubectl
from kubernetes import client, config, watch

from controller.sandbox import binaries, controlplane, processes

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "fogdeployment.yaml"
# How long the server keeps the watch of the watch test open: the test's steps take seconds.
WATCH_SECONDS = 60


def test_readyz_says_ok(kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_server_and_client_report_the_pinned_version(kubectl: Kubectl) -> None:
    pinned = binaries.pinned_versions().kubernetes
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned


def test_etcd_reports_the_pinned_version(control_plane: controlplane.ControlPlane) -> None:
    found = binaries.ensure()
    output = subprocess.run(
        [str(found.etcd), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"etcd Version: {binaries.pinned_versions().etcd.lstrip('v')}" in output


def _example(name: str) -> str:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["name"] = name
    return yaml.safe_dump(manifest)


def test_custom_resource_create_watch_status_scale_delete(
    control_plane: controlplane.ControlPlane,
    kubectl: Kubectl,
    fogdeployment_crd: str,
    namespace: str,
) -> None:
    api = client.CustomObjectsApi(config.new_client_from_config(control_plane.kubeconfig))
    resource = ("fogcompute.io", "v1alpha1", namespace, "fogdeployments")
    # The watch starts from the list's resourceVersion, so it delivers every change after it
    # however late the thread's request reaches the server: no race with the apply below.
    since = api.list_namespaced_custom_object(*resource)["metadata"]["resourceVersion"]
    seen: list[tuple[str, int]] = []
    failures: list[BaseException] = []

    def watch_events() -> None:
        try:
            # The server ends the watch after WATCH_SECONDS, which bounds a watch that never
            # sees DELETED; the test's own steps take a few seconds.
            for event in watch.Watch().stream(
                api.list_namespaced_custom_object,
                *resource,
                resource_version=since,
                timeout_seconds=WATCH_SECONDS,
            ):
                seen.append((event["type"], event["object"]["spec"]["replicas"]))
                if event["type"] == "DELETED":
                    return
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()

    kubectl("apply", "-n", namespace, "-f", "-", stdin=_example("web"))
    kubectl(
        "patch",
        "-n",
        namespace,
        "fogdeploy/web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"replicas": 3, "readyReplicas": 3, "selector": "app=web"}}',
    )
    status = json.loads(kubectl("get", "-n", namespace, "fogdeploy/web", "-o", "json").stdout)
    assert status["status"]["readyReplicas"] == 3

    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=5")
    scale = json.loads(
        kubectl("get", "-n", namespace, "fogdeploy/web", "--subresource=scale", "-o", "json").stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 5
    assert scale["status"] == {"replicas": 3, "selector": "app=web"}

    kubectl("delete", "-n", namespace, "fogdeploy/web", "--wait=true", "--timeout=30s")
    watcher.join(WATCH_SECONDS + 10)
    assert not watcher.is_alive(), f"the watch never saw DELETED; it saw {seen}"
    assert failures == []
    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    assert seen[-1] == ("DELETED", 5)


def test_status_is_only_written_through_its_subresource(
    kubectl: Kubectl, fogdeployment_crd: str, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=_example("web"))
    kubectl(
        "patch",
        "-n",
        namespace,
        "fogdeploy/web",
        "--type=merge",
        "-p",
        '{"status": {"replicas": 7}}',
    )
    obj = json.loads(kubectl("get", "-n", namespace, "fogdeploy/web", "-o", "json").stdout)
    assert "replicas" not in obj.get("status", {})  # the main resource ignores status


def test_two_control_planes_side_by_side(
    tmp_path: Path, control_plane: controlplane.ControlPlane
) -> None:
    second = controlplane.start(tmp_path / "second", attached=True)
    try:
        assert second.apiserver_port != control_plane.apiserver_port
        assert second.etcd_port != control_plane.etcd_port
        other = Kubectl(second.kubeconfig)
        other("create", "namespace", "only-in-second")
        assert other("get", "--raw", "/readyz").stdout.strip() == "ok"
    finally:
        controlplane.stop(second)
    assert not processes.alive(second.apiserver_pid)
    assert not processes.alive(second.etcd_pid)
