"""Who may do what through the agent API: per-node tokens, refused requests leave no trace.

Against a real `fogctl serve-agents` and PostgreSQL (conftest.py). Each refusal is checked for
its status code, for nothing written (the replica's status and history rows unchanged) and for
being counted in `fog_agent_api_refused_total`.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import AgentApi

NODE_ROUTES = [
    ("POST", "/v1/heartbeat", None),
    ("GET", "/v1/assignments", None),
    ("POST", "/v1/reports", {"reports": []}),
    ("POST", "/v1/credentials/rotate", None),
]


def report(node: str, replica: uuid.UUID, status: str) -> dict[str, object]:
    return {"node": node, "replicaId": str(replica), "status": status, "reason": "test"}


def test_a_node_reads_only_its_own_assignments(api: AgentApi) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    mine, theirs = api.place("edge-a", name="web"), api.place("edge-b", name="db")

    answer = api.call("GET", "/v1/assignments", token=token_a)

    assert answer.status == 200
    assert answer.body["node"] == "edge-a"
    listed = {item["replicaId"] for item in answer.body["assignments"]}
    assert listed == {str(mine)}
    assert str(theirs) not in listed


@pytest.mark.parametrize("claimed", ["edge-b", "edge-a"])
def test_a_node_cannot_report_another_nodes_replica(api: AgentApi, claimed: str) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    mine, theirs = api.place("edge-a", name="web"), api.place("edge-b", name="db")
    before = api.status_of(theirs), api.status_of(mine)
    refused_before = api.metric("fog_agent_api_refused_total", reason="forbidden")

    # Either naming B (whose token it lacks) or claiming B's replica is on A; with a legal
    # report of its own in the same batch, which must not be written either.
    answer = api.call(
        "POST",
        "/v1/reports",
        token=token_a,
        body={"reports": [report("edge-a", mine, "starting"), report(claimed, theirs, "starting")]},
    )

    assert answer.status == 403
    assert answer.body["error"] == "forbidden"
    assert [item["replicaId"] for item in answer.body["refused"]] == [str(theirs)]
    assert (api.status_of(theirs), api.status_of(mine)) == before  # nothing recorded
    assert api.metric("fog_agent_api_refused_total", reason="forbidden") == refused_before + 1


def test_reports_move_only_along_the_state_machine(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    replica = api.place("edge-a", name="web")
    before = api.status_of(replica)

    skipped = api.call(
        "POST", "/v1/reports", token=token, body={"reports": [report("edge-a", replica, "stopped")]}
    )
    assert skipped.status == 403
    assert "pending" in skipped.body["refused"][0]["reason"]
    assert api.status_of(replica) == before

    legal = api.call(
        "POST",
        "/v1/reports",
        token=token,
        body={"reports": [report("edge-a", replica, "starting")]},
    )
    assert (legal.status, legal.body) == (200, {"accepted": 1})
    status, history = api.status_of(replica)
    assert (status, history) == ("starting", before[1] + 1)


@pytest.mark.parametrize(("method", "path", "body"), NODE_ROUTES)
@pytest.mark.parametrize("token", [None, "fogn_" + "x" * 43, "Basic abc"])
def test_without_a_valid_token_nothing_is_given(
    api: AgentApi, method: str, path: str, body: object, token: str | None
) -> None:
    api.node_token("edge-a")
    api.place("edge-a", name="web")
    unauthenticated_before = api.metric("fog_agent_api_refused_total", reason="unauthenticated")

    answer = api.call(method, path, token=token, body=body)

    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.body["error"] == "unauthenticated"
    assert "assignments" not in answer.body
    after = api.metric("fog_agent_api_refused_total", reason="unauthenticated")
    assert after == unauthenticated_before + 1


def test_a_bootstrap_token_is_good_for_one_exchange_and_nothing_else(api: AgentApi) -> None:
    bootstrap = api.register("edge-a")

    # It is not a node token: it reads nothing.
    assert api.call("GET", "/v1/assignments", token=bootstrap).status == 401
    first = api.call("POST", "/v1/credentials/exchange", token=bootstrap)
    assert first.status == 200
    assert first.body["token"].startswith("fogn_")
    second = api.call("POST", "/v1/credentials/exchange", token=bootstrap)
    assert second.status == 401
    assert api.call("POST", "/v1/heartbeat", token=first.body["token"]).status == 204


def test_a_revoked_token_is_refused_at_once(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    assert api.call("POST", "/v1/heartbeat", token=token).status == 204

    assert api.fogctl("node", "revoke", "edge-a") == "node edge-a: 1 tokens revoked\n"

    assert api.call("POST", "/v1/heartbeat", token=token).status == 401
    assert api.call("GET", "/v1/assignments", token=token).status == 401


def test_a_removed_nodes_token_stops_working(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    api.fogctl("node", "remove", "edge-a")

    assert api.call("POST", "/v1/heartbeat", token=token).status == 401
    assert api.sql("SELECT count(*) FROM node_credentials") == [(0,)]


def test_rotation_retires_the_old_token(api: AgentApi) -> None:
    old = api.node_token("edge-a")

    rotated = api.call("POST", "/v1/credentials/rotate", token=old)

    assert rotated.status == 200
    new = rotated.body["token"]
    assert new != old
    assert api.call("POST", "/v1/heartbeat", token=old).status == 401
    assert api.call("POST", "/v1/heartbeat", token=new).status == 204


def test_tokens_are_stored_only_as_digests(api: AgentApi) -> None:
    token = api.node_token("edge-a")

    stored = api.sql("SELECT token_digest FROM node_credentials")

    assert len(stored) == 1
    assert token.encode() not in bytes(stored[0][0])
    assert len(bytes(stored[0][0])) == 32


def test_a_heartbeat_renews_the_nodes_lease(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    api.sql("UPDATE node_leases SET renewed_at = now() - interval '1 hour'")

    assert api.call("POST", "/v1/heartbeat", token=token).status == 204

    [(age,)] = api.sql("SELECT extract(epoch FROM now() - renewed_at) FROM node_leases")
    assert float(age) < 60


def test_bad_bodies_are_refused_naming_the_field(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    replica = api.place("edge-a", name="web")

    answer = api.call(
        "POST", "/v1/reports", token=token, body={"reports": [report("edge-a", replica, "dancing")]}
    )

    assert answer.status == 400
    assert answer.body["message"].startswith("reports.0.status:")
    assert api.call("POST", "/v1/reports", token=token, raw=b"{not json").status == 400
    assert api.status_of(replica)[0] == "pending"


def test_requests_are_size_limited(api: AgentApi) -> None:
    token = api.node_token("edge-a")

    answer = api.call("POST", "/v1/reports", token=token, raw=b" " * (5 * 1024 * 1024))

    assert answer.status == 413
    assert api.metric("fog_agent_api_refused_total", reason="too_large") >= 1


def test_requests_are_rate_limited_per_node(api: AgentApi) -> None:
    token_a, token_b = api.node_token("edge-a"), api.node_token("edge-b")

    codes = [api.call("POST", "/v1/heartbeat", token=token_a).status for _ in range(80)]

    assert set(codes) == {204, 429}
    assert codes.index(429) >= 40  # the burst is allowed first
    limited = api.call("POST", "/v1/heartbeat", token=token_a)
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    # Another node's budget is its own.
    assert api.call("POST", "/v1/heartbeat", token=token_b).status == 204


def test_guessing_tokens_is_stopped_before_it_costs_lookups(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    guesses = [
        api.call("POST", "/v1/heartbeat", token=f"fogn_guess{n:039d}").status for n in range(40)
    ]

    assert set(guesses) == {401, 429}
    assert guesses.index(429) >= 20  # a few mistakes are forgiven
    # The address is blocked for a while, even with a valid token.
    assert api.call("POST", "/v1/heartbeat", token=token).status == 429
