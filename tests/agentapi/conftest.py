"""A real agent API (`fogctl serve-agents`) on a fresh database, and ways to talk to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL

from controller.sandbox import harness, ports
from controller.sandbox.harness import FogctlProcess

# The agent API starts in about a second; 30 s covers a loaded CI machine.
START_SECONDS = 30.0
# A notification is delivered at commit, within milliseconds; this only bounds a failing test.
NOTIFY_SECONDS = 10.0


@dataclass
class Answer:
    """An HTTP answer: status, headers and the JSON body (None when empty)."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class AgentApi:
    """The running server, its database, and the admin side (fogctl, SQL) of a test."""

    url: str
    metrics_url: str
    database_url: URL
    env: dict[str, str]

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
    ) -> Answer:
        """One HTTP request, as an agent with `token` (or none) sends it."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, headers, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        return Answer(status, headers, json.loads(text) if text else None)

    def fogctl(self, *args: str) -> str:
        """An admin command against the test's database; its output."""
        return harness.fogctl_checked(self.env, *args)

    def register(self, name: str) -> str:
        """Register a node (4 cores, 8 GiB, 100 GB); its bootstrap token."""
        printed = self.fogctl(
            *("node", "register", name, "--cpu", "4", "--memory-mb", "8192"),
            *("--storage-gb", "100", "-o", "json"),
        )
        return str(json.loads(printed)["bootstrapToken"])

    def node_token(self, name: str) -> str:
        """Register a node and exchange its bootstrap token, as its agent would."""
        answer = self.call("POST", "/v1/credentials/exchange", token=self.register(name))
        assert answer.status == 200, answer.body
        assert answer.body["node"] == name
        return str(answer.body["token"])

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run SQL as the admin; the rows it returned (if any)."""
        url = self.database_url
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def place(self, node: str, *, name: str, status: str = "pending") -> uuid.UUID:
        """A deployment `name` with one replica on `node`, as the operator writes it."""
        rows = self.sql(
            "WITH owner AS (INSERT INTO users (name) VALUES (%s)"
            "   ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id),"
            " web AS (INSERT INTO deployments (user_id, name, container_image,"
            "   target_replicas, revision) SELECT id, %s, 'app:1', 1, 'r1' FROM owner"
            "   RETURNING id)"
            " INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, status,"
            "   revision, cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
            " SELECT web.id, nodes.id, 0, %s, 'r1', 500, 512, 0, 1, 'operator'"
            " FROM web, nodes WHERE nodes.name = %s RETURNING deployment_replicas.id",
            ("team-a", name, status, node),
        )
        return uuid.UUID(str(rows[0][0]))

    def status_of(self, replica: uuid.UUID) -> tuple[str, int]:
        """A replica's status and how many history rows it has."""
        rows = self.sql(
            "SELECT r.status::text, (SELECT count(*) FROM replica_status_history h"
            " WHERE h.replica_id = r.id) FROM deployment_replicas r WHERE r.id = %s",
            (replica,),
        )
        return str(rows[0][0]), int(rows[0][1])

    def notified_during(self, action: Callable[[], None]) -> list[str]:
        """The operator's wake-ups (`fog_deployment_changed` payloads) sent while `action` ran."""
        url = self.database_url
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as listener:
            listener.execute("LISTEN fog_deployment_changed")
            action()
            # Notifications arrive in commit order: this one comes after any `action` sent.
            listener.execute("NOTIFY fog_deployment_changed, 'end'")
            heard = []
            for notice in listener.notifies(timeout=NOTIFY_SECONDS):
                if notice.payload == "end":
                    break
                heard.append(notice.payload)
        return heard

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the server's /metrics (0 if absent)."""
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == (f"{name}{{{wanted}}}" if labels else name):
                return float(value)
        return 0.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def api(database_url: URL, tmp_path: Path) -> Iterator[AgentApi]:
    """`fogctl serve-agents` on loopback, ready (listening for notifications)."""
    port, metrics_port = ports.free_port(), ports.free_port()
    env = harness.fogctl_env(kubeconfig="/nonexistent", database_url=database_url)
    server = FogctlProcess(
        tmp_path / "agent-api.log",
        [
            *("serve-agents", "--listen", f"127.0.0.1:{port}"),
            *("--metrics-bind-address", f"127.0.0.1:{metrics_port}"),
        ],
        env,
    ).start()
    running = AgentApi(
        url=f"http://127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        database_url=database_url,
        env=env,
    )
    try:
        harness.wait_for("the agent API to be ready", lambda: _ready(running.url), START_SECONDS)
        yield running
    finally:
        server.stop()
        print((tmp_path / "agent-api.log").read_text()[-3000:])  # shown if the test failed
