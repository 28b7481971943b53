"""A simulated node agent speaking the agent API: heartbeats, assignments, reports.

It holds no database URL, only node tokens, and goes through exactly what a real agent goes
through (docs/agent-protocol.md): it trades bootstrap tokens for node tokens, opens one stream
(`/v1/stream`) for all the nodes it plays, heartbeats them, receives each node's list when it
changes, and reports what its simulated containers do (controller/model/simulation.py decides
that). One process plays thousands of nodes over one connection, so the demo, the tests and
the benchmarks need no edge hardware and still exercise the real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from controller.agent.tokens import TokensFile
from controller.agent.wire import MAX_REPORTS, assignment_in, health_out, report_out, usage_out
from controller.errors import TerminalError
from controller.model.credentials import TokenKind, kind_of
from controller.model.protocol import Assignment, Report
from controller.model.simulation import DEFAULT_USAGE_SECONDS, NodeView, Simulator

# How often the agent heartbeats and looks at what is due: well inside the 40 s heartbeat
# grace, and the start delay's resolution. Placements need no tick: they are pushed.
DEFAULT_TICK_SECONDS = 0.5
# A shorter tick (the tests' and benchmarks' 0.2 s) is for reacting sooner, not for leases: the
# agent heartbeats at most this often. A heartbeat is an op charged to every node of the stream
# (agentapi/limits.py: 10 a second per node), and one per 0.2 s tick took half of each node's
# budget. Twice a second still puts six heartbeats inside the shortest grace in use (the fault
# tests' 3 s) and costs a node a fifth of its budget.
HEARTBEAT_MIN_SECONDS = 0.5
# docs/agent-protocol.md: the `error` of an op refused for being over its nodes' budget; the
# refusal's `retryAfter` says in how many seconds it would be allowed.
RATE_LIMITED = "rate_limited"
# The longest the agent waits to send a rate-limited op again, whatever the server says: a
# budget refills within a second or two, and a wait beyond this is a server's mistake.
RETRY_AFTER_MAX_SECONDS = 5.0
# Between attempts to reach the agent API the pause doubles up to this: an agent outlives an
# outage of the API or the database, as a real one outlives a flaky link.
RECONNECT_MAX_SECONDS = 10.0
# A report batch not answered in this long is taken as lost with the connection, which is
# then re-opened (the server answers within milliseconds unless the database is down).
REPLY_TIMEOUT_SECONDS = 30.0
# Lists are pushed when someone else changes them; our own reports change them too, and a
# report the database lost (a crash with asynchronous commit) or one a stale list crossed
# leaves our view wrong. This often the agent asks again for the lists of the nodes it
# reported on since they were last read (`scope: reported`), so that such a view is repaired
# in seconds rather than never. Not every list: at 20,000 objects (four agents of 50,000
# replicas), reading and sending them all every 30 s was most of the agent API's quarter of
# a core at rest.
REFRESH_SECONDS = 30.0
# How often a silenced agent looks whether it may speak again or must stop.
SILENCE_POLL_SECONDS = 0.2
# aiohttp's keep-alive ping on the stream, as the server's: a dead link is noticed.
PING_SECONDS = 20.0
# The largest message the server sends: a node's list is small; the server caps its own too.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AgentCredentialError(TerminalError):
    """None of the agent's tokens is accepted: nothing to play."""


@dataclass
class Credentials:
    """Node -> token, from the command line or a tokens file (re-read when it changes)."""

    tokens: dict[str, str] = field(default_factory=dict)
    file: TokensFile | None = None
    only: frozenset[str] = frozenset()  # play only these nodes (empty: every one)

    def __post_init__(self) -> None:
        if self.file is not None:
            self.file.changed()
            self.tokens.update(self._wanted(self.file.tokens))

    def refresh(self) -> bool:
        """Re-read the tokens file if it changed; say whether anything new may be there."""
        if self.file is None or not self.file.changed():
            return False
        self.tokens.update(self._wanted(self.file.tokens))
        return True

    def _wanted(self, tokens: Mapping[str, str]) -> dict[str, str]:
        return {node: token for node, token in tokens.items() if not self.only or node in self.only}

    def replace(self, exchanged: Mapping[str, str]) -> None:
        """Keep node tokens got for bootstrap ones (in the file too: they must outlive us)."""
        self.tokens.update(exchanged)
        if self.file is not None:
            self.file.save(exchanged)


