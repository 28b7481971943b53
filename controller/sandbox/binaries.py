"""Find, or build once from source, the pinned kube-apiserver, kubectl and etcd binaries.

Like controller-runtime's envtest we need real control-plane binaries, not a fake API server.
No prebuilt binaries can be downloaded here, but the Go module proxy is reachable, so the
binaries are built from the modules pinned in `tools/control-plane/{kube,etcd}/go.mod` (those
files are the one place the versions are written) into a per-user cache. Lookup order:

1. `KUBEBUILDER_ASSETS`, envtest's convention: a folder holding all three binaries;
2. the cache, `$XDG_CACHE_HOME/fog-controller/control-plane/<versions>/`;
3. a build into that cache (about 6 minutes on 2 cores the first time; seconds afterwards).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.sandbox.errors import SandboxError

ASSETS_ENV = "KUBEBUILDER_ASSETS"
TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools" / "control-plane"
BINARIES = ("kube-apiserver", "kubectl", "etcd")
# Kubernetes' own controllers, run only by the benchmark as the baseline we are measured against
# (the same burst as Deployments); built on first use, beside the binaries above.
BASELINE = ("kube-controller-manager", "kube-scheduler")
# `go build -v` prints one line per package compiled; a note every this many keeps a first
# build (several thousand packages) visibly alive without flooding the terminal.
PROGRESS_EVERY = 250


@dataclass(frozen=True, slots=True)
class Versions:
    """The pinned versions, as the go.mod files require them."""

    kubernetes: str
    etcd: str

    @property
    def cache_key(self) -> str:
        """The cache folder's name: a new pin gets a new folder, never a stale binary."""
        return f"k8s-{self.kubernetes}-etcd-{self.etcd}"


@dataclass(frozen=True, slots=True)
class Binaries:
    """Paths of the three control-plane binaries."""

    kube_apiserver: Path
    kubectl: Path
    etcd: Path


def _required_version(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise SandboxError(f"{go_mod} does not require {module}")
    return match.group(1)


def pinned_versions() -> Versions:
    """Read the pins from the build modules' go.mod files."""
    return Versions(
        kubernetes=_required_version(TOOLS_DIR / "kube" / "go.mod", "k8s.io/kubernetes"),
        etcd=_required_version(TOOLS_DIR / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3"),
    )


def cache_root() -> Path:
    """The per-user cache folder for built binaries."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fog-controller" / "control-plane"


def _from_folder(folder: Path) -> Binaries | None:
    paths = [folder / name for name in BINARIES]
    if all(path.is_file() and os.access(path, os.X_OK) for path in paths):
        return Binaries(kube_apiserver=paths[0], kubectl=paths[1], etcd=paths[2])
    return None


def find() -> Binaries | None:
    """The binaries from KUBEBUILDER_ASSETS or the cache, without building anything."""
    assets = os.environ.get(ASSETS_ENV)
    if assets:
        found = _from_folder(Path(assets))
        if found is None:
            raise SandboxError(f"{ASSETS_ENV}={assets} lacks one of {', '.join(BINARIES)}")
        return found
    return _from_folder(cache_root() / pinned_versions().cache_key)


def ensure(log: Path | None = None) -> Binaries:
    """Return the binaries, building them into the cache first when they are missing."""
    found = find()
    if found is not None:
        return found
    versions = pinned_versions()
    target = cache_root() / versions.cache_key
    with build_lock(target.parent):
        found = _from_folder(target)  # another process may have built them while we waited
        if found is not None:
            return found
        _build(versions, target, log)
    built = _from_folder(target)
    assert built is not None, "a successful build leaves all three binaries"
    return built


def ensure_baseline(log: Path | None = None) -> dict[str, Path]:
    """kube-controller-manager and kube-scheduler at the pinned version, built once when missing.

    They are looked for beside the other binaries (KUBEBUILDER_ASSETS or the cache) and built
    into the cache folder otherwise: about 75 s when the Go build cache already holds the
    control plane's packages, several minutes on a clean one. The tests never need them.
    """
    versions = pinned_versions()
    assets = os.environ.get(ASSETS_ENV)
    folders = [Path(assets)] if assets else []
    target = cache_root() / versions.cache_key
    for folder in [*folders, target]:
        paths = {name: folder / name for name in BASELINE}
        if all(path.is_file() and os.access(path, os.X_OK) for path in paths.values()):
            return paths
    ensure(log)  # the cache folder exists, and Go is known to work
    with build_lock(target.parent):
        paths = {name: target / name for name in BASELINE}
        if not all(path.is_file() for path in paths.values()):
            staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
            try:
                _say(f"building {' and '.join(BASELINE)} {versions.kubernetes} into {target}")
                go_build(
                    TOOLS_DIR / "kube",
                    ["-ldflags", _version_ldflags(versions.kubernetes)],
                    [f"k8s.io/kubernetes/cmd/{name}" for name in BASELINE],
                    f"{staging}/",
                    log,
                )
                for name, path in paths.items():
                    (staging / name).replace(path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return paths


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One build at a time per machine: two test runs must not race on the same cache."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version_ldflags(version: str) -> str:
    """Stamp the version the way Kubernetes' own build does, so `kubectl version` shows it."""
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    flags = [
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in values.items()
    ]
    return " ".join(["-s", "-w", *flags])  # -s -w: no symbol tables, a third smaller


def _build(versions: Versions, target: Path, log: Path | None) -> None:
    if shutil.which("go") is None:
        raise SandboxError(
            "the control-plane binaries are not built and 'go' is not on PATH: install Go "
            f"1.26+ or set {ASSETS_ENV} to a folder with kube-apiserver, kubectl and etcd"
        )
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        _say(
            f"building kube-apiserver and kubectl {versions.kubernetes} and etcd "
            f"{versions.etcd} into {target} (first build: about 6 min on 2 cores)"
        )
        go_build(
            TOOLS_DIR / "kube",
            ["-ldflags", _version_ldflags(versions.kubernetes)],
            ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"],
            f"{staging}/",
            log,
        )
        # An explicit file name: Go would name this binary after the module ("server").
        go_build(
            TOOLS_DIR / "etcd",
            ["-ldflags", "-s -w"],
            ["go.etcd.io/etcd/server/v3"],
            str(staging / "etcd"),
            log,
        )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(f"control-plane binaries ready in {target}")


def go_build(
    module: Path, flags: list[str], packages: list[str], output: str, log: Path | None
) -> None:
    """`go build` in `module`, showing progress; a failure raises with the build's last lines."""
    argv = ["go", "build", "-v", "-trimpath", *flags, "-o", output, *packages]
    env = {**os.environ, "CGO_ENABLED": "0"}  # static binaries; no C toolchain needed
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=module, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if len(lines) % PROGRESS_EVERY == 0:
                _say(f"  {module.name}: {len(lines)} packages compiled")
    if log is not None:
        with log.open("a") as handle:
            handle.writelines(lines)
    if process.returncode != 0:
        tail = "".join(lines[-20:])
        raise SandboxError(f"go build in {module} failed (exit {process.returncode}):\n{tail}")


def _say(message: str) -> None:
    print(f"fog-controller: {message}", file=sys.stderr, flush=True)
