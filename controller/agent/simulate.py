"""A simulated node agent: heartbeats its nodes and runs their replicas in name only.

Real agents pull images and start containers; this one moves each assigned replica along the
happy path (`pending -> starting -> running`, `stopping -> stopped`) after a configurable
start delay, through the same protocol functions a real agent calls. One process can stand
in for many nodes, so the demo, the tests and the benchmarks need no edge hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg.errors
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import nodes as db_nodes
from controller.db import reports
from controller.model.states import ReplicaStatus

# How often the agent looks for work and heartbeats: well inside the 40 s heartbeat grace,
# and short enough that a replica starts within about half a second of being placed.
DEFAULT_TICK_SECONDS = 0.5
# How often the agent reads its complete list, running replicas included, to adopt what runs
# and stop orphans; the ticks between read only what needs action. Reading every running
# replica of 500 nodes each tick cost more than the operator did during a burst (make bench).
COMPLETE_LIST_SECONDS = 2.0
# During a database outage the agent backs off to at most this pause between attempts.
OUTAGE_BACKOFF_MAX_SECONDS = 10.0

logger = logging.getLogger(__name__)


def container_id(replica_id: uuid.UUID) -> str:
    """A stable fake container id, shaped like a runtime's (64 hex digits)."""
    return hashlib.sha256(replica_id.bytes).hexdigest()


@dataclass
class Simulator:
    """The agent's memory between ticks: the replicas it runs and when each began starting.

    `fail_image` (a glob) makes replicas of matching images fail instead of running, for
    demos and tests of the restart backoff.
    """

    start_delay: float
    fail_image: str | None = None
    clock: Callable[[], float] = time.monotonic
    started: dict[uuid.UUID, float] = field(default_factory=dict)
    orphans_stopped: list[uuid.UUID] = field(default_factory=list)

    def _outcome(self, item: reports.Assignment) -> reports.Report:
        if self.fail_image and fnmatch.fnmatchcase(item.image, self.fail_image):
            return self._report(item, ReplicaStatus.FAILED, "Error: exit code 1")
        return self._report(item, ReplicaStatus.RUNNING, "Started")

    def decide(
        self, work: Sequence[reports.Assignment], *, complete: bool = True
    ) -> list[list[reports.Report]]:
        """The reports due now, in rounds: a replica moves at most one step per round.

        With no start delay a placed replica goes pending -> starting -> running in one tick:
        two rounds, because a replica may change only once per batch of reports. Orphans are
        looked for only when `work` is the `complete` list, running replicas included.
        """
        now = self.clock()
        first: list[reports.Report] = []
        second: list[reports.Report] = []
        for item in work:
            if item.status is ReplicaStatus.PENDING:
                self.started[item.replica_id] = now
                first.append(self._report(item, ReplicaStatus.STARTING, "Starting"))
                if self.start_delay <= 0:
                    second.append(self._outcome(item))
            elif item.status is ReplicaStatus.STARTING:
                began = self.started.setdefault(item.replica_id, now)
                if now - began >= self.start_delay:
                    first.append(self._outcome(item))
            elif item.status is ReplicaStatus.RUNNING:
                # Adopt what runs here already (an agent restarted while replicas ran).
                self.started.setdefault(item.replica_id, now)
            elif item.status is ReplicaStatus.STOPPING:
                first.append(self._report(item, ReplicaStatus.STOPPED, "Stopped"))
        if complete:
            self._stop_orphans({item.replica_id for item in work})
        return [batch for batch in (first, second) if batch]

    def _stop_orphans(self, assigned: set[uuid.UUID]) -> None:
        """Stop what runs here but is no longer assigned here.

        That is a replica failed as NodeLost while this agent was silent (and replaced
        elsewhere) or one that stopped: running it on would run it twice.
        """
        for replica_id in self.started.keys() - assigned:
            del self.started[replica_id]
            self.orphans_stopped.append(replica_id)
            logger.info("stopped replica %s: no longer assigned to this agent", replica_id)

    @staticmethod
    def _report(item: reports.Assignment, status: ReplicaStatus, reason: str) -> reports.Report:
        return reports.Report(
            node=item.node,
            replica_id=item.replica_id,
            status=status,
            reason=reason,
            container_id=container_id(item.replica_id),
        )


