"""`fogctl top` as a person runs it: bad input is one line, and the figures add up per node.

The end-to-end test (tests/kube/test_usage_e2e.py) shows samples from a simulated agent; here
the rows are written directly, so the sums and percentages can be stated exactly.
"""

from __future__ import annotations

import json

import psycopg
from sqlalchemy.engine import URL
from test_db_cli import _assert_one_line_error, _url, fogctl
from test_node_cli import register

# Two running replicas of 0.5 cores and 512 MB on edge-a, one sampled, one not yet; a third
# replica in another namespace, stopped: its last sample is history, not use.
_ROWS = (
    "WITH owner AS (INSERT INTO users (name) VALUES ('team-a'), ('team-b') RETURNING id, name),"
    " web AS (INSERT INTO deployments (user_id, name, container_image, target_replicas,"
    "   revision) SELECT id, CASE name WHEN 'team-a' THEN 'web' ELSE 'db' END, 'app:1', 2, 'r1'"
    "   FROM owner RETURNING id, name),"
    " placed AS (INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, status,"
    "   revision, cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
    "   SELECT web.id, nodes.id, o, CASE web.name WHEN 'web' THEN 'running' ELSE 'stopped' END"
    "   ::replicastatus, 'r1', 500, 512, 0, 1, 'operator'"
    "   FROM web, nodes, generate_series(0, 1) o"
    "   WHERE nodes.name = 'edge-a' AND (web.name = 'web' OR o = 0)"
    "   RETURNING id, deployment_id, node_id, ordinal)"
    " INSERT INTO replica_usage (replica_id, deployment_id, node_id, cpu_millicores, memory_mb)"
    " SELECT id, deployment_id, node_id, 250, 128 FROM placed WHERE ordinal = 0"
)


def test_a_kind_top_does_not_know_is_one_line() -> None:
    result = fogctl("top", "pods")

    _assert_one_line_error(result, "expected deployments or nodes, got 'pods'", code=2, prefix="")


def test_top_sums_running_replicas_against_requests_and_capacity(database_url: URL) -> None:
    url = _url(database_url)
    register(database_url, "edge-a", "4", "8192", "100")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(_ROWS.encode())

    deployments = json.loads(
        fogctl("top", "deployments", "-o", "json", "--database-url", url).stdout
    )
    nodes = json.loads(
        fogctl("top", "nodes", "-n", "team-a", "-o", "json", "--database-url", url).stdout
    )
    table = fogctl("top", "nodes", "--database-url", url).stdout.splitlines()

    by_name = {row["name"]: row for row in deployments["deployments"]}
    assert by_name["web"]["usage"] == {"cpuCores": 0.25, "memoryMB": 128}
    assert by_name["web"]["requests"] == {"cpuCores": 1.0, "memoryMB": 1024}
    assert (by_name["web"]["runningReplicas"], by_name["web"]["sampledReplicas"]) == (2, 1)
    assert by_name["db"]["usage"] == {"cpuCores": 0.0, "memoryMB": 0}
    assert by_name["db"]["sampledAt"] is None
    (node,) = nodes["nodes"]
    assert node["capacity"] == {"cpuCores": 4.0, "memoryMB": 8192}
    assert node["usage"] == {"cpuCores": 0.25, "memoryMB": 128}
    assert table[1].split() == ["edge-a", "2", "1", "0.25", "25%", "128", "12%", "6%", "1%"]
