"""The stream (`/v1/stream`) and the long-poll: placements pushed, revocations at once.

One WebSocket speaks for several nodes, each authorized by its own token; these tests drive it
as a multiplexing agent would, against a real server and database (conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import aiohttp
import psycopg
from conftest import AgentApi, Answer

# Something pushed arrives in milliseconds; a test waits this long before calling it missing.
PUSH_TIMEOUT_SECONDS = 30.0


class Client:
    """A stream and the messages received on it, by op."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket

    async def send(self, **body: Any) -> None:
        await self.socket.send_str(json.dumps(body))

    async def next(self, op: str, **match: Any) -> dict[str, Any]:
        """The next message with this op (and these fields), skipping others."""
        async with asyncio.timeout(PUSH_TIMEOUT_SECONDS):
            while True:
                message = json.loads((await self.socket.receive()).data)
                if message.get("op") == op and all(message.get(k) == v for k, v in match.items()):
                    return message


async def _stream(api: AgentApi, work: Any) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{api.url}/v1/stream") as ws:
        await work(Client(ws))


def run(api: AgentApi, work: Any) -> None:
    asyncio.run(_stream(api, work))


def ids(message: dict[str, Any]) -> set[str]:
    return {item["replicaId"] for item in message["assignments"]}


def test_one_stream_speaks_for_each_node_whose_token_it_presents(api: AgentApi) -> None:
    token_a, token_b = api.node_token("edge-a"), api.node_token("edge-b")
    on_a = api.place("edge-a", name="web")

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a, token_b, "fogn_" + "x" * 43])
        welcome = await client.next("welcome")
        assert (welcome["nodes"], welcome["refused"]) == (["edge-a", "edge-b"], 1)
        assert ids(await client.next("assignments", node="edge-a")) == {str(on_a)}
        assert ids(await client.next("assignments", node="edge-b")) == set()

        # A placement is pushed to its node's stream, without the agent asking.
        on_b = await asyncio.to_thread(api.place, "edge-b", name="db")
        assert ids(await client.next("assignments", node="edge-b")) == {str(on_b)}

        await client.send(op="heartbeat")
        assert (await client.next("heartbeat"))["renewed"] == 2

    run(api, work)


def test_a_stream_cannot_report_for_a_node_it_has_no_token_for(api: AgentApi) -> None:
    token_a, _ = api.node_token("edge-a"), api.node_token("edge-b")
    theirs = api.place("edge-b", name="db")
    before = api.status_of(theirs)

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a])
        await client.next("welcome")
        report = {"node": "edge-b", "replicaId": str(theirs), "status": "starting", "reason": "x"}
        await client.send(op="report", id=7, reports=[report])
        refused = await client.next("refused", id=7)
        assert refused["error"] == "forbidden"
        assert [item["replicaId"] for item in refused["refused"]] == [str(theirs)]

    run(api, work)
    assert api.status_of(theirs) == before


def test_a_report_on_the_stream_is_written_and_answered(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    mine = api.place("edge-a", name="web")

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token])
        await client.next("assignments", node="edge-a")
        report = {"node": "edge-a", "replicaId": str(mine), "status": "starting", "reason": "x"}
        await client.send(op="report", id=1, reports=[report])
        assert (await client.next("reported", id=1))["accepted"] == 1

    run(api, work)
    assert api.status_of(mine)[0] == "starting"


def test_a_reported_refresh_sends_only_the_lists_the_streams_own_reports_touched(
    api: AgentApi,
) -> None:
    """The periodic refresh reads again only what the agent itself changed, and only once."""
    token_a, token_b = api.node_token("edge-a"), api.node_token("edge-b")
    mine = api.place("edge-a", name="web")

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a, token_b])
        await client.next("assignments", node="edge-a")
        await client.next("assignments", node="edge-b")
        report = {"node": "edge-a", "replicaId": str(mine), "status": "starting", "reason": "x"}
        await client.send(op="report", id=1, reports=[report])
        await client.next("reported", id=1)

        await client.send(op="refresh", scope="reported")
        again = await client.next("assignments")
        assert again["node"] == "edge-a"
        assert [item["status"] for item in again["assignments"]] == ["starting"]

        # Read once since the report: nothing is due now. A placement on edge-b is pushed
        # after it; had the refresh sent a list, that would have come first.
        await client.send(op="refresh", scope="reported")
        await client.send(op="heartbeat")
        await client.next("heartbeat")
        placed = await asyncio.to_thread(api.place, "edge-b", name="db")
        pushed = await client.next("assignments")
        assert (pushed["node"], ids(pushed)) == ("edge-b", {str(placed)})

    run(api, work)


