"""Kubernetes itself, measured beside us: the burst as Deployments, placed by its own controllers.

A platform team choosing us over plain Kubernetes compares what each does with the same
request. This scenario runs the burst of bench/scenarios.py (the same nodes, sizes, counts and
client code) against kube-controller-manager's deployment and replicaset controllers and
kube-scheduler, built from the same module pins as our control plane, on fake nodes (Node
objects with capacity and a Ready condition; nothing runs the pods, as nothing runs our
replicas but a simulated agent). It reports pods bound per second, against our replicas placed
per second, and the CPU seconds of every process taking part.

Every run gets a control plane of its own, so that neither side's leftovers weigh on the
other. The controllers' clients get a rate limit no burst reaches (Kubernetes' defaults, 20
and 50 requests per second, would measure the limiter, not the controllers): the issue asks
how fast Kubernetes is, not how it is throttled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cpu import Meter, Process, cpu_summary
from kubernetes_asyncio import client, config
from report import summary
from runs import create_each, manifest, node_name
from scenarios import Sizes

from controller.sandbox import binaries, controlplane, ports, processes
from controller.sandbox.controlplane import ControlPlane
from controller.sandbox.errors import SandboxError
from controller.sandbox.harness import Servers

# Far above what two cores can ask for: no client-side throttling (see the module docstring).
CLIENT_QPS = 100_000
# kube-scheduler's readiness includes its informers' first sync; 120 s bounds a broken start.
READY_LIMIT_SECONDS = 120.0
READY_POLL_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 2.0
# A watch is re-opened after this long; the burst binds in about a minute.
WATCH_SECONDS = 300
# Bounds a run that never binds everything; not a target.
BIND_LIMIT_SECONDS = 900
# The creates' concurrency, as in the burst (bench/scenarios.py).
CREATE_CONCURRENCY = 16
# Pods a kubelet admits by default; the burst puts 20 on each node.
PODS_PER_NODE = "110"
# A fog node's storage in the burst is 1,000 GB; pods ask for ephemeral storage instead.
NODE_STORAGE = "1000Gi"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    """The burst's FogDeployment `name` as an apps/v1 Deployment asking the same resources."""
    resources = manifest(name, replicas)["spec"]["resources"]
    requests = {
        "cpu": f"{round(resources['cpuCores'] * 1000)}m",
        "memory": f"{resources['memoryMB']}Mi",
        "ephemeral-storage": f"{resources['storageGB']}Gi",
    }
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "bench:1", "resources": {"requests": requests}}
                    ]
                },
            },
        },
    }


def fake_node(name: str, *, cpu: float, memory_mb: int) -> dict[str, Any]:
    """A Node as a kubelet would report it, Ready, with the burst's fog node capacity."""
    capacity = {
        "cpu": str(cpu),
        "memory": f"{memory_mb}Mi",
        "ephemeral-storage": NODE_STORAGE,
        "pods": PODS_PER_NODE,
    }
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready]},
    }


@dataclass(frozen=True)
class Controllers:
    """kube-controller-manager and kube-scheduler running against one control plane."""

    manager: int
    scheduler: int


def _scheduler_config(folder: Path, kubeconfig: str) -> Path:
    path = folder / "kube-scheduler.yaml"
    body = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig, "qps": CLIENT_QPS, "burst": CLIENT_QPS},
        "leaderElection": {"leaderElect": False},
    }
    path.write_text(yaml.safe_dump(body))
    return path


def _healthy(url: str) -> bool:
    # Their serving certificates are self-signed and the paths are open to anonymous callers
    # (--authorization-always-allow-paths' default): nothing to verify on loopback.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=PROBE_TIMEOUT_SECONDS) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


async def _until_healthy(urls: dict[str, str], pids: dict[str, int], logs: Path) -> None:
    deadline = time.monotonic() + READY_LIMIT_SECONDS
    waiting = dict(urls)
    while waiting:
        for name, url in list(waiting.items()):
            if _healthy(url):
                del waiting[name]
            elif not processes.alive(pids[name]):
                raise SandboxError(f"{name} exited at start; see {logs / (name + '.log')}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{', '.join(waiting)} not ready after {READY_LIMIT_SECONDS} s")
        await asyncio.sleep(READY_POLL_SECONDS)


@contextlib.asynccontextmanager
async def controllers(plane: ControlPlane) -> AsyncIterator[Controllers]:
    """Start Kubernetes' deployment and replicaset controllers and its scheduler; stop them.

    Their worker counts stay at Kubernetes' defaults (5 deployment and 5 replicaset syncs, one
    scheduling queue): that is what users run.
    """
    found = binaries.ensure_baseline()
    folder = Path(plane.folder)
    manager_port, scheduler_port = ports.free_port(), ports.free_port()
    manager = processes.spawn(
        [
            str(found["kube-controller-manager"]),
            f"--kubeconfig={plane.kubeconfig}",
            "--controllers=deployment,replicaset",
            "--leader-elect=false",
            f"--kube-api-qps={CLIENT_QPS}",
            f"--kube-api-burst={CLIENT_QPS}",
            "--bind-address=127.0.0.1",
            f"--secure-port={manager_port}",
            f"--cert-dir={folder / 'manager-certs'}",
        ],
        log=folder / "kube-controller-manager.log",
        attached=True,
    )
    scheduler = processes.spawn(
        [
            str(found["kube-scheduler"]),
            f"--config={_scheduler_config(folder, plane.kubeconfig)}",
            "--bind-address=127.0.0.1",
            f"--secure-port={scheduler_port}",
            f"--cert-dir={folder / 'scheduler-certs'}",
        ],
        log=folder / "kube-scheduler.log",
        attached=True,
    )
    try:
        await _until_healthy(
            {
                "kube-controller-manager": f"https://127.0.0.1:{manager_port}/healthz",
                "kube-scheduler": f"https://127.0.0.1:{scheduler_port}/readyz",
            },
            {"kube-controller-manager": manager, "kube-scheduler": scheduler},
            folder,
        )
        yield Controllers(manager=manager, scheduler=scheduler)
    finally:
        processes.stop(scheduler)
        processes.stop(manager)