async def beat(sessions: async_sessionmaker[AsyncSession], nodes: Sequence[str] | None) -> None:
    """Renew the leases of `nodes` (None: every registered node) in a transaction of its own.

    A lease row is written by nobody else (db/nodes.py), so this never waits for placement work.
    """
    async with sessions() as session, session.begin():
        if nodes is None:
            nodes = await db_nodes.node_names(session)
        await db_nodes.heartbeat(session, names=nodes)


async def work(
    sessions: async_sessionmaker[AsyncSession],
    simulator: Simulator,
    nodes: Sequence[str] | None,
    *,
    complete: bool = True,
) -> int:
    """Read assignments and report, in one transaction; returns how many reports were written.

    `nodes` None stands for every registered node, read afresh so that nodes registered later
    are served too. Unless `complete`, only replicas that need action are read (not the running
    ones), so the cost follows what changed, not how much runs.
    """
    written = 0
    async with sessions() as session, session.begin():
        if nodes is None:
            nodes = await db_nodes.node_names(session)
        assigned = await reports.assignments(session, nodes=nodes, include_running=complete)
        for batch in simulator.decide(assigned, complete=complete):
            written += (await reports.report(session, batch)).accepted
    return written


async def tick(
    sessions: async_sessionmaker[AsyncSession],
    simulator: Simulator,
    nodes: Sequence[str] | None,
    *,
    complete: bool = True,
) -> int:
    """One round of the agent, as the tests drive it: heartbeat, then work."""
    await beat(sessions, nodes)
    return await work(sessions, simulator, nodes, complete=complete)


def _is_conflict(exc: OperationalError | InterfaceError) -> bool:
    """A deadlock or serialization failure: another writer moved first, the database is fine."""
    return isinstance(
        exc.orig, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    )


async def _heartbeats(
    sessions: async_sessionmaker[AsyncSession],
    nodes: Sequence[str] | None,
    *,
    period: float,
    stop: asyncio.Event,
    silent: asyncio.Event,
) -> None:
    """Heartbeat every `period`, whatever the reports are doing.

    Its own loop, so that no report (a slow one, one that conflicts with a placement and is
    retried, one backing off through an outage) ever delays a heartbeat: under sustained
    placement a report backing off after conflicts once let a healthy node's grace run out.
    A failed heartbeat is tried again at the next period, not after a growing backoff: it is
    one tiny statement, and after an outage the node must be heard from at once.
    """
    failing = False
    while not stop.is_set():
        if not silent.is_set():
            try:
                await beat(sessions, nodes)
                failing = False
            except (OperationalError, InterfaceError) as exc:
                if not failing:  # once per outage, not every period
                    logger.warning("heartbeat failed (%s): retrying", str(exc.orig).strip())
                failing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)


async def run(
    sessions: async_sessionmaker[AsyncSession],
    *,
    nodes: Sequence[str] | None,
    start_delay: float,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    fail_image: str | None = None,
    stop: asyncio.Event | None = None,
    silent: asyncio.Event | None = None,
) -> None:
    """Act as the agent of `nodes` (None: all) until `stop` is set (or forever).

    While `silent` is set the agent neither heartbeats nor reports, as if its link were cut;
    it keeps what it runs in memory and reconciles it when it speaks again.
    """
    simulator = Simulator(start_delay=start_delay, fail_image=fail_image)
    stop = stop or asyncio.Event()
    silent = silent or asyncio.Event()
    heartbeats = asyncio.create_task(
        _heartbeats(sessions, nodes, period=tick_seconds, stop=stop, silent=silent)
    )
    failures = 0
    last_complete = -math.inf
    try:
        while not stop.is_set():
            try:
                if not silent.is_set():
                    now = time.monotonic()
                    complete = now - last_complete >= COMPLETE_LIST_SECONDS
                    await work(sessions, simulator, nodes, complete=complete)
                    if complete:
                        last_complete = now
                failures = 0
            except (OperationalError, InterfaceError) as exc:
                if _is_conflict(exc):
                    # A placement wrote the same node rows: try again next tick, no backoff.
                    logger.info("report conflicted with another writer: retrying")
                else:
                    # An agent outlives a database outage, as a real one outlives a flaky link.
                    failures += 1
                    logger.warning("database unavailable (%s): retrying", str(exc.orig).strip())
            pause = min(OUTAGE_BACKOFF_MAX_SECONDS, tick_seconds * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
    finally:
        heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeats
