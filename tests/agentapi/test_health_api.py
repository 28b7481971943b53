"""Health reports through the agent API (issue 16 item 1): who may send them, what is kept.

Against a real `fogctl serve-agents` and PostgreSQL (conftest.py). A batch is recorded whole
(each replica's health, reason and since when, and a history row per change) or refused whole,
naming each bad report, with nothing written; over a request and over the stream alike.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import AgentApi
from test_stream import Client, run


def health(node: str, replica: uuid.UUID, verdict: str, reason: str) -> dict[str, object]:
    return {"node": node, "replicaId": str(replica), "health": verdict, "reason": reason}


def send(api: AgentApi, token: str, *reports: dict[str, object]) -> Any:
    return api.call("POST", "/v1/health", token=token, body={"reports": list(reports)})


def recorded(api: AgentApi, replica: uuid.UUID) -> tuple[Any, ...]:
    """The replica's health, reason, and whether health_since is set."""
    (row,) = api.sql(
        "SELECT health::text, health_reason, health_since IS NOT NULL"
        " FROM deployment_replicas WHERE id = %s",
        (replica,),
    )
    return row


def health_history(api: AgentApi, replica: uuid.UUID) -> list[tuple[Any, ...]]:
    """The replica's history rows that changed its health, oldest first."""
    return api.sql(
        "SELECT old_status::text, new_status::text, old_health::text, new_health::text, actor,"
        " reason FROM replica_status_history WHERE replica_id = %s"
        " AND old_health IS DISTINCT FROM new_health ORDER BY changed_at",
        (replica,),
    )


def test_health_changes_are_kept_and_recorded_in_the_replicas_history(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    web = api.place("edge-a", name="web", status="running")

    answers = [
        send(api, token, health("edge-a", web, "healthy", "http check passed")),
        send(api, token, health("edge-a", web, "healthy", "http check passed again")),
        send(api, token, health("edge-a", web, "unhealthy", "http check failed 3 times")),
    ]

    assert [(a.status, a.body) for a in answers] == [(200, {"accepted": 1})] * 3
    assert recorded(api, web) == ("unhealthy", "http check failed 3 times", True)
    # A repeated verdict is no transition: two rows, each naming the agent and its reason.
    assert health_history(api, web) == [
        ("running", "running", None, "healthy", "agent:edge-a", "http check passed"),
        ("running", "running", "healthy", "unhealthy", "agent:edge-a", "http check failed 3 times"),
    ]


@pytest.mark.parametrize("claimed", ["edge-b", "edge-a"])
def test_a_node_cannot_report_the_health_of_another_nodes_replica(
    api: AgentApi, claimed: str
) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    mine = api.place("edge-a", name="web", status="running")
    theirs = api.place("edge-b", name="db", status="running")

    # Naming B (whose token A lacks), or claiming B's replica is on A; with a legal report of
    # its own in the batch, which must not be recorded either.
    answer = send(
        api,
        token_a,
        health("edge-a", mine, "healthy", "ok"),
        health(claimed, theirs, "unhealthy", "down"),
    )

    assert answer.status == 403
    assert answer.body["message"] == "1 of 2 health reports refused; nothing was written"
    assert [item["replicaId"] for item in answer.body["refused"]] == [str(theirs)]
    assert recorded(api, mine) == recorded(api, theirs) == (None, None, False)


def test_only_running_replicas_have_a_health(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")
    starting = api.place("edge-a", name="db", status="starting")

    answer = send(
        api,
        token,
        health("edge-a", running, "healthy", "ok"),
        health("edge-a", starting, "healthy", "ok"),
        health("edge-a", uuid.uuid4(), "healthy", "ok"),
        health("edge-a", running, "unhealthy", "twice"),
    )

    assert answer.status == 403
    assert [item["reason"] for item in answer.body["refused"]] == [
        "replica is starting, not running: only running replicas have a health",
        "unknown replica",
        "a second health report for the replica in one batch",
    ]
    assert recorded(api, running) == (None, None, False)


def test_a_malformed_health_report_is_refused_naming_the_field(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")

    answer = send(api, token, health("edge-a", running, "sick", "?"))

    assert answer.status == 400
    assert answer.body["message"].startswith("reports.0.health:")
    assert recorded(api, running) == (None, None, False)


def test_a_health_change_wakes_the_deployments_reconcile_and_a_repeat_does_not(
    api: AgentApi,
) -> None:
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")
    (deployment,) = api.sql(
        "SELECT deployment_id::text FROM deployment_replicas WHERE id = %s", (running,)
    )

    def reports() -> None:
        for reason in ("first", "repeated"):
            assert send(api, token, health("edge-a", running, "healthy", reason)).status == 200

    assert api.notified_during(reports) == [deployment[0]]


def test_the_assignment_carries_the_health_check_and_the_recorded_health(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    running = api.place("edge-a", name="web", status="running")
    check = {"tcp": {"port": 80}, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 2}
    api.sql(
        "UPDATE deployments SET health_check = %s::jsonb WHERE name = 'web'", (json.dumps(check),)
    )
    assert send(api, token, health("edge-a", running, "healthy", "ok")).status == 200

    answer = api.call("GET", "/v1/assignments", token=token)

    (item,) = answer.body["assignments"]
    assert (item["healthCheck"], item["health"]) == (check, "healthy")


def test_health_on_the_stream_is_recorded_for_its_nodes_only(api: AgentApi) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    mine = api.place("edge-a", name="web", status="running")
    theirs = api.place("edge-b", name="db", status="running")

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a])
        await client.next("welcome")
        ok = health("edge-a", mine, "unhealthy", "exec check failed")
        await client.send(op="health", id=1, reports=[ok])
        assert (await client.next("recorded", id=1))["accepted"] == 1
        await client.send(op="health", id=2, reports=[health("edge-b", theirs, "healthy", "x")])
        refused = await client.next("refused", id=2)
        assert refused["error"] == "forbidden"
        assert [item["replicaId"] for item in refused["refused"]] == [str(theirs)]

    run(api, work)
    assert recorded(api, mine) == ("unhealthy", "exec check failed", True)
    assert recorded(api, theirs) == (None, None, False)