class BoundWatch:
    """Counts the namespace's pods that have a node (a watch, read as raw JSON lines).

    The pods are read as plain JSON, not as client models: 10,000 pods changing twice each
    would otherwise cost the load generator more CPU than the controllers it measures.
    """

    def __init__(self, api: client.CoreV1Api, namespace: str, wanted: int) -> None:
        self.api = api
        self.namespace = namespace
        self.wanted = wanted
        self.bound: set[str] = set()
        self.done = asyncio.Event()
        self._version = ""
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            answer = await self.api.list_namespaced_pod(
                self.namespace,
                watch=True,
                resource_version=self._version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
            )
            async with answer:
                async for line in answer.content:
                    event = json.loads(line)
                    pod = event["object"]
                    self._version = pod["metadata"].get("resourceVersion", self._version)
                    if event["type"] in ("ADDED", "MODIFIED") and pod["spec"].get("nodeName"):
                        self.bound.add(pod["metadata"]["name"])
                        if len(self.bound) >= self.wanted:
                            self.done.set()

    @contextlib.contextmanager
    def running(self) -> Iterator[BoundWatch]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()

    async def until_all_bound(self) -> None:
        async with asyncio.timeout(BIND_LIMIT_SECONDS):
            while not self.done.is_set():
                if self._task is not None and self._task.done():
                    self._task.result()  # the watch failed: say why
                    raise SandboxError("the pod watch ended")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # look at the watch task every second
                        await self.done.wait()


@dataclass(frozen=True)
class BaselineFigures:
    """One Kubernetes run's figures."""

    seconds: float  # from the first create until every pod had a node
    bound_rate: float  # pods bound per second
    cpu: dict[str, float]  # CPU seconds of each process over that time


async def _baseline_once(plane: ControlPlane, sizes: Sizes) -> BaselineFigures:
    api_client = await config.new_client_from_config(config_file=plane.kubeconfig)
    try:
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        for index in range(sizes.burst_nodes):
            name = node_name("k8s", index)
            body = fake_node(name, cpu=16, memory_mb=32768)
            await core.create_node(body)
            # A create keeps only what a kubelet may set at birth; the status is its own write.
            await core.patch_node_status(name, {"status": body["status"]})
            # The API server taints every new node not-ready (TaintNodesByCondition); the node
            # lifecycle controller would lift it on seeing Ready, but only the controllers the
            # issue compares run here: lift it as that controller would.
            await core.patch_node(name, {"spec": {"taints": None}})
        namespace = "burst"
        await core.create_namespace({"metadata": {"name": namespace}})
        wanted = sizes.burst_deployments * sizes.burst_replicas
        bodies = [
            deployment(f"d{i:04d}", sizes.burst_replicas) for i in range(sizes.burst_deployments)
        ]

        async def create(body: dict[str, Any]) -> object:
            return await apps.create_namespaced_deployment(namespace, body)

        async with controllers(plane) as running:
            meter = Meter(
                {
                    "kube-apiserver": Process(plane.apiserver_pid),
                    "etcd": Process(plane.etcd_pid),
                    "kube-controller-manager": Process(running.manager),
                    "kube-scheduler": Process(running.scheduler),
                    "load generator": Process(os.getpid()),
                }
            )
            with BoundWatch(core, namespace, wanted).running() as watch:
                meter.start()
                began = time.monotonic()
                await create_each(create, bodies, CREATE_CONCURRENCY)
                await watch.until_all_bound()
                seconds = time.monotonic() - began
                cpu = meter.stop()
        return BaselineFigures(seconds=seconds, bound_rate=wanted / seconds, cpu=cpu)
    finally:
        await api_client.close()


async def kubernetes(
    servers: Servers, sizes: Sizes, _api_client: client.ApiClient
) -> dict[str, Any]:
    """The burst as Deployments on Kubernetes' own controllers, on a control plane per run."""
    runs: list[BaselineFigures] = []
    for run in range(sizes.runs):
        plane = controlplane.start(servers.folder / f"kubernetes-{run}", attached=True)
        try:
            runs.append(await _baseline_once(plane, sizes))
        finally:
            controlplane.stop(plane)
        print(f"  kubernetes run {run + 1}: all bound in {runs[-1].seconds:.1f} s", flush=True)
    pods = sizes.burst_deployments * sizes.burst_replicas
    return {
        "nodes": sizes.burst_nodes,
        "deployments": sizes.burst_deployments,
        "replicas_each": sizes.burst_replicas,
        "version": binaries.pinned_versions().kubernetes,
        "client_qps": CLIENT_QPS,
        "seconds_to_all_bound": summary([r.seconds for r in runs]),
        "pods_bound_per_second": summary([r.bound_rate for r in runs]),
        "cpu_seconds": cpu_summary([r.cpu for r in runs]),
        "cpu_ms_per_pod": summary([1000 * sum(r.cpu.values()) / pods for r in runs]),
    }
