"""Usage samples through the agent API: who may send them, what is kept, and what is refused.

Against a real `fogctl serve-agents` and PostgreSQL (conftest.py). A batch is recorded whole
(the replica's latest sample and the hour's rollups per deployment and per node) or refused
whole, naming each bad sample, with nothing written.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import AgentApi


def sample(node: str, replica: uuid.UUID, cpu: float, memory: int) -> dict[str, object]:
    return {"node": node, "replicaId": str(replica), "cpuCores": cpu, "memoryMB": memory}


def send(api: AgentApi, token: str, *samples: dict[str, object]) -> Any:
    return api.call("POST", "/v1/usage", token=token, body={"samples": list(samples)})


def kept(
    api: AgentApi,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The latest samples, then the deployment and node rollups (names, not ids)."""
    latest = api.sql(
        "SELECT r.ordinal, d.name, u.cpu_millicores, u.memory_mb FROM replica_usage u"
        " JOIN deployment_replicas r ON r.id = u.replica_id"
        " JOIN deployments d ON d.id = u.deployment_id ORDER BY d.name"
    )
    by_deployment = api.sql(
        "SELECT d.name, h.samples, h.cpu_millicores_sum, h.cpu_millicores_max,"
        " h.memory_mb_sum, h.memory_mb_max, h.hour = date_trunc('hour', now())"
        " FROM deployment_usage_hourly h JOIN deployments d ON d.id = h.deployment_id"
        " ORDER BY d.name"
    )
    by_node = api.sql(
        "SELECT n.name, h.samples, h.cpu_millicores_sum, h.cpu_millicores_max,"
        " h.memory_mb_sum, h.memory_mb_max FROM node_usage_hourly h"
        " JOIN nodes n ON n.id = h.node_id ORDER BY n.name"
    )
    return latest, by_deployment, by_node


def test_samples_keep_the_latest_per_replica_and_fold_into_hourly_rollups(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    web = api.place("edge-a", name="web", status="running")
    db = api.place("edge-a", name="db", status="running")

    first = send(api, token, sample("edge-a", web, 0.25, 300), sample("edge-a", db, 1.5, 1000))
    second = send(api, token, sample("edge-a", web, 0.125, 400))

    assert (first.status, first.body, second.status, second.body) == (
        200,
        {"accepted": 2},
        200,
        {"accepted": 1},
    )
    latest, by_deployment, by_node = kept(api)
    assert latest == [(0, "db", 1500, 1000), (0, "web", 125, 400)]
    assert by_deployment == [
        ("db", 1, 1500, 1500, 1000, 1000, True),
        ("web", 2, 375, 250, 700, 400, True),  # sums add, maxima keep the larger
    ]
    assert by_node == [("edge-a", 3, 1875, 1500, 1700, 1000)]


@pytest.mark.parametrize("claimed", ["edge-b", "edge-a"])
def test_a_node_cannot_send_usage_of_another_nodes_replica(api: AgentApi, claimed: str) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    mine = api.place("edge-a", name="web", status="running")
    theirs = api.place("edge-b", name="db", status="running")
    refused_before = api.metric("fog_agent_api_refused_total", reason="forbidden")

    # Naming B (whose token A lacks), or claiming B's replica is on A; with a legal sample of
    # its own in the batch, which must not be recorded either.
    answer = send(api, token_a, sample("edge-a", mine, 0.5, 100), sample(claimed, theirs, 0.5, 100))

    assert answer.status == 403
    assert answer.body["message"] == "1 of 2 samples refused; nothing was written"
    assert [item["replicaId"] for item in answer.body["refused"]] == [str(theirs)]
    assert kept(api) == ([], [], [])
    assert api.metric("fog_agent_api_refused_total", reason="forbidden") == refused_before + 1


def test_only_running_replicas_within_their_nodes_capacity_have_usage(api: AgentApi) -> None:
    token = api.node_token("edge-a")  # 4 cores, 8,192 MB
    running = api.place("edge-a", name="web", status="running")
    pending = api.place("edge-a", name="db", status="pending")

    answer = send(
        api,
        token,
        sample("edge-a", running, 0.5, 100),
        sample("edge-a", pending, 0.5, 100),
        sample("edge-a", uuid.uuid4(), 0.5, 100),
        sample("edge-a", running, 4.5, 100),
    )

    assert answer.status == 403
    reasons = [item["reason"] for item in answer.body["refused"]]
    assert reasons == [
        "replica is pending, not running: only running replicas have usage",
        "unknown replica",
        "usage (4.5 cores, 100 MB) is more than the node has (4 cores, 8192 MB)",
    ]
    assert kept(api) == ([], [], [])


def test_a_malformed_sample_is_refused_naming_the_field(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")

    answer = send(api, token, {**sample("edge-a", running, 0.5, 100), "memoryMB": -1})

    assert answer.status == 400
    assert answer.body["message"].startswith("samples.0.memoryMB:")
    assert kept(api) == ([], [], [])


def test_samples_wake_no_reconcile(api: AgentApi) -> None:
    """Status usage is refreshed by reconciles that happen anyway, never per sample."""
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")

    def samples() -> None:
        for cpu in (0.5, 0.75):
            assert send(api, token, sample("edge-a", running, cpu, 100)).status == 200

    assert api.notified_during(samples) == []
