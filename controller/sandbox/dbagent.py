"""A simulated agent driving the protocol functions in-process, for database tests and benchmarks.

Agents proper speak to the agent API and hold no database URL (controller/agent/). Tests of the
reconciler and the node lifecycle, and the benchmark that counts statements per reconcile, need
an agent's effect without an HTTP server in between: these functions call what the agent API
calls per request (heartbeat, read assignments, report), with the same simulated decisions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import nodes as db_nodes
from controller.db import reports
from controller.model.simulation import Simulator


async def beat(sessions: async_sessionmaker[AsyncSession], nodes: Sequence[str] | None) -> None:
    """Renew the leases of `nodes` (None: every registered node) in a transaction of its own."""
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
    are served too. Unless `complete`, only replicas that need action are read.
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
