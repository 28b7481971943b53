"""Telling waiting agents that their list changed or their token died, from one LISTEN.

The database notifies `fog_agent_events` (migration 0006) with `assign:<node id>` when someone
other than the node's agent changes what the node should run, and `revoke:<digest>` when a
credential is deleted. One connection per agent-API process listens; every stream and long-poll
registers a `Watcher` for its nodes and tokens and is woken here, so no agent's wait costs a
query. While the connection is down nothing is heard: on (re)connection every watcher is told
to read everything again, which covers whatever was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator
from typing import TypeVar

from sqlalchemy.engine import URL

from controller.db import notify
from controller.db.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

# After a lost connection, listen again after this pause, doubling to the maximum: the database
# is likely restarting, and every replica of the agent API would otherwise reconnect in a loop.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
# Token -> node entries kept for long-polls: more than the nodes of a large fleet, and small.
REMEMBERED_TOKENS = 100_000


class Watcher:
    """One stream's (or long-poll's) interest: nodes whose lists it wants, tokens it holds."""

    def __init__(self) -> None:
        self.changed: set[uuid.UUID] = set()
        self.revoked: set[bytes] = set()
        self.everything = True  # a new watcher reads everything once
        self.wake = asyncio.Event()
        self.wake.set()

    def take(self) -> tuple[bool, set[uuid.UUID], set[bytes]]:
        """What happened since the last call: (read everything?, changed nodes, revoked tokens)."""
        taken = (self.everything, self.changed, self.revoked)
        self.everything, self.changed, self.revoked = False, set(), set()
        self.wake.clear()
        return taken


class Events:
    """The LISTEN loop and who waits for what."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._by_node: defaultdict[uuid.UUID, set[Watcher]] = defaultdict(set)
        self._by_digest: defaultdict[bytes, set[Watcher]] = defaultdict(set)
        self.listening = False
        self._node_of: dict[bytes, uuid.UUID] = {}

    def node_of(self, digest: bytes) -> uuid.UUID | None:
        """The node a token digest was last seen to speak for (it never changes), if known."""
        return self._node_of.get(digest)

    def remember(self, digest: bytes, node: uuid.UUID) -> None:
        """Note whose a valid token is; the memory is bounded and forgets the oldest first."""
        self._node_of[digest] = node
        if len(self._node_of) > REMEMBERED_TOKENS:
            del self._node_of[next(iter(self._node_of))]

    @contextlib.contextmanager
    def watching(
        self, watcher: Watcher, nodes: Iterable[uuid.UUID], digests: Iterable[bytes]
    ) -> Iterator[None]:
        """Register `watcher` for these nodes and tokens for the duration of the block."""
        nodes, digests = list(nodes), list(digests)
        self.add(watcher, nodes, digests)
        try:
            yield
        finally:
            self.forget(watcher, nodes, digests)

    def add(self, watcher: Watcher, nodes: Iterable[uuid.UUID], digests: Iterable[bytes]) -> None:
        """Widen a registration (a stream that authenticated more nodes)."""
        for node in nodes:
            self._by_node[node].add(watcher)
        for digest in digests:
            self._by_digest[digest].add(watcher)

    def forget(
        self, watcher: Watcher, nodes: Iterable[uuid.UUID], digests: Iterable[bytes]
    ) -> None:
        """Narrow or end a registration."""
        for node in nodes:
            _discard(self._by_node, node, watcher)
        for digest in digests:
            _discard(self._by_digest, digest, watcher)

    def dispatch(self, payload: str) -> None:
        """Wake the watchers a notification concerns; an unreadable payload is logged, not fatal."""
        kind, _, value = payload.partition(":")
        try:
            if kind == "assign":
                node = uuid.UUID(value)
                for watcher in self._by_node.get(node, ()):
                    watcher.changed.add(node)
                    watcher.wake.set()
                return
            if kind == "revoke":
                digest = bytes.fromhex(value)
                self._node_of.pop(digest, None)
                for watcher in self._by_digest.get(digest, ()):
                    watcher.revoked.add(digest)
                    watcher.wake.set()
                return
        except ValueError:
            pass
        logger.warning("ignored a malformed notification: %.80r", payload)

    def _everyone_reads_everything(self) -> None:
        self.listening = True
        for watchers in list(self._by_node.values()) + list(self._by_digest.values()):
            for watcher in watchers:
                watcher.everything = True
                watcher.wake.set()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        pause = RETRY_FIRST_SECONDS
        while True:
            try:
                async for payload in notify.listen(
                    self._url,
                    connected=self._everyone_reads_everything,
                    channel=notify.AGENT_CHANNEL,
                ):
                    pause = RETRY_FIRST_SECONDS
                    self.dispatch(payload)
            except DatabaseUnavailableError as exc:
                logger.warning("lost the database's notifications (%s): listening again", exc)
            self.listening = False
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX_SECONDS, pause * 2)


def _discard(table: dict[K, set[Watcher]], key: K, watcher: Watcher) -> None:
    """Drop `watcher` from `table[key]`, and the key once nobody watches it."""
    watchers = table.get(key)
    if watchers is not None:
        watchers.discard(watcher)
        if not watchers:
            del table[key]
