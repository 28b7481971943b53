"""`GET /v1/stream`: one WebSocket carrying many nodes, for agents that play or front many.

HTTP/1.1 gives a long-poll one connection; a process standing in for thousands of nodes (the
simulated agent, an edge gateway fronting devices) would need thousands. On a stream, the
client presents each node's own token (`hello`) and then speaks for exactly those nodes; every
op is authorized per node, as a request would be, against the credential rows of its own
transaction. The server pushes a node's complete list when it changes (events.py), and tells
the client when a token of the stream is revoked. The ops and messages are in
docs/agent-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from controller.agent.wire import (
    Heartbeat,
    Hello,
    Refresh,
    StreamHealth,
    StreamOp,
    StreamReports,
    StreamUsage,
    assignment_out,
    problem,
)
from controller.agentapi import metrics as m
from controller.agentapi.events import Watcher
from controller.agentapi.routes import EVENTS, FAILURES, LIMITER, METRICS, SERVICE, client_key
from controller.agentapi.service import (
    Item,
    ReportRefusedError,
    UnauthenticatedError,
    foreign_reports,
    refused_items,
)
from controller.db.credentials import NodeIdentity
from controller.db.errors import DatabaseUnavailableError
from controller.model.credentials import TokenKind, digest, kind_of

logger = logging.getLogger(__name__)

# One stream op may carry a report batch for thousands of nodes (wire.MAX_REPORTS) or their
# tokens (wire.MAX_TOKENS): 8 MiB holds either with room, and bounds what one frame costs.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Ops of one stream handled at once: heartbeats must not queue behind a slow report batch, and
# one client cannot fill the database's connection pool on its own.
CONCURRENT_OPS = 4
# After a failed read of assignments a push is tried again this much later: the database is
# back soon (an outage), and a retry loop must not spin.
PUSH_RETRY_SECONDS = 1.0
# aiohttp pings an idle stream this often, so that a dead peer (a cut link) is noticed and its
# nodes' watches are dropped rather than kept forever.
PING_SECONDS = 20.0


class Stream:
    """One client's stream: the nodes it has authenticated and what it sends and receives."""

    def __init__(self, request: web.Request, socket: web.WebSocketResponse) -> None:
        self._app = request.app
        self._request = request
        self._socket = socket
        self._nodes: dict[bytes, NodeIdentity] = {}  # digest -> identity
        self._watcher = Watcher()
        self._watcher.take()  # nothing to read before the first hello
        self._slots = asyncio.Semaphore(CONCURRENT_OPS)
        self._tasks: set[asyncio.Task[None]] = set()
        # Nodes whose lists this stream's own reports may have changed since they were last
        # read (whether the write committed or not: an answer lost to an outage leaves it
        # unknown). The database pushes every other change; an agent's own does not come back
        # to it, so these are what a `reported` refresh reads again.
        self._reported: set[bytes] = set()

    async def send(self, body: dict[str, Any]) -> None:
        """Send one message; a closed socket ends the stream's work quietly."""
        with contextlib.suppress(ConnectionResetError):
            await self._socket.send_str(json.dumps(body))

    async def refuse(
        self, reason: str, message: str, *, op_id: int | None = None, **extra: Any
    ) -> None:
        """Answer an op with a refusal, counted by reason."""
        self._app[METRICS].refused.labels(reason).inc()
        await self.send(
            {"op": "refused", "id": op_id, "error": reason, "message": message, **extra}
        )

    # -- ops -------------------------------------------------------------------------------

    async def hello(self, op: Hello) -> None:
        """Add the nodes of the valid tokens; their lists follow as pushes."""
        failures, client = self._app[FAILURES], client_key(self._request)
        if failures.exhausted(client):
            await self.refuse(m.RATE_LIMITED, "too many failed authentications from this address")
            return
        presented = list(dict.fromkeys(op.valid_tokens()))  # a token given twice counts once
        tokens = [token for token in presented if kind_of(token) is TokenKind.NODE]
        digests = [digest(token) for token in tokens]
        valid = await self._app[SERVICE].authenticate(digests)
        fresh = {key: identity for key, identity in valid.items() if key not in self._nodes}
        self._nodes.update(fresh)
        self._app[EVENTS].add(self._watcher, [i.node_id for i in fresh.values()], fresh)
        self._app[METRICS].stream_nodes.inc(len(fresh))
        refused = len(presented) - len(valid)
        if refused:
            self._app[METRICS].refused.labels(m.UNAUTHENTICATED).inc(refused)
            failures.allow(client, cost=refused)
        await self.send(
            {"op": "welcome", "nodes": sorted(i.node for i in valid.values()), "refused": refused}
        )
        self._watcher.changed.update(i.node_id for i in fresh.values())
        self._watcher.wake.set()

    async def _over_budget(self, keys: list[bytes], noun: str, op_id: int | None = None) -> bool:
        """Charge an op to each node it names; if one has no budget left, refuse it whole.

        The refusal says in `retryAfter` (seconds) when the op would be allowed, as a request's
        Retry-After header does: the agent sends it again then rather than dropping it.
        """
        wait = self._app[LIMITER].allow_all(keys)
        if wait:
            await self.refuse(
                m.RATE_LIMITED, f"too many {noun}", op_id=op_id, retryAfter=round(wait, 3)
            )
        return wait > 0

    async def heartbeat(self, _: Heartbeat) -> None:
        """Renew every node of the stream; drop those whose tokens died.

        Only the nodes this heartbeat asked about can be found dead by it: a hello answered
        while it waited on the database adds nodes it never looked up, and compared with the
        stream's nodes as they were when the answer came, those were dropped as revoked.
        """
        asked = list(self._nodes)
        if await self._over_budget(asked, "heartbeats"):
            return
        try:
            valid = await self._app[SERVICE].heartbeat(asked)
        except UnauthenticatedError:
            valid = {}
        await self._drop(set(asked) - set(valid))
        await self.send({"op": "heartbeat", "renewed": len(valid)})

    async def report(self, op: StreamReports) -> None:
        """Write a batch for the stream's nodes, all or none."""
        batch = [item.to_report() for item in op.reports]
        await self._write(
            op.id, batch, "reports", self._app[SERVICE].report, answer="reported", listed=True
        )

    async def usage(self, op: StreamUsage) -> None:
        """Record usage samples of the stream's nodes' running replicas, all or none."""
        batch = [item.to_sample() for item in op.samples]
        await self._write(op.id, batch, "samples", self._app[SERVICE].usage, answer="recorded")

    async def health(self, op: StreamHealth) -> None:
        """Record health changes of the stream's nodes' running replicas, all or none."""
        batch = [item.to_health() for item in op.reports]
        await self._write(
            op.id,
            batch,
            "health reports",
            self._app[SERVICE].health,
            answer="recorded",
            listed=True,
        )

    async def _write(
        self,
        op_id: int,
        batch: list[Item],
        noun: str,
        write: Callable[[list[bytes], list[Item]], Awaitable[int]],
        *,
        answer: str,
        listed: bool = False,
    ) -> None:
        """Authorize a batch per node as requests are, write it, answer `answer` or refused.

        `listed`: what the batch writes shows in its nodes' lists (a status, a health verdict).
        """
        names = {item.node for item in batch}
        keys = [key for key, identity in self._nodes.items() if identity.node in names]
        foreign = foreign_reports(batch, allowed={self._nodes[key].node for key in keys})
        if foreign:
            await self._refuse_batch(op_id, len(batch), noun, foreign)
            return
        if await self._over_budget(keys, noun, op_id):
            return
        try:
            accepted = await write(keys, batch)
        except UnauthenticatedError:
            await self.refuse(m.UNAUTHENTICATED, "no valid token for these nodes", op_id=op_id)
            return
        except ReportRefusedError as exc:
            await self._refuse_batch(op_id, len(batch), noun, exc.refused)
            return
        finally:
            # After the write, not before: a list read that began before this mark will be
            # read again; one that began after it sees the write's commit.
            if listed:
                self._reported.update(keys)
        await self.send({"op": answer, "id": op_id, "accepted": accepted})

    async def _refuse_batch(
        self, op_id: int, size: int, noun: str, refused: list[tuple[Any, str]]
    ) -> None:
        await self.refuse(
            m.FORBIDDEN,
            f"{len(refused)} of {size} {noun} refused; nothing was written",
            op_id=op_id,
            refused=refused_items(refused),
        )

    async def refresh(self, op: Refresh) -> None:
        """Push lists again: every node's (after a refusal, say) or those of `_reported`."""
        if op.scope == "all":
            self._watcher.everything = True
        else:
            self._watcher.changed.update(
                self._nodes[key].node_id for key in self._reported if key in self._nodes
            )
        self._watcher.wake.set()

    # -- pushes ----------------------------------------------------------------------------

    async def _drop(self, keys: set[bytes]) -> None:
        """Forget revoked tokens' nodes and tell the client."""
        gone = [self._nodes.pop(key) for key in keys if key in self._nodes]
        self._reported.difference_update(keys)
        if gone:
            self._app[EVENTS].forget(self._watcher, [i.node_id for i in gone], keys)
            self._app[METRICS].stream_nodes.dec(len(gone))
            await self.send({"op": "revoked", "nodes": sorted(i.node for i in gone)})

    async def push(self) -> None:
        """Send the lists that changed, and revocations, whenever the watcher is woken."""
        while True:
            await self._watcher.wake.wait()
            everything, changed, revoked = self._watcher.take()
            await self._drop(revoked)
            keys = [
                key
                for key, identity in self._nodes.items()
                if everything or identity.node_id in changed
            ]
            if not keys:
                continue
            self._reported.difference_update(keys)  # this read sees what they wrote
            try:
                lists = await self._app[SERVICE].assignments(keys)
            except Exception as exc:  # whatever it was, pushes must go on
                # A push task that died would leave the stream's agents without new work
                # while their heartbeats keep their nodes online: retry, and say why.
                if not isinstance(exc, DatabaseUnavailableError):
                    logger.exception("reading assignments for a push failed: retrying")
                await asyncio.sleep(PUSH_RETRY_SECONDS)
                self._watcher.changed.update(
                    self._nodes[key].node_id for key in keys if key in self._nodes
                )
                self._watcher.wake.set()
                continue
            await self._drop(set(keys) - set(lists.identities))
            for node, items in lists.by_node.items():
                await self.send(
                    {
                        "op": "assignments",
                        "node": node,
                        "assignments": [assignment_out(i) for i in items],
                    }
                )

    # -- the loop ----------------------------------------------------------------------------

    async def _handle(self, text: str) -> None:
        started = time.perf_counter()
        name, code = "invalid", "400"
        async with self._slots:
            raw: Any = None
            try:
                raw = json.loads(text)
                op = StreamOp.model_validate({"body": raw}).body
            except (ValueError, ValidationError) as exc:
                why = problem(exc) if isinstance(exc, ValidationError) else "not JSON"
                # With the op's id where it can be read: the client awaits the answer to it
                # (without, an agent waited its 30 s reply timeout and reconnected).
                await self.refuse(m.INVALID, why, op_id=_op_id(raw))
            else:
                name, code = op.op, "200"
                try:
                    if isinstance(op, Hello):
                        await self.hello(op)
                    elif isinstance(op, Heartbeat):
                        await self.heartbeat(op)
                    elif isinstance(op, StreamReports):
                        await self.report(op)
                    elif isinstance(op, StreamUsage):
                        await self.usage(op)
                    elif isinstance(op, StreamHealth):
                        await self.health(op)
                    else:
                        await self.refresh(op)
                except DatabaseUnavailableError as exc:
                    code = "503"
                    await self.send(
                        {"op": "unavailable", "id": getattr(op, "id", None), "message": str(exc)}
                    )
        metrics = self._app[METRICS]
        metrics.requests.labels(f"stream:{name}", code).inc()
        metrics.request_seconds.labels(f"stream:{name}").observe(time.perf_counter() - started)

    async def serve(self) -> None:
        """Handle ops as they come (several at once) and push changes, until the socket closes."""
        pusher = asyncio.create_task(self.push(), name="agent-stream-push")
        try:
            async for message in self._socket:
                if message.type is WSMsgType.TEXT:
                    task = asyncio.create_task(self._handle(message.data))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            pusher.cancel()
            for task in [pusher, *self._tasks]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._app[EVENTS].forget(
                self._watcher, [i.node_id for i in self._nodes.values()], self._nodes
            )
            self._app[METRICS].stream_nodes.dec(len(self._nodes))


def _op_id(raw: Any) -> int | None:
    """The id of an op that did not validate, if it has a usable one."""
    op_id = raw.get("id") if isinstance(raw, dict) else None
    return op_id if isinstance(op_id, int) and not isinstance(op_id, bool) else None


async def stream(request: web.Request) -> web.StreamResponse:
    """`GET /v1/stream`: upgrade to a WebSocket and serve it until either side closes."""
    socket = web.WebSocketResponse(heartbeat=PING_SECONDS, max_msg_size=MAX_MESSAGE_BYTES)
    await socket.prepare(request)
    await Stream(request, socket).serve()
    return socket
