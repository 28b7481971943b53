"""The fault suite's shared types: how hard to push (Scale) and one test's world (Site).

A module of its own, not conftest.py: test modules import these by name, and a `conftest`
module name is shared by every test folder's conftest.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.sandbox.harness import Servers, Stack


@dataclass(frozen=True)
class Scale:
    """How hard each scenario pushes. The short one keeps `make test` within minutes."""

    name: str
    operator_kills: int
    long_database_outage_seconds: float
    two_operators_seconds: float
    mass_delete_objects: int


SCALES = {
    "short": Scale("short", 5, 0.0, 20.0, 200),
    # The figures: 50 kills, an outage past a minute, minutes of two operators, 2,000
    # objects deleted at once.
    "full": Scale("full", 50, 65.0, 120.0, 2000),
}


@dataclass
class Site:
    """One test's world: its namespace, its database, its processes, and what it recorded."""

    servers: Servers
    namespace: str
    stack: Stack
    folder: Path
    figures: dict[str, Any]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        return self.servers.kubectl(*args, stdin=stdin, check=check)

    def objects(self) -> list[dict[str, Any]]:
        """Every FogDeployment of the namespace (none while the API server is down)."""
        listed = self.kubectl("get", "fogdeploy", "-n", self.namespace, "-o", "json", check=False)
        if listed.returncode != 0:
            return []
        items: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
        return items
