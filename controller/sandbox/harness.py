"""One harness for everything that runs the product locally: the tests, the benchmark, the sandbox.

The end-to-end tests, `make bench` and `fogctl sandbox up` need the same few things: a control
plane and a PostgreSQL server that die with their owner, a database (copied from a migrated
template where many are needed), the FogDeployment CRD installed and established, the pinned
kubectl, and `fogctl` processes (the operator, simulated agents) started with their output in a
log and stopped for sure. They used to do each of these their own way (the tests' conftest,
bench/fogbench.py, this package); now they call this module, so a fix to how the product is
started (a flag, a timeout, a leaked process) is made once.

The product is driven from outside, as a person drives it: migrations and node registration run
as `fogctl` commands, not imports. That keeps this package beside `controller.db` (the layer
contract forbids importing it) and means the harness starts exactly what users start.

It serves the repository (the CRD is read from its `crds/` folder), not an installed wheel.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL, make_url

from controller.agent.tokens import TokensFile
from controller.sandbox import binaries, controlplane, ports, postgres, processes
from controller.sandbox.errors import SandboxError

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "fogdeployment.yaml"
CRD_NAME = "fogdeployments.fogcompute.io"
# The product's other kinds, installed beside it: the operator watches them all.
OTHER_CRDS = {REPO / "crds" / "fogquota.yaml": "fogquotas.fogcompute.io"}
# kubectl calls against a local server return in well under a second; a minute means "hung".
KUBECTL_TIMEOUT_SECONDS = 60
# A new CRD is Established within a second or two; a minute covers a loaded CI machine.
CRD_ESTABLISHED_TIMEOUT = "60s"
# kopf stops gracefully on SIGTERM within a few seconds (it cancels its watches and runs the
# cleanup hook); beyond this we kill it.
PROCESS_STOP_SECONDS = 15.0
# A one-shot fogctl command (node register, history, db upgrade) answers in a second or two,
# most of it Python's start-up; two minutes covers a loaded CI machine before we call it hung.
COMMAND_TIMEOUT_SECONDS = 120
# The simulated agent of tests and benchmarks: replicas start at once (no simulated pull) and
# the agent looks for work every 0.2 s, so what is measured or awaited is the operator.
FAST_AGENT_ARGS = ("--start-delay", "0", "--tick", "0.2")
# What an agent's environment lacks: agents hold no database URL and no cluster credentials.
AGENT_UNSEEN = frozenset({"FOG_DATABASE_URL", "KUBECONFIG"})


# How often `wait_for` asks: fast enough that a test waits little past the moment, slow enough
# that polling (a kubectl or SQL call each) stays a small share of two cores.
POLL_SECONDS = 0.2


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Poll `probe` until it returns something truthy.

    AssertionError naming `what` after `timeout` seconds, with the last thing it returned.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


# --------------------------------------------------------------------------- databases


def _admin(server_url: URL | str) -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(server_url)
    return psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


def create_database(server_url: URL | str, name: str, *, template: str | None = None) -> URL:
    """Create `name` on the server (a copy of `template`, if given); return its URL.

    Copying a migrated template copies files: milliseconds, where replaying the migrations
    takes a second or more, which adds up over a test session or a benchmark's fresh runs.
    """
    suffix = f' TEMPLATE "{template}"' if template else ""
    with _admin(server_url) as connection:
        connection.execute(f'CREATE DATABASE "{name}"{suffix}'.encode())
    return make_url(server_url).set(database=name)


def drop_database(server_url: URL | str, name: str) -> None:
    """Drop `name`, closing whatever is still connected to it."""
    with _admin(server_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def allow_connections(database_url: URL | str, allowed: bool) -> None:
    """Open or close a database to new connections; closing also ends the open ones.

    This is a database outage as the operator sees it (connections refused and dropped) while
    the server, and every other test's database on it, keeps running.
    """
    url = make_url(database_url)
    with _admin(url.set(database="postgres")) as connection:
        connection.execute(
            f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS {str(allowed).lower()}'.encode()
        )
        if not allowed:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (url.database,),
            )


# --------------------------------------------------------------------------- the API server


class Kubectl:
    """The pinned kubectl, bound to one kubeconfig: the client version the tests assert on."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binaries.ensure().kubectl
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with `check`, a non-zero exit raises SandboxError with its stderr."""
        result = subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
        if check and result.returncode != 0:
            raise SandboxError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result


def install_crd(kubectl: Kubectl) -> str:
    """Apply the product's CRDs (server-side, as GitOps tools do) and wait until established.

    Objects of a kind that is not yet Established are refused, so nothing may start before.
    """
    files = [CRD, *OTHER_CRDS]
    kubectl("apply", "--server-side", *(f"--filename={path}" for path in files))
    kubectl(
        "wait",
        "--for=condition=Established",
        f"--timeout={CRD_ESTABLISHED_TIMEOUT}",
        f"crd/{CRD_NAME}",
        *(f"crd/{name}" for name in OTHER_CRDS.values()),
    )
    return CRD_NAME


@contextlib.contextmanager
def control_plane(folder: Path) -> Iterator[controlplane.ControlPlane]:
    """A control plane tied to this process, stopped however the block ends."""
    plane = controlplane.start(folder, attached=True)
    try:
        yield plane
    finally:
        controlplane.stop(plane)


# --------------------------------------------------------------------------- fogctl processes


def fogctl_env(*, kubeconfig: str, database_url: URL | str) -> dict[str, str]:
    """The environment of a fogctl process aimed at one API server and one database."""
    url = database_url if isinstance(database_url, str) else database_url.render_as_string(False)
    return {**os.environ, "KUBECONFIG": kubeconfig, "FOG_DATABASE_URL": url}


def agent_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without what an agent must not hold (AGENT_UNSEEN)."""
    return {key: value for key, value in env.items() if key not in AGENT_UNSEEN}