def test_a_revoked_token_is_dropped_from_its_stream_at_once(api: AgentApi) -> None:
    token_a, token_b = api.node_token("edge-a"), api.node_token("edge-b")

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a, token_b])
        await client.next("welcome")
        await asyncio.to_thread(api.fogctl, "node", "revoke", "edge-a")
        # Pushed by the revocation itself, not found at the next heartbeat.
        assert (await client.next("revoked"))["nodes"] == ["edge-a"]
        await client.send(op="heartbeat")
        assert (await client.next("heartbeat"))["renewed"] == 1
        placed = await asyncio.to_thread(api.place, "edge-a", name="web")
        await client.send(op="refresh")
        refreshed = await client.next("assignments")
        assert refreshed["node"] == "edge-b"  # nothing of edge-a any more
        assert str(placed) not in ids(refreshed)

    run(api, work)


def test_a_hello_answered_during_a_heartbeat_keeps_its_nodes(api: AgentApi) -> None:
    """A heartbeat in flight judges only the nodes it asked about, not ones added meanwhile."""
    token_a, token_b = api.node_token("edge-a"), api.node_token("edge-b")
    url = api.database_url
    holder = psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)

    async def work(client: Client) -> None:
        await client.send(op="hello", tokens=[token_a])
        assert (await client.next("welcome"))["nodes"] == ["edge-a"]
        # edge-a's lease row held: the heartbeat waits on it in the database.
        holder.execute(
            "SELECT 1 FROM node_leases WHERE node_id ="
            " (SELECT id FROM nodes WHERE name = 'edge-a') FOR UPDATE"
        )
        await client.send(op="heartbeat")
        await asyncio.to_thread(_until_waiting_on_a_lock, api)
        await client.send(op="hello", tokens=[token_b])
        assert (await client.next("welcome"))["nodes"] == ["edge-b"]
        holder.rollback()
        assert (await client.next("heartbeat"))["renewed"] == 1
        await client.send(op="heartbeat")
        # Dropped as revoked before the fix: the heartbeat answered {edge-a} for {edge-a, edge-b}.
        assert (await client.next("heartbeat"))["renewed"] == 2

    try:
        run(api, work)
    finally:
        holder.close()


def _until_waiting_on_a_lock(api: AgentApi) -> None:
    deadline = time.monotonic() + PUSH_TIMEOUT_SECONDS
    while not api.sql("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
        assert time.monotonic() < deadline, "the heartbeat never reached the held row"
        time.sleep(0.05)


def test_a_malformed_op_is_refused_naming_the_field(api: AgentApi) -> None:
    async def work(client: Client) -> None:
        await client.send(op="report", id="seven", reports=[])
        refused = await client.next("refused")
        assert refused["error"] == "invalid"
        assert "id" in refused["message"]
        assert refused["id"] is None  # no usable id to answer
        # A usable id is answered, so that the agent is not left waiting for its reply.
        await client.send(op="report", id=7, reports="many")
        refused = await client.next("refused")
        assert (refused["id"], refused["error"]) == (7, "invalid")
        assert "reports" in refused["message"]
        await client.socket.send_str("{not json")
        assert (await client.next("refused"))["message"] == "not JSON"

    run(api, work)
    assert api.metric("fog_agent_api_refused_total", reason="invalid") == 3


def test_a_long_poll_is_answered_when_its_node_gets_work(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    answers: list[Answer] = []
    poll = threading.Thread(
        target=lambda: answers.append(api.call("GET", "/v1/assignments?wait=50", token=token))
    )
    started = time.monotonic()
    poll.start()
    time.sleep(1)  # the poll is waiting: its node has nothing to do
    assert poll.is_alive()

    placed = api.place("edge-a", name="web")
    poll.join(PUSH_TIMEOUT_SECONDS)

    assert not poll.is_alive()
    assert time.monotonic() - started < 50  # woken by the placement, not by the wait running out
    [answer] = answers
    assert answer.status == 200
    assert {item["replicaId"] for item in answer.body["assignments"]} == {str(placed)}


def test_a_long_poll_answers_at_once_when_work_is_waiting(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    placed = api.place("edge-a", name="web")
    started = time.monotonic()

    answer = api.call("GET", "/v1/assignments?wait=50", token=token)

    assert time.monotonic() - started < 50
    assert answer.body["assignments"][0]["replicaId"] == str(placed)
    assert answer.body["assignments"][0]["status"] == "pending"
    assert uuid.UUID(answer.body["assignments"][0]["replicaId"])
    bad = api.call("GET", "/v1/assignments?wait=600", token=token)
    assert (bad.status, bad.body["error"]) == (400, "invalid")
