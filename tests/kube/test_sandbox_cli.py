"""`fogctl sandbox up | env | down` as a person runs them: detached servers, then none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from controller.sandbox import processes
from controller.sandbox.harness import Kubectl


def fogctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _exports(env_file: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in env_file.splitlines())
    return {key: value.strip("'") for key, value in pairs}


def test_up_env_down(tmp_path: Path) -> None:
    folder = tmp_path / "box"
    up = fogctl("sandbox", "up", "--dir", str(folder))
    assert up.returncode == 0, up.stderr
    state = json.loads((folder / "state.json").read_text())
    pids = [state["plane"]["etcd_pid"], state["plane"]["apiserver_pid"]]
    try:
        again = fogctl("sandbox", "up", "--dir", str(folder))
        assert again.returncode == 1
        assert again.stderr.strip() == (
            f"fogctl: error: a sandbox already runs in {folder}: 'fogctl sandbox down' first"
        )

        env = fogctl("sandbox", "env", "--dir", str(folder))
        assert env.returncode == 0, env.stderr
        exports = _exports(env.stdout)
        assert set(exports) == {"KUBECONFIG", "FOG_DATABASE_URL", "PATH"}

        kubectl = Kubectl(exports["KUBECONFIG"])
        assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        url = make_url(exports["FOG_DATABASE_URL"])
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database
        ) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("fog",)
    finally:
        down = fogctl("sandbox", "down", "--dir", str(folder))
    assert down.returncode == 0, down.stderr
    assert not folder.exists()
    assert not any(processes.alive(pid) for pid in pids)
    assert not os.path.exists(state["database"]["data_dir"])


def test_env_and_down_without_a_sandbox_are_one_line(tmp_path: Path) -> None:
    for action in ("env", "down"):
        result = fogctl("sandbox", action, "--dir", str(tmp_path / "none"))
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"fogctl: error: no sandbox in {tmp_path / 'none'}: run 'fogctl sandbox up' first"
        )