async def exchange_bootstraps(
    http: aiohttp.ClientSession, server: str, credentials: Credentials
) -> None:
    """Trade every bootstrap token for the node's own token; drop refused ones, loudly."""
    exchanged: dict[str, str] = {}
    for node, token in list(credentials.tokens.items()):
        if kind_of(token) is not TokenKind.BOOTSTRAP:
            continue
        async with http.post(
            f"{server}/v1/credentials/exchange", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            body = await response.json(content_type=None)
            if response.status == 200:
                exchanged[node] = body["token"]
                logger.info("node %s: bootstrap token exchanged for the node's own token", node)
                continue
            if response.status in (401, 403):
                logger.error(
                    "node %s: bootstrap token refused (%s): not playing it",
                    node,
                    body.get("message"),
                )
                del credentials.tokens[node]
                continue
            response.raise_for_status()
    if exchanged:
        credentials.replace(exchanged)


def batches(items: list[T]) -> list[list[T]]:
    """`items` in batches the server takes (wire.MAX_REPORTS each), in order.

    A round of a large fleet outgrows one op: an agent of 5,000 nodes sent 36,000 reports in
    one, the server refused it, and the stream broke down (answers awaited in vain,
    reconnects) until every node's heartbeat had lapsed and every replica failed as NodeLost.
    """
    return [items[start : start + MAX_REPORTS] for start in range(0, len(items), MAX_REPORTS)]


async def first_of(*work: Coroutine[Any, Any, None]) -> None:
    """Run `work` together until the first one ends; cancel the rest; raise what it raised."""
    tasks = [asyncio.create_task(item) for item in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # gather, not a loop of awaits under suppress: a cancellation of this very task while
        # it waits here must propagate, not be swallowed with the children's.
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


class Session:
    """One open stream: hello, then heartbeats, pushed lists and report batches."""

    def __init__(
        self,
        socket: aiohttp.ClientWebSocketResponse,
        *,
        simulator: Simulator,
        views: dict[str, NodeView],
        tick: float,
    ) -> None:
        self._socket = socket
        self._simulator = simulator
        self._views = views
        self._tick = tick
        self._heartbeat_every = max(tick, HEARTBEAT_MIN_SECONDS)
        self._wake = asyncio.Event()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.welcomed: set[str] = set()
        self._outage = False  # the database behind the agent API is out
        # Each node's last list as the server sent it and as parsed. Lists often come again
        # unchanged (all of them after a refusal's refresh, a node's after our own reports):
        # at 20,000 objects (500 nodes and 50,000 replicas an agent process), when the
        # periodic refresh still asked for all, parsing them again and the passes of the
        # work loop over every replica that they woke took about a core for the four agent
        # processes at rest (docs/design/performance.md).
        self._lists: dict[str, tuple[list[Any], list[Assignment]]] = {}

    async def _send(self, body: dict[str, Any]) -> None:
        await self._socket.send_str(json.dumps(body))

    async def hello(self, tokens: list[str]) -> None:
        """Present node tokens; the answer (`welcome`) and the lists arrive as messages."""
        if tokens:
            await self._send({"op": "hello", "tokens": tokens})

    def _received(self, message: dict[str, Any]) -> None:
        """Act on one message: a reply to a report batch, or whatever the server pushed."""
        if message.get("id") is not None and message["id"] in self._replies:
            self._replies.pop(message["id"]).set_result(message)
            return
        handler = {
            "assignments": self._assignments,
            "welcome": self._welcome,
            "revoked": self._revoked,
            "heartbeat": self._heartbeat_answered,
            "unavailable": self._unavailable,
            "refused": self._refused,
        }.get(str(message.get("op")))
        if handler is not None:
            handler(message)

    def _assignments(self, message: dict[str, Any]) -> None:
        """Take a node's list; wake the work loop only if it changes what the node runs.

        A list that changes nothing brings no work the next tick would not find as well.
        """
        node, sent = str(message["node"]), message["assignments"]
        last = self._lists.get(node)
        if last is not None and last[0] == sent:
            items = last[1]  # parsing is a pure function of what was sent
        else:
            items = [assignment_in(node, item) for item in sent]
            self._lists[node] = (sent, items)
        if self._views.setdefault(node, NodeView()).receive(items):
            self._wake.set()

    def _welcome(self, message: dict[str, Any]) -> None:
        self.welcomed.update(message["nodes"])
        logger.info("playing %d nodes (%d tokens refused)", len(self.welcomed), message["refused"])
        if not self.welcomed:
            raise AgentCredentialError(
                f"none of the {message['refused']} node tokens was accepted "
                "(revoked, rotated, or the node removed): re-register for a new one"
            )

    def _revoked(self, message: dict[str, Any]) -> None:
        for node in message["nodes"]:
            self.welcomed.discard(node)
            self._views.pop(node, None)  # what it ran is now an orphan and stops
            self._lists.pop(node, None)
            logger.warning("node %s: token revoked; no longer playing it", node)
        self._wake.set()
        if not self.welcomed:
            raise AgentCredentialError("every node token of this agent was revoked")

    def _heartbeat_answered(self, _: dict[str, Any]) -> None:
        self._outage = False

    def _unavailable(self, message: dict[str, Any]) -> None:
        if not self._outage:  # once per outage, not every heartbeat
            logger.warning("agent API: %s: retrying", message.get("message"))
        self._outage = True

    def _refused(self, message: dict[str, Any]) -> None:
        logger.warning("refused: %s", message.get("message"))

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    self._received(json.loads(message.data))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("ignored a malformed message from the agent API: %s", exc)
            elif message.type is aiohttp.WSMsgType.ERROR:
                break
        raise ConnectionResetError("the agent API closed the stream")

    async def _heartbeats(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await self._send({"op": "heartbeat"})
            if time.monotonic() - last_refresh >= REFRESH_SECONDS:
                await self._send({"op": "refresh", "scope": "reported"})
                last_refresh = time.monotonic()
            await asyncio.sleep(self._heartbeat_every)

    async def _ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send an op with a fresh id and wait for the answer with that id.

        An op refused as over its nodes' budget is sent again after the wait the server names:
        nothing of it was written, and dropping it would cost a refresh of every list and a
        tick before the same reports were decided again.
        """
        while True:
            op_id = next(self._ids)
            reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._replies[op_id] = reply
            await self._send({**body, "id": op_id})
            async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
                answer = await reply
            if answer.get("error") != RATE_LIMITED:
                return answer
            wait = float(answer.get("retryAfter") or self._tick)
            await asyncio.sleep(min(wait, RETRY_AFTER_MAX_SECONDS))

    async def _report(self, batch: list[Report]) -> bool:
        """Send one batch of reports; whether it was written."""
        answer = await self._ask({"op": "report", "reports": [report_out(r) for r in batch]})
        if answer["op"] == "reported":
            for report in batch:
                if report.node in self._views:
                    self._views[report.node].accepted([report])
            return True
        # Refused (a list we acted on was stale) or the database was out: ask for fresh lists.
        logger.warning("reports %s: %s", answer["op"], answer.get("message"))
        await self._send({"op": "refresh"})
        return False

    async def _record(self, op: str, key: str, bodies: list[dict[str, Any]]) -> bool:
        """Send one batch of an op the server answers `recorded`; whether it was.

        Anything else means a replica stopped or failed since our list: the batch is lost (the
        next round sends again what still holds), and fresh lists avoid a repeat.
        """
        answer = await self._ask({"op": op, key: bodies})
        if answer["op"] == "recorded":
            return True
        logger.warning("%s %s: %s", op, answer["op"], answer.get("message"))
        await self._send({"op": "refresh"})
        return False

    async def _sample(self, items: list[Assignment]) -> None:
        """Send the usage samples due, in batches the server takes."""
        for batch in batches(self._simulator.usage(items)):
            await self._record("usage", "samples", [usage_out(s) for s in batch])

    async def _check_health(self, items: list[Assignment]) -> None:
        """Send the health verdicts that changed, in batches the server takes."""
        for batch in batches(self._simulator.health(items)):
            if await self._record("health", "reports", [health_out(r) for r in batch]):
                # The server pushes no list for a health change: apply ours.
                for view in self._views.values():
                    view.health_accepted(batch)

    async def _work(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # that arrives as the event is set, and this loop then never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick):
                    await self._wake.wait()
            self._wake.clear()
            items = [item for view in self._views.values() for item in view.items.values()]
            for round_ in self._simulator.decide(items):
                written = [await self._report(batch) for batch in batches(round_)]
                if not all(written):
                    break  # a later round moves replicas on from this one: it would be refused
            await self._sample(
                [item for view in self._views.values() for item in view.items.values()]
            )
            await self._check_health(
                [item for view in self._views.values() for item in view.items.values()]
            )

    async def run(self) -> None:
        """Until the stream closes (ConnectionResetError) or the caller cancels."""
        await first_of(self._read(), self._heartbeats(), self._work())


async def _converse(
    http: aiohttp.ClientSession,
    server: str,
    credentials: Credentials,
    session_args: dict[str, Any],
    stop: asyncio.Event,
    silent: asyncio.Event,
) -> None:
    """One stream, from exchange and hello until it closes, or the agent stops or goes quiet."""
    await exchange_bootstraps(http, server, credentials)
    async with http.ws_connect(
        f"{server}/v1/stream", heartbeat=PING_SECONDS, max_msg_size=MAX_MESSAGE_BYTES
    ) as socket:
        session = Session(socket, **session_args)
        await session.hello(list(credentials.tokens.values()))
        talking = asyncio.create_task(session.run())
        watching = asyncio.create_task(
            _watch_tokens(http, server, credentials, session, stop, silent)
        )
        done, _ = await asyncio.wait([talking, watching], return_when=asyncio.FIRST_COMPLETED)
        for task in (talking, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError, ExceptionGroup):
                await task
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error


async def _watch_tokens(
    http: aiohttp.ClientSession,
    server: str,
    credentials: Credentials,
    session: Session,
    stop: asyncio.Event,
    silent: asyncio.Event,
) -> None:
    """Present tokens added to the file; return when the agent must stop or go quiet."""
    while not (stop.is_set() or silent.is_set()):
        if credentials.refresh():
            await exchange_bootstraps(http, server, credentials)
            await session.hello(list(credentials.tokens.values()))
        await asyncio.sleep(SILENCE_POLL_SECONDS)


async def run(
    server: str,
    credentials: Credentials,
    *,
    start_delay: float,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    fail_image: str | None = None,
    fail_health: str | None = None,
    usage_seconds: float = DEFAULT_USAGE_SECONDS,
    stop: asyncio.Event | None = None,
    silent: asyncio.Event | None = None,
) -> None:
    """Play the nodes of `credentials` against the agent API at `server` until `stop` is set.

    While `silent` is set the agent closes its stream and says nothing, as if its link were
    cut; it keeps what it runs in memory and reconciles it when it speaks again.
    """
    stop = stop or asyncio.Event()
    silent = silent or asyncio.Event()
    session_args: dict[str, Any] = {
        "simulator": Simulator(
            start_delay=start_delay,
            fail_image=fail_image,
            fail_health=fail_health,
            usage_seconds=usage_seconds,
        ),
        "views": {},
        "tick": tick_seconds,
    }
    failures = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            if silent.is_set():
                await asyncio.sleep(SILENCE_POLL_SECONDS)
                continue
            try:
                await _converse(http, server, credentials, session_args, stop, silent)
                failures = 0
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionResetError) as exc:
                failures += 1
                logger.warning(
                    "agent API unavailable (%s): retrying", str(exc) or type(exc).__name__
                )
                await asyncio.sleep(min(RECONNECT_MAX_SECONDS, tick_seconds * 2**failures))
            if not credentials.tokens:
                raise AgentCredentialError("no node token left to play (every one was refused)")
