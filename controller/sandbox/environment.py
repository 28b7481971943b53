"""`fogctl sandbox up|down|env`: the whole local environment from one command.

A sandbox is a folder holding a running control plane, a throwaway PostgreSQL server with an
empty `fog` database, and two files a person or a script reads: `kubeconfig` and `env` (shell
`export` lines). `state.json` records what runs, so `down` can stop it from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from controller.sandbox import binaries, controlplane, harness, postgres
from controller.sandbox.errors import SandboxError

DEFAULT_DIR_ENV = "FOG_SANDBOX_DIR"
DEFAULT_DIR = ".sandbox"
DATABASE = "fog"
STATE_FILE = "state.json"


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What runs in one sandbox folder."""

    folder: Path
    plane: controlplane.ControlPlane
    database: postgres.PostgresServer

    @property
    def database_url(self) -> str:
        """The URL of the sandbox's `fog` database."""
        return self.database.url(DATABASE)

    @property
    def env_file(self) -> Path:
        """The file of `export` lines for a shell to source."""
        return self.folder / "env"


def default_dir() -> Path:
    """The sandbox folder when `--dir` is not given."""
    return Path(os.environ.get(DEFAULT_DIR_ENV, DEFAULT_DIR)).absolute()


def _state(folder: Path) -> Path:
    return folder / STATE_FILE


def up(folder: Path) -> Sandbox:
    """Start everything in `folder`; refuse if a sandbox already runs there."""
    if _state(folder).exists():
        raise SandboxError(f"a sandbox already runs in {folder}: 'fogctl sandbox down' first")
    folder.mkdir(parents=True, exist_ok=True)
    plane = controlplane.start(folder / "control-plane", attached=False)
    try:
        database = postgres.start(folder)
    except SandboxError:
        controlplane.stop(plane)
        raise
    sandbox = Sandbox(folder=folder, plane=plane, database=database)
    try:
        harness.create_database(database.url(), DATABASE)
    except psycopg.Error as exc:
        _stop(sandbox)
        raise SandboxError(f"could not create the sandbox database: {exc}") from None
    _state(folder).write_text(json.dumps({"plane": asdict(plane), "database": asdict(database)}))
    kubectl_dir = str(binaries.ensure().kubectl.parent)
    sandbox.env_file.write_text(
        f"export KUBECONFIG={shlex.quote(plane.kubeconfig)}\n"
        f"export FOG_DATABASE_URL={shlex.quote(sandbox.database_url)}\n"
        f'export PATH={shlex.quote(kubectl_dir)}:"$PATH"\n'
    )
    return sandbox


def load(folder: Path) -> Sandbox:
    """Read what `up` recorded in `folder`."""
    try:
        state = json.loads(_state(folder).read_text())
    except FileNotFoundError:
        raise SandboxError(f"no sandbox in {folder}: run 'fogctl sandbox up' first") from None
    return Sandbox(
        folder=folder,
        plane=controlplane.ControlPlane(**state["plane"]),
        database=postgres.PostgresServer(**state["database"]),
    )


def _stop(sandbox: Sandbox) -> None:
    controlplane.stop(sandbox.plane)
    postgres.stop(sandbox.database)


def down(folder: Path) -> None:
    """Stop everything `up` started in `folder` and delete the folder's state."""
    sandbox = load(folder)
    _stop(sandbox)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
