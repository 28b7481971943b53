"""The simulated agent's stream session against a scripted server: what it sends, and when."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import pytest
from model_builders import assignment

from controller.agent import simulate
from controller.agent.simulate import HEARTBEAT_MIN_SECONDS, RATE_LIMITED, Session
from controller.agent.wire import assignment_out
from controller.model.simulation import NodeView, Simulator
from controller.model.states import ReplicaStatus

# A tick far shorter than the heartbeat floor: what the agent does at each one shows at once.
TICK_SECONDS = 0.01
# Long enough for a round of reports and its answers on a loaded machine; the waits below end
# as soon as what they wait for is seen.
WAIT_SECONDS = 5.0
# A start delay the tests wait out in full: short, but far longer than a pass of the agent.
START_DELAY = 0.05


@dataclass
class Message:
    data: str
    type: aiohttp.WSMsgType = aiohttp.WSMsgType.TEXT


class Server:
    """A stand-in for the stream's socket: records ops and answers them as `answer` says."""

    def __init__(self, answer: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        self.sent: list[dict[str, Any]] = []
        self._answer = answer
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._sent_more = asyncio.Event()

    async def send_str(self, text: str) -> None:
        body = json.loads(text)
        self.sent.append(body)
        self._sent_more.set()
        reply = self._answer(body)
        if reply is not None:
            self.push({**reply, "id": body.get("id")})

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            yield await self._incoming.get()

    def push(self, body: dict[str, Any]) -> None:
        """A message from the server: an answer, or one it sends without being asked."""
        self._incoming.put_nowait(Message(json.dumps(body)))

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [body for body in self.sent if body["op"] == name]

    async def until(self, name: str, count: int) -> None:
        """Until the agent has sent `count` ops named `name`."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.ops(name)) < count:
                self._sent_more.clear()
                await self._sent_more.wait()


def pending(node: str) -> NodeView:
    view = NodeView()
    replica = uuid.uuid4()
    view.items[replica] = assignment(replica, ReplicaStatus.PENDING, node)
    return view


@contextlib.asynccontextmanager
async def session_with(
    server: Server,
    views: dict[str, NodeView],
    tick: float = TICK_SECONDS,
    start_delay: float = 0.0,  # none: pending -> starting -> running in two rounds of one pass
) -> AsyncIterator[None]:
    session = Session(
        cast(aiohttp.ClientWebSocketResponse, server),
        simulator=Simulator(start_delay=start_delay),
        views=views,
        tick=tick,
    )
    task = asyncio.create_task(session.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_rate_limited_report_is_sent_again_after_the_wait_the_server_names() -> None:
    refusals = [{"op": "refused", "error": RATE_LIMITED, "message": "x", "retryAfter": 0.05}]

    def answer(body: dict[str, Any]) -> dict[str, Any] | None:
        if body["op"] != "report":
            return None
        return refusals.pop() if refusals else {"op": "reported", "accepted": 1}

    server = Server(answer)
    async with session_with(server, {"edge-1": pending("edge-1")}):
        await server.until("report", 3)
    first, again, second = server.ops("report")[:3]
    assert again["reports"] == first["reports"]  # the same batch, not dropped
    assert again["id"] != first["id"]
    assert [r["status"] for r in first["reports"] + second["reports"]] == ["starting", "running"]
    assert server.ops("refresh") == []  # nothing was stale: no list needed again


async def test_a_refused_round_is_not_followed_by_the_round_that_moves_on_from_it() -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any] | None:
        if body["op"] != "report":
            return None
        return {"op": "refused", "error": "forbidden", "message": "stale", "refused": []}

    server = Server(answer)
    async with session_with(server, {"edge-1": pending("edge-1")}):
        await server.until("refresh", 2)  # two ticks' worth
    sent = [r["status"] for body in server.ops("report") for r in body["reports"]]
    assert sent[0] == "starting"
    assert set(sent) == {"starting"}  # never `running` on a refused `starting`
    # After a refusal every list again: what the agent did wrong is not the server's to know.
    assert all("scope" not in body for body in server.ops("refresh"))


async def test_the_periodic_refresh_asks_only_for_the_lists_its_reports_touched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(simulate, "REFRESH_SECONDS", 0.0)  # at every heartbeat
    monkeypatch.setattr(simulate, "HEARTBEAT_MIN_SECONDS", TICK_SECONDS)
    server = Server(lambda body: None)
    async with session_with(server, {}):
        await server.until("refresh", 2)
    assert [body.get("scope") for body in server.ops("refresh")[:2]] == ["reported"] * 2


async def test_a_short_tick_does_not_heartbeat_more_often_than_the_floor() -> None:
    server = Server(lambda body: None)
    began = time.monotonic()
    async with session_with(server, {}):
        await asyncio.sleep(HEARTBEAT_MIN_SECONDS * 0.6)
    elapsed = time.monotonic() - began
    # The first at once, then one per floor, however many ticks passed (some 30 here).
    assert 1 <= len(server.ops("heartbeat")) <= 1 + elapsed // HEARTBEAT_MIN_SECONDS


async def test_a_list_sent_again_unchanged_is_not_parsed_again_and_wakes_nothing() -> None:
    # A tick longer than the test: only a list that changes something makes the agent act
    # before it. `first` may go on to running once START_DELAY has passed, at the next pass.
    server = Server(lambda body: {"op": "reported", "accepted": 1} if "reports" in body else None)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    listed = [
        assignment_out(assignment(first, ReplicaStatus.PENDING)),
        assignment_out(assignment(second, ReplicaStatus.RUNNING)),
    ]
    views: dict[str, NodeView] = {}
    async with session_with(server, views, tick=60.0, start_delay=START_DELAY):
        server.push({"op": "assignments", "node": "edge-1", "assignments": listed})
        await server.until("report", 1)  # first: starting
        parsed = views["edge-1"].items[second]
        await asyncio.sleep(START_DELAY * 2)
        server.push({"op": "assignments", "node": "edge-1", "assignments": listed})
        await asyncio.sleep(0.2)  # a pass it set off would report first as running
        assert len(server.ops("report")) == 1
        assert views["edge-1"].items[second] is parsed  # not parsed again
        pending = [assignment_out(assignment(third, ReplicaStatus.PENDING))]
        server.push({"op": "assignments", "node": "edge-1", "assignments": listed + pending})
        await server.until("report", 2)
    reported = {(r["replicaId"], r["status"]) for r in server.ops("report")[1]["reports"]}
    assert (str(third), "starting") in reported