def _fogctl_argv(args: Sequence[str]) -> list[str]:
    # This interpreter rather than the `fogctl` script: the same venv whichever way we run.
    return [sys.executable, "-m", "controller.cli.main", *args]


def fogctl(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a one-shot fogctl command and return what it printed."""
    return subprocess.run(
        _fogctl_argv(args),
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=REPO,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def fogctl_checked(env: Mapping[str, str], *args: str) -> str:
    """Run a one-shot fogctl command that must succeed; its stderr is the error if not."""
    result = fogctl(env, *args)
    if result.returncode != 0:
        raise SandboxError(f"fogctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class FogctlProcess:
    """A long-running `fogctl` process (operator or agent), its output appended to a log.

    It is tied to its owner's life (see `processes.spawn`): a killed test run or benchmark
    leaves no operator behind to reconcile into the next run's database.
    """

    def __init__(
        self,
        log: Path,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        needs: FogctlProcess | None = None,
    ) -> None:
        self.log = log
        self.args = list(args)
        self.env = dict(env)
        self.needs = needs  # started first if not running (an agent needs the agent API)
        self._pid: int | None = None

    def start(self) -> FogctlProcess:
        """Start it (again, if it was stopped), with `args` as they are now."""
        if self.needs is not None and not self.needs.running():
            self.needs.start()
        self._pid = processes.spawn(
            _fogctl_argv(self.args), log=self.log, attached=True, env=self.env, cwd=REPO
        )
        return self

    @property
    def pid(self) -> int:
        """The running process's id."""
        if self._pid is None:
            raise SandboxError(f"fogctl {' '.join(self.args)} is not running")
        return self._pid

    def running(self) -> bool:
        """Whether it was started and has not exited."""
        return self._pid is not None and processes.alive(self._pid)

    def exit_code(self) -> int | None:
        """Its exit code once it has exited by itself (after a signal, say); None before."""
        return None if self._pid is None else processes.exit_code(self._pid)

    def signal(self, signum: signal.Signals) -> None:
        """Send a signal, e.g. the simulated agent's SIGUSR1 (cut the link) and SIGUSR2."""
        os.kill(self.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after PROCESS_STOP_SECONDS; a no-op if not running."""
        if self._pid is not None:
            processes.stop(self._pid, PROCESS_STOP_SECONDS)
            self._pid = None


class Stack:
    """The product's processes for one run: operator, agent API and simulated agent, not started.

    The operator runs with its production defaults (resync every 600 s) unless the caller adds
    flags: tests must see the watch and the database notifications carry every change, not a
    fast resync cover for a broken one; benchmarks must measure what production runs. Agents
    get no database URL, only node tokens (the tokens file, filled by `register_node` or
    `add_tokens`), and speak to the agent API, which an agent's start starts if need be.
    """

    def __init__(
        self,
        *,
        folder: Path,
        env: Mapping[str, str],
        namespaces: Sequence[str],
        operator_args: Sequence[str] = (),
        label: str = "",
    ) -> None:
        self.folder = folder
        self.env = dict(env)
        self.prefix = f"{label}-" if label else ""
        watch = [arg for namespace in namespaces for arg in ("-n", namespace)]
        self.operator = FogctlProcess(
            folder / f"{self.prefix}operator.log", ["run", *watch, *operator_args], env
        )
        port = ports.free_port()
        self.agent_server = f"http://127.0.0.1:{port}"
        self.agent_api = FogctlProcess(
            folder / f"{self.prefix}agent-api.log",
            ["serve-agents", "--listen", f"127.0.0.1:{port}", "--metrics-bind-address", "0"],
            env,
        )
        self.tokens_file = folder / f"{self.prefix}agent-tokens.yaml"
        TokensFile(self.tokens_file).save({})
        # Plays every node of the tokens file; `agent_for` adds agents for some nodes only.
        self.agent = self._agent_process("agent", [])
        self.extra_agents: dict[str, FogctlProcess] = {}

    def _agent_process(
        self, name: str, nodes: Sequence[str], extra: Sequence[str] = ()
    ) -> FogctlProcess:
        agent_env = agent_environment(self.env)
        argv = ["agent", "simulate", *nodes, "--server", self.agent_server]
        return FogctlProcess(
            self.folder / f"{self.prefix}{name}.log",
            # `extra` comes last: a flag given again there wins over FAST_AGENT_ARGS.
            [*argv, "--tokens-file", str(self.tokens_file), *FAST_AGENT_ARGS, *extra],
            agent_env,
            needs=self.agent_api,
        )

    def agent_for(
        self, name: str, nodes: Sequence[str], extra: Sequence[str] = ()
    ) -> FogctlProcess:
        """Start an agent of its own for `nodes` (one that can be cut off alone), kept by name.

        Use it instead of `agent`, not with it: two agents playing one node both report.
        `extra` flags override the fast defaults (the benchmark's fleet heartbeats every 10 s).
        """
        agent = self._agent_process(f"agent-{name}", nodes, extra)
        self.extra_agents[name] = agent
        return agent.start()

    def add_tokens(self, tokens: Mapping[str, str]) -> None:
        """Give the agents these nodes' tokens (they pick them up without a restart).

        The agent API is started now if it is not running: registration counts as a
        heartbeat, and a short grace (the fault suite's 3 s) must not run out while it starts.
        """
        TokensFile(self.tokens_file).save(tokens)
        if not self.agent_api.running():
            self.agent_api.start()

    def fogctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A one-shot fogctl command against this stack's database and API server."""
        return fogctl(self.env, *args)

    def register_node(self, name: str, *, cpu: float = 4, memory_mb: int = 8192) -> None:
        """Register a fog node the way a person does, and hand its bootstrap token to the agents."""
        printed = fogctl_checked(
            self.env,
            *("node", "register", name, "--cpu", str(cpu), "--memory-mb", str(memory_mb)),
            *("--storage-gb", "100", "-o", "json"),
        )
        self.add_tokens({name: json.loads(printed)["bootstrapToken"]})

    def logs(self) -> dict[str, Path]:
        """The processes' logs, attached to a failed test."""
        logs = {
            "operator": self.operator.log,
            "agent-api": self.agent_api.log,
            "agent": self.agent.log,
        }
        logs.update({f"agent-{name}": agent.log for name, agent in self.extra_agents.items()})
        return logs

    def _processes(self) -> tuple[FogctlProcess, ...]:
        return (self.operator, self.agent, *self.extra_agents.values(), self.agent_api)

    def stop(self) -> None:
        """Stop every process of the stack (whichever run)."""
        for process in self._processes():
            process.stop()

    def kill(self) -> None:
        """SIGKILL every running process of the stack, then reap them.

        For a caller done with the run that has no use for a graceful stop (the benchmark
        between runs): the operator's drains its reconciles and releases its lease, and every
        process of the run takes its turn to exit.
        """
        for process in self._processes():
            if process.running():
                process.signal(signal.SIGKILL)
        self.stop()


# --------------------------------------------------------------------------- all of it


@dataclass
class Servers:
    """A control plane and a PostgreSQL server with a migrated template and the CRD installed.

    What the benchmark runs in: each run takes a fresh database and namespace from it, so no run
    sees another's rows or objects, while the servers (10 s to start) are started once.
    """

    folder: Path
    plane: controlplane.ControlPlane
    database: postgres.PostgresServer
    kubectl: Kubectl
    template: str
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fresh_database(self, prefix: str = "fog") -> URL:
        """A new database, a copy of the migrated template."""
        return create_database(
            self.database.url(), f"{prefix}_{next(self._names)}", template=self.template
        )

    def env(self, database_url: URL | str) -> dict[str, str]:
        """The environment of a fogctl process aimed at these servers and one database."""
        return fogctl_env(kubeconfig=self.plane.kubeconfig, database_url=database_url)

    def restart_apiserver(self, *, down_for: float = 0.0, feature_gates: str | None = None) -> None:
        """kube-apiserver down for `down_for` seconds and back on the same port (etcd kept)."""
        self.plane = controlplane.restart_apiserver(
            self.plane, down_for=down_for, feature_gates=feature_gates
        )

    def restart_database(self, *, down_for: float = 0.0) -> None:
        """PostgreSQL crashes, stays down for `down_for` seconds, and recovers its data."""
        postgres.crash(self.database)
        time.sleep(down_for)
        postgres.resume(self.database)


@contextlib.contextmanager
def servers(template: str = "fog_template") -> Iterator[Servers]:
    """Start everything a run of the product needs; stop it however the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="fog-harness-"))
    plane = controlplane.start(folder / "control-plane", attached=True)
    running: Servers | None = None
    database = postgres.start()
    try:
        template_url = create_database(database.url(), template)
        fogctl_checked(
            fogctl_env(kubeconfig=plane.kubeconfig, database_url=template_url), "db", "upgrade"
        )
        kubectl = Kubectl(plane.kubeconfig)
        install_crd(kubectl)
        running = Servers(
            folder=folder, plane=plane, database=database, kubectl=kubectl, template=template
        )
        yield running
    finally:
        postgres.stop(database)
        # The API server may have been restarted meanwhile: stop the one running now.
        controlplane.stop(running.plane if running else plane)
