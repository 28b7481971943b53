"""A throwaway PostgreSQL server on a free loopback port, for tests, benchmarks and the demo.

The project's tests must run against a real server, never a mock, and on a fresh machine there is
no server running: so we start our own with the distribution's `initdb` and `pg_ctl`, in a folder
of our own, and stop it when done. PostgreSQL refuses to run as root, so when we are root the
server's files belong to, and its processes run as, the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from controller.sandbox import ports
from controller.sandbox.errors import SandboxError

# The Debian package that brings the server binaries; named in the error when they are missing.
DEBIAN_PACKAGE = "postgresql"
# PostgreSQL refuses to run as root; Debian's package creates this user.
SERVICE_USER = "postgres"
# A cold start on this 2-core machine takes about 1 s; 60 s leaves room for a loaded CI run.
START_TIMEOUT_SECONDS = 60
# How often we retry on a port another process grabbed between our probe and the server's bind.
START_ATTEMPTS = 3
# Throwaway data: skipping disk flushes makes tests and the demo several times faster.
# synchronous_commit stays on: the fault tests crash the server (an immediate stop), and a
# commit it acknowledged must survive that as it would in production. With fsync off a commit
# costs one write() into the kernel, which a killed server does not lose; with it off too, the
# last ~200 ms of acknowledged commits (a node's new token, say) vanished in a crash.
FAST_SETTINGS = ("fsync=off", "full_page_writes=off")
# The operator, agents, tests and benchmarks together open well over the default 100.
MAX_CONNECTIONS = 300


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running throwaway server: where its files are and how to reach it."""

    bin_dir: str
    data_dir: str
    port: int
    host: str = "127.0.0.1"
    user: str = SERVICE_USER

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for one database of this server (trust auth on loopback)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"


def find_bin_dir() -> Path:
    """Find the folder holding `initdb` and `pg_ctl`: PATH first, then Debian's layout."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "pg_ctl").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise SandboxError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
        f"/usr/lib/postgresql/*/bin: install the Debian package '{DEBIAN_PACKAGE}'"
    )


def _run_as() -> str | None:
    """The user the server must run as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise SandboxError(
            f"running as root, but there is no '{SERVICE_USER}' user to run PostgreSQL as: "
            f"install the Debian package '{DEBIAN_PACKAGE}'"
        ) from exc
    return SERVICE_USER


def _make_data_parent(parent: Path | None, user: str | None) -> Path:
    """Create the folder for the cluster, readable by the user the server runs as.

    When we are root the folder goes under the system temp dir, not under `parent`: the
    `postgres` user usually cannot traverse root's home (mode 0700) where a checkout may live.
    """
    if user is None:
        base = parent if parent is not None else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="fog-pg-", dir=base))
    folder = Path(tempfile.mkdtemp(prefix="fog-pg-"))
    entry = pwd.getpwnam(user)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def _pg(
    bin_dir: Path, tool: str, args: list[str], user: str | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / tool), *args],
        user=user,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",  # the server user may not be allowed into our working directory
    )


def start(parent: Path | None = None) -> PostgresServer:
    """Initialise and start a server; return once it accepts connections."""
    bin_dir = find_bin_dir()
    user = _run_as()
    root = _make_data_parent(parent, user)
    data_dir = root / "data"
    init = _pg(
        bin_dir,
        "initdb",
        ["-D", str(data_dir), "-U", SERVICE_USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        user,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise SandboxError(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    last_error = ""
    for _ in range(START_ATTEMPTS):
        server = PostgresServer(
            bin_dir=str(bin_dir), data_dir=str(data_dir), port=ports.free_port()
        )
        result = _pg_start(server, user)
        if result.returncode == 0:
            return server
        last_error = _log_tail(root / "postgres.log") or result.stderr.strip()
        time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)
    raise SandboxError(f"PostgreSQL did not start: {last_error}")


def _pg_start(server: PostgresServer, user: str | None) -> subprocess.CompletedProcess[str]:
    data_dir = Path(server.data_dir)
    options = " ".join(
        [
            f"-c port={server.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={data_dir}",
            f"-c max_connections={MAX_CONNECTIONS}",
            *(f"-c {setting}" for setting in FAST_SETTINGS),
        ]
    )
    return _pg(
        Path(server.bin_dir),
        "pg_ctl",
        [
            "start",
            *("-D", str(data_dir), "-l", str(data_dir.parent / "postgres.log")),
            *("-o", options, "-w", "-t", str(START_TIMEOUT_SECONDS)),
        ],
        user,
    )


def crash(server: PostgresServer) -> None:
    """Stop the server as a crash would (immediate: no checkpoint), keeping its data."""
    _pg(
        Path(server.bin_dir),
        "pg_ctl",
        ["stop", "-D", server.data_dir, "-m", "immediate"],
        _run_as(),
    )


def resume(server: PostgresServer) -> None:
    """Start a crashed server again on the same port and data (crash recovery runs first)."""
    result = _pg_start(server, _run_as())
    if result.returncode != 0:
        raise SandboxError(f"PostgreSQL did not restart: {result.stderr.strip()}")


def _log_tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    return ""


def stop(server: PostgresServer) -> None:
    """Stop the server at once and delete its files (the data is throwaway by design)."""
    data_dir = Path(server.data_dir)
    if data_dir.exists():
        crash(server)
    shutil.rmtree(data_dir.parent, ignore_errors=True)
