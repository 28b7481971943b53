"""The fault suite's servers: a control plane and a PostgreSQL server of its own.

Its own, because the suite restarts them: the rest of the tests must not see the API server or
the database vanish under them. Started once for the suite (about 10 s); each test takes a
fresh database and namespace. `FOG_FAULTS=full` (what `make reliability` sets) runs every
scenario at full strength; the default is the short version `make test` runs.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultsite import SCALES, Scale, Site

from controller.sandbox import harness
from controller.sandbox.harness import Servers, Stack

# Lines of each process log attached to a failed test.
LOG_TAIL_LINES = 60
SCALE_ENV = "FOG_FAULTS"


@pytest.fixture(scope="session")
def scale() -> Scale:
    name = os.environ.get(SCALE_ENV, "short")
    if name not in SCALES:
        raise pytest.UsageError(f"{SCALE_ENV} must be one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with harness.servers(template="fog_faults_template") as running:
        yield running


@pytest.fixture
def site(servers: Servers, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    namespace = f"faults-{uuid.uuid4().hex[:8]}"
    servers.kubectl("create", "namespace", namespace)
    database = servers.fresh_database("faults")
    stack = Stack(
        folder=tmp_path,
        env=servers.env(database),
        namespaces=[namespace],
        # `-v` for kopf's per-object lines in the log attached to a failure.
        operator_args=("-v",),
    )
    here = Site(servers, namespace, stack, tmp_path, figures={})
    started = time.monotonic()
    try:
        yield here
    finally:
        stack.stop()
        here.figures["seconds"] = round(time.monotonic() - started, 1)
        _record(request.node.name, here.figures)
        servers.kubectl(
            "delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False
        )


def _record(test: str, figures: dict[str, Any]) -> None:
    """Append the scenario's figures to the file `make reliability` writes RELIABILITY.md from."""
    target = os.environ.get("FOG_FAULTS_RESULTS")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, **figures}) + "\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the processes' and servers' log tails to a failed scenario."""
    report = yield
    here = getattr(item, "funcargs", {}).get("site")
    if report.failed and isinstance(here, Site):
        logs = {**here.servers.plane.logs, **here.stack.logs()}
        for name, log in logs.items():
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append((f"{name} log (last lines)", "\n".join(tail)))
    return report
