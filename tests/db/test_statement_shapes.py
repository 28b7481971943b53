"""The hot statements: one statement for any batch size, compiled once.

Every request of the agent API checks tokens, and agents send heartbeats, reports, health
verdicts and usage samples in batches of any size, and ask for the lists of any number of
nodes. Each of those must send PostgreSQL the same SQL text whatever the size (so psycopg
prepares it once) and find SQLAlchemy's compiled form in its cache after the first call
(docs/design/performance.md, "Issue 15 item 2"). An IN list, a VALUES list or a statement
rebuilt with its values baked in would pass every behaviour test and silently cost a compile,
or a prepare, per size: these tests watch what is sent, against the real database. The
operator's snapshot of a batch of reconciles (`observe_many`) is held to the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import rows
from sqlalchemy import event
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import credentials, deployments, health, reports, usage
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.model.credentials import digest
from controller.model.protocol import HealthReport, Report, ReportResult, UsageSample
from controller.model.resources import Resources
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.usage import Usage

NODES = [f"edge-{i}" for i in range(5)]
# Batch sizes, each call on rows of its own: 1 + 2 + 5 replicas per status and operation.
SIZES = (1, 2, 5)
Sent = list[tuple[str, object]]
CAPACITY = Resources(cpu_millis=16_000, memory_mb=32_768, gpu_units=0, storage_gb=200)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


@pytest.fixture
def sent(engine: AsyncEngine) -> Iterator[Sent]:
    """Each statement sent to the server, with whether SQLAlchemy found it compiled."""
    statements: Sent = []

    def record(*args: Any) -> None:
        # before_cursor_execute(conn, cursor, statement, parameters, context, executemany)
        statements.append((args[2], args[4].cache_hit))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine.sync_engine, "before_cursor_execute", record)


@pytest.fixture
async def fleet(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[dict[str, bytes], dict[ReplicaStatus, list[tuple[str, uuid.UUID]]]]:
    """Node tokens' digests by node, and (node, replica) pairs by status, spread over NODES."""
    each = sum(SIZES)
    async with sessions() as session, session.begin():
        owner = await rows.user(session)
        # Registered, as agents register them: a node has a lease row from then on.
        ids = [
            await db_nodes.register(session, name=name, capacity=CAPACITY, labels={})
            for name in NODES
        ]
        deployment = await rows.deployment(session, owner, target_replicas=2 * each)
        placed: dict[ReplicaStatus, list[tuple[str, uuid.UUID]]] = {}
        for offset, status in enumerate((ReplicaStatus.PENDING, ReplicaStatus.RUNNING)):
            for i in range(each):
                ordinal = offset * each + i
                node = ordinal % len(NODES)
                replica = await rows.replica(
                    session, deployment, ordinal, node_id=ids[node], status=status
                )
                placed.setdefault(status, []).append((NODES[node], replica.id))
        tokens = await credentials.issue_node_tokens(session, nodes=NODES)
    return {node: digest(token) for node, token in tokens.items()}, placed


async def _each_size(
    sessions: async_sessionmaker[AsyncSession],
    sent: Sent,
    call: Callable[[AsyncSession, int, int], Awaitable[Any]],
    sizes: tuple[int, ...] = SIZES,
) -> list[Any]:
    """`call(session, offset, size)` for each size, each in its own transaction; its results.

    Asserts that every call sent the statements the first sent, all found compiled but those
    of the first call.
    """
    results, per_call, offset = [], [], 0
    for size in sizes:
        sent.clear()
        async with sessions() as session, session.begin():
            results.append(await call(session, offset, size))
        per_call.append(list(sent))
        offset += size
    first = [statement for statement, _ in per_call[0]]
    assert first, "the call sent nothing"
    for later in per_call[1:]:
        assert [statement for statement, _ in later] == first
        assert all(hit is CACHE_HIT for _, hit in later), later
    return results


def _status_report(node: str, replica: uuid.UUID) -> Report:
    return Report(node=node, replica_id=replica, status=ReplicaStatus.STARTING, reason="up")


def _health_report(node: str, replica: uuid.UUID) -> HealthReport:
    return HealthReport(node=node, replica_id=replica, health=ReplicaHealth.HEALTHY, reason="")


def _usage_sample(node: str, replica: uuid.UUID) -> UsageSample:
    return UsageSample(node=node, replica_id=replica, usage=Usage(cpu_millis=100, memory_mb=64))


# A batch an agent sends: of which replicas, made how, written by what.
BATCHES: dict[
    str,
    tuple[
        ReplicaStatus,
        Callable[[str, uuid.UUID], Any],
        Callable[[AsyncSession, list[Any]], Awaitable[ReportResult]],
    ],
] = {
    "reports": (ReplicaStatus.PENDING, _status_report, reports.report),
    "health": (ReplicaStatus.RUNNING, _health_report, health.record),
    "usage": (ReplicaStatus.RUNNING, _usage_sample, usage.record),
}


@pytest.mark.parametrize("kind", sorted(BATCHES))
async def test_agent_batches_of_any_size_send_one_statement_compiled_once(
    sessions: async_sessionmaker[AsyncSession], sent: Sent, fleet: Any, kind: str
) -> None:
    status, make, write = BATCHES[kind]
    pairs = fleet[1][status]

    async def send(session: AsyncSession, offset: int, size: int) -> int:
        batch = [make(node, replica) for node, replica in pairs[offset : offset + size]]
        result = await write(session, batch)
        assert not result.refused
        return int(result.accepted)

    assert await _each_size(sessions, sent, send) == list(SIZES)


async def test_token_checks_heartbeats_and_lists_of_any_size_send_one_statement_each(
    sessions: async_sessionmaker[AsyncSession], sent: Sent, fleet: Any
) -> None:
    digests, placed = fleet

    async def authenticate(session: AsyncSession, _offset: int, size: int) -> list[str]:
        valid = await credentials.authenticate(session, [digests[n] for n in NODES[:size]])
        return sorted(identity.node for identity in valid.values())

    async def heartbeat(session: AsyncSession, _offset: int, size: int) -> int:
        return await db_nodes.heartbeat(session, names=NODES[:size])

    async def assignments(session: AsyncSession, _offset: int, size: int) -> set[uuid.UUID]:
        return {item.replica_id for item in await reports.assignments(session, nodes=NODES[:size])}

    assert await _each_size(sessions, sent, authenticate) == [sorted(NODES[:n]) for n in SIZES]
    assert await _each_size(sessions, sent, heartbeat) == list(SIZES)
    everything = [replica for pairs in placed.values() for replica in pairs]
    # One node's list (a push) has a statement of its own (reports.assignments says why).
    several = (2, 3, 5)
    assert await _each_size(sessions, sent, assignments, several) == [
        {replica for node, replica in everything if node in NODES[:n]} for n in several
    ]


async def test_the_snapshot_of_a_batch_of_any_size_is_three_statements_compiled_once(
    sessions: async_sessionmaker[AsyncSession], sent: Sent, fleet: Any
) -> None:
    """Locks, deployment rows, replicas: the same three statements for 1, 2 or 5 keys."""

    async def observe(session: AsyncSession, _offset: int, size: int) -> tuple[int, int]:
        keys = [("team-a", "web")] + [("team-a", f"absent-{i}") for i in range(size - 1)]
        snapshots = await deployments.observe_many(session, keys)
        assert len(sent) == 3, sent
        return len(snapshots), len(snapshots[("team-a", "web")].replicas)

    every_replica = 2 * sum(SIZES)  # the fleet's deployment: pending and running ones
    assert await _each_size(sessions, sent, observe) == [(n, every_replica) for n in SIZES]
