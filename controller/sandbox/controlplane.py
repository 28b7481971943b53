"""A real Kubernetes control plane on loopback: etcd plus kube-apiserver, no nodes, no kubelet.

This is what controller-runtime's envtest does for Go operators. Our workloads run on fog
nodes, not in pods, so an API server with its storage is all the cluster we need to check the
CRD schema, the status and scale subresources, RBAC, watches and kubectl as users see them.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from controller.sandbox import binaries, pki, ports, processes
from controller.sandbox.errors import SandboxError

# kube-apiserver installs its built-in resources and RBAC roles before /readyz says ok: about
# 5-10 s on 2 cores; 120 s leaves room for a CI machine that is also compiling.
READY_TIMEOUT_SECONDS = 120.0
# /readyz answers within milliseconds once up; a short poll keeps startup fast.
READY_POLL_SECONDS = 0.25
# One probe of /readyz; the server is local, so a slow answer means it is still starting.
PROBE_TIMEOUT_SECONDS = 2.0
# The service network is required by the flags but unused: nothing here allocates pod IPs.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# A readable context name in the kubeconfig.
CONTEXT = "fog-sandbox"
# How many times we pick new ports when one was taken between our probe and the bind.
START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """A running control plane: where it listens and which processes to stop."""

    folder: str
    etcd_pid: int
    apiserver_pid: int
    etcd_port: int
    apiserver_port: int
    kubeconfig: str

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def logs(self) -> dict[str, Path]:
        """The servers' log files, printed when a test fails."""
        folder = Path(self.folder)
        return {"etcd": folder / "etcd.log", "kube-apiserver": folder / "kube-apiserver.log"}


def _etcd_argv(etcd: Path, data: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=fog-sandbox",
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=fog-sandbox={peer}",
        # Throwaway state: skipping fsync makes every API write several times faster.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_argv(
    apiserver: Path,
    keys: pki.Pki,
    etcd_port: int,
    port: int,
    folder: Path,
    feature_gates: str | None = None,
) -> list[str]:
    gates = [] if feature_gates is None else [f"--feature-gates={feature_gates}"]
    return [
        str(apiserver),
        *gates,
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The `kubernetes` Service endpoints may not point at loopback, and no pod would use
        # them: leave them unmanaged.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={folder}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--client-ca-file={keys.ca_cert}",
        f"--service-account-key-file={keys.sa_public}",
        f"--service-account-signing-key-file={keys.sa_private}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=RBAC",
        # No controller-manager creates default service accounts, so their admission would
        # refuse every pod; we create no pods, but kubectl users may try.
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        "--v=1",
    ]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, keys: pki.Pki) -> None:
    """A self-contained kubeconfig (certificates inlined) for the sandbox's admin."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(keys.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "fog-admin",
                "user": {
                    "client-certificate-data": _b64(keys.admin_cert),
                    "client-key-data": _b64(keys.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": "fog-admin", "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _ready(server: str, keys: pki.Pki) -> bool:
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    context.load_cert_chain(str(keys.admin_cert), str(keys.admin_key))
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own https URL on loopback
            f"{server}/readyz", context=context, timeout=PROBE_TIMEOUT_SECONDS
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _wait_ready(plane: ControlPlane, keys: pki.Pki) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _ready(plane.server, keys):
            return
        for name, pid in (("etcd", plane.etcd_pid), ("kube-apiserver", plane.apiserver_pid)):
            if not processes.alive(pid):
                raise SandboxError(f"{name} exited during startup: {_tail(plane.logs[name])}")
        time.sleep(READY_POLL_SECONDS)
    raise SandboxError(
        f"kube-apiserver not ready after {READY_TIMEOUT_SECONDS:.0f} s: "
        f"{_tail(plane.logs['kube-apiserver'])}"
    )


def _tail(log: Path, lines: int = 5) -> str:
    if not log.exists():
        return "(no log)"
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def start(folder: Path, *, attached: bool) -> ControlPlane:
    """Start etcd and kube-apiserver in `folder`; return when /readyz says ok.

    `attached` ties the servers to this process (tests); otherwise they outlive it (sandbox).
    """
    folder.mkdir(parents=True, exist_ok=True)
    found = binaries.ensure(log=folder / "build.log")
    keys = pki.create(folder / "pki")
    last_error: SandboxError | None = None
    for _ in range(START_ATTEMPTS):
        etcd_port, peer_port, api_port = ports.free_port(), ports.free_port(), ports.free_port()
        shutil.rmtree(folder / "etcd-data", ignore_errors=True)  # a failed attempt's member
        etcd = processes.spawn(
            _etcd_argv(found.etcd, folder / "etcd-data", etcd_port, peer_port),
            log=folder / "etcd.log",
            attached=attached,
        )
        apiserver = processes.spawn(
            _apiserver_argv(found.kube_apiserver, keys, etcd_port, api_port, folder),
            log=folder / "kube-apiserver.log",
            attached=attached,
        )
        plane = ControlPlane(
            folder=str(folder),
            etcd_pid=etcd,
            apiserver_pid=apiserver,
            etcd_port=etcd_port,
            apiserver_port=api_port,
            kubeconfig=str(folder / "kubeconfig"),
        )
        try:
            _wait_ready(plane, keys)
        except SandboxError as exc:
            stop(plane)
            last_error = exc
            continue
        write_kubeconfig(Path(plane.kubeconfig), plane.server, keys)
        return plane
    assert last_error is not None
    raise last_error


def restart_apiserver(
    plane: ControlPlane, *, down_for: float = 0.0, feature_gates: str | None = None
) -> ControlPlane:
    """Stop kube-apiserver, wait `down_for` seconds, start it again on the same port.

    etcd keeps running, so every object survives, as in a rolling upgrade of the API server.
    The new process is tied to this process, like the one the tests started. `feature_gates`
    (kube-apiserver's --feature-gates, e.g. "WatchList=false") stand in for an API server of
    another version or configuration; the next restart without them drops them.
    """
    folder = Path(plane.folder)
    found = binaries.ensure(log=folder / "build.log")
    keys = pki.existing(folder / "pki")
    processes.stop(plane.apiserver_pid)
    time.sleep(down_for)
    apiserver = processes.spawn(
        _apiserver_argv(
            found.kube_apiserver,
            keys,
            plane.etcd_port,
            plane.apiserver_port,
            folder,
            feature_gates,
        ),
        log=folder / "kube-apiserver.log",
        attached=True,
    )
    restarted = dataclasses.replace(plane, apiserver_pid=apiserver)
    _wait_ready(restarted, keys)
    return restarted


def stop(plane: ControlPlane) -> None:
    """Stop the API server first (it talks to etcd), then etcd."""
    processes.stop(plane.apiserver_pid)
    processes.stop(plane.etcd_pid)
