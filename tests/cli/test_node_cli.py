"""`fogctl node ...` end to end, as a person runs it: real processes, a real server."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL
from test_db_cli import _assert_one_line_error, _url, fogctl


def node(url: URL, *args: str) -> subprocess.CompletedProcess[str]:
    """`fogctl node ARGS --database-url URL`, which must succeed."""
    result = fogctl("node", *args, "--database-url", _url(url))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result


def register(url: URL, name: str, cpu: str, memory_mb: str, storage_gb: str, *more: str) -> str:
    """`fogctl node register`; its output."""
    flags = ("--cpu", cpu, "--memory-mb", memory_mb, "--storage-gb", storage_gb, *more)
    return node(url, "register", name, *flags).stdout


def listed(url: URL) -> dict[str, dict[str, Any]]:
    """`fogctl node list -o json`, by node name."""
    return {n["name"]: n for n in json.loads(node(url, "list", "-o", "json").stdout)["nodes"]}


def place_a_replica(url: URL, on: str) -> None:
    """A running replica of 1 core, 1 GiB, 10 GB on node `on`, as the operator would write."""
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as connection:
        connection.execute(
            "WITH owner AS (INSERT INTO users (name) VALUES ('team-a') RETURNING id),"
            " web AS (INSERT INTO deployments (user_id, name, container_image,"
            "   target_replicas, revision) SELECT id, 'web', 'app:1', 1, 'r1' FROM owner"
            "   RETURNING id)"
            " INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, status,"
            "   revision, cpu_millicores, memory_mb, gpu_units, storage_gb, status_actor)"
            " SELECT web.id, nodes.id, 0, 'running', 'r1', 1000, 1024, 0, 10, 'test'"
            " FROM web, nodes WHERE nodes.name = %s",
            (on,),
        )


def test_register_prints_a_new_one_time_bootstrap_token_each_time(database_url: URL) -> None:
    printed = [
        json.loads(register(database_url, "edge-1", "4", "8192", "100", "-o", "json"))
        for _ in range(2)
    ]
    assert [p["name"] for p in printed] == ["edge-1", "edge-1"]
    assert all(p["bootstrapToken"].startswith("fogb_") for p in printed)
    assert printed[0]["bootstrapToken"] != printed[1]["bootstrapToken"]
    assert printed[0]["expiresInSeconds"] == 24 * 3600


def test_register_and_list(database_url: URL) -> None:
    labels = ("--label", "zone=eu-west", "--label", "tier=edge")
    registered = register(database_url, "edge-1", "4", "8192", "100", "--gpu", "1", *labels)
    first, second = registered.splitlines()
    assert first == "node edge-1 registered"
    assert second.startswith("bootstrap token (shown once, valid 24 h for one exchange): fogb_")
    register(database_url, "edge-2", "0.5", "512", "1")

    nodes = listed(database_url)
    assert sorted(nodes) == ["edge-1", "edge-2"]
    edge = nodes["edge-1"]
    assert (edge["status"], edge["cordoned"], edge["draining"]) == ("online", False, False)
    assert edge["labels"] == {"zone": "eu-west", "tier": "edge"}
    assert edge["capacity"] == {"cpuCores": 4.0, "memoryMB": 8192, "gpuUnits": 1, "storageGB": 100}
    assert edge["allocated"] == {"cpuCores": 0.0, "memoryMB": 0, "gpuUnits": 0, "storageGB": 0}
    assert edge["lastHeartbeatAt"] is not None  # registering is a heartbeat
    assert nodes["edge-2"]["capacity"]["cpuCores"] == 0.5

    table = node(database_url, "list").stdout.splitlines()
    assert table[0].split() == [
        *("NAME", "STATUS", "CPU", "MEMORY(MB)", "GPU", "STORAGE(GB)", "HEARTBEAT", "LABELS")
    ]
    first = table[1].split()
    assert first[:6] == ["edge-1", "online", "0/4", "0/8192", "0/1", "0/100"]
    assert first[-1] == "tier=edge,zone=eu-west"
    assert table[2].split()[-1] == "<none>"

    # Registering again updates capacity and replaces the labels.
    register(database_url, "edge-2", "2", "1024", "5")
    again = listed(database_url)["edge-2"]
    assert (again["capacity"]["cpuCores"], again["labels"]) == (2.0, {})


def test_cordon_uncordon_drain_remove(database_url: URL) -> None:
    for name in ("edge-1", "edge-2"):
        register(database_url, name, "4", "8192", "100")
    place_a_replica(database_url, on="edge-1")

    assert node(database_url, "cordon", "edge-1").stdout == "node edge-1 cordoned\n"
    edge = listed(database_url)["edge-1"]
    assert (edge["cordoned"], edge["draining"]) == (True, False)
    assert node(database_url, "list").stdout.splitlines()[1].split()[1] == "online,cordoned"
    assert node(database_url, "uncordon", "edge-1").stdout == "node edge-1 uncordoned\n"
    assert listed(database_url)["edge-1"]["cordoned"] is False

    drained = node(database_url, "drain", "edge-1")
    assert drained.stdout == "node edge-1 cordoned and draining (1 deployments move)\n"
    edge = listed(database_url)["edge-1"]
    assert (edge["cordoned"], edge["draining"]) == (True, True)
    assert edge["allocated"]["cpuCores"] == 1.0
    node(database_url, "uncordon", "edge-1")  # ends the drain too
    edge = listed(database_url)["edge-1"]
    assert (edge["cordoned"], edge["draining"]) == (False, False)

    assert node(database_url, "remove", "edge-2").stdout == "node edge-2 removed\n"
    busy = fogctl("node", "remove", "edge-1", "--database-url", _url(database_url))
    _assert_one_line_error(busy, "node edge-1 still holds 1 replicas", "--force")
    assert sorted(listed(database_url)) == ["edge-1"]
    forced = node(database_url, "remove", "edge-1", "--force")
    assert forced.stdout == "node edge-1 removed (1 replicas failed)\n"
    assert listed(database_url) == {}


@pytest.mark.parametrize("action", ["cordon", "uncordon", "drain", "remove"])
def test_unknown_node_is_one_line(database_url: URL, action: str) -> None:
    result = fogctl("node", action, "nowhere", "--database-url", _url(database_url))
    _assert_one_line_error(result, "no node named 'nowhere'")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["list"], "invalid database URL"),
        (["cordon", "edge-1"], "invalid database URL"),
        (["register", "e", "--cpu", "1", "--memory-mb", "1", "--storage-gb", "1"], "invalid"),
    ],
)
def test_bad_database_url_is_one_line(args: list[str], fragment: str) -> None:
    _assert_one_line_error(fogctl("node", *args, "--database-url", "not a url"), fragment)


def test_unreachable_database_is_one_line(database_url: URL) -> None:
    closed = _url(database_url.set(port=1))  # port 1 (tcpmux) is never a PostgreSQL server
    _assert_one_line_error(fogctl("node", "list", "--database-url", closed), "cannot reach")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cpu", "-1"], "argument --cpu: must be >= 0, got -1"),
        (["--cpu", "lots"], "argument --cpu: not a number: 'lots'"),
        (["--cpu", "nan"], "argument --cpu: must be a finite number, got 'nan'"),
        (["--gpu", "1.5"], "argument --gpu: not a whole number: '1.5'"),
        (["--label", "zone"], "argument --label: labels are KEY=VALUE, got 'zone'"),
    ],
)
def test_bad_flag_value_is_refused_before_anything_runs(flags: list[str], message: str) -> None:
    required = {"--cpu": "1", "--memory-mb": "512", "--storage-gb": "1"}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        required[flag] = value
    args = [part for pair in required.items() for part in pair]
    # No database URL at all: the flag is refused before one is looked for.
    result = fogctl("node", "register", "edge-1", *args)
    assert result.returncode == 2  # argparse's usage error
    # One line: no traceback, and no usage block burying it.
    assert result.stderr.splitlines() == [f"fogctl node register: error: {message}"]
    assert result.stdout == ""
