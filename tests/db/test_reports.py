"""Bad agent reports, generated, against the real database: refused, and recorded nowhere.

An agent is a program on a machine we do not control: it may report a replica that does not
exist, one on another node, a change the state machine forbids, or values the columns cannot
hold (a NUL character, a lone surrogate, an enormous reason, a status that is no status, an id
that is no UUID). Each such report must come back in `refused` with a reason, and leave every
table as it was: no replica row changed, no history row, no deployment status moved.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.db import reports
from controller.db.tables import DeploymentReplica, ReplicaStatusHistory
from controller.model.protocol import CONTAINER_ID_MAX, REASON_MAX, Report
from controller.model.resources import Resources
from controller.model.states import REPLICA_TRANSITIONS, ReplicaStatus

NODE = "edge-1"
OTHER_NODE = "edge-2"
# The tables a report may write, directly or through triggers, read whole.
SNAPSHOT = (
    "SELECT * FROM deployment_replicas ORDER BY id",
    "SELECT * FROM replica_status_history ORDER BY id",
    "SELECT * FROM deployments ORDER BY id",
    "SELECT * FROM deployment_status_history ORDER BY id",
    "SELECT * FROM nodes ORDER BY id",
)


def generated(test: Callable[..., Any]) -> Callable[..., Any]:
    """A test drawing its reports from `data`, on one database for all its examples.

    Sharing the function-scoped database between examples is the point: a refused report must
    change nothing, so every example starts from the same rows.
    """
    shared = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    return given(data=st.data())(shared(test))


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


@pytest.fixture
async def replicas(sessions: async_sessionmaker[AsyncSession]) -> dict[ReplicaStatus, uuid.UUID]:
    """One replica on NODE in each status, by status (and OTHER_NODE, holding none)."""
    async with sessions() as session, session.begin():
        owner = await rows.user(session)
        edge = await rows.node(session, NODE)
        await rows.node(session, OTHER_NODE)
        deployment = await rows.deployment(session, owner, target_replicas=len(ReplicaStatus))
        made = {
            status: await rows.replica(session, deployment, ordinal, node_id=edge.id, status=status)
            for ordinal, status in enumerate(ReplicaStatus)
        }
    return {status: row.id for status, row in made.items()}


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> list[list[Any]]:
    async with sessions() as session:
        return [list((await session.execute(text(query))).all()) for query in SNAPSHOT]


async def send(sessions: async_sessionmaker[AsyncSession], batch: list[Report]) -> Any:
    async with sessions() as session, session.begin():
        return await reports.report(session, batch)


# --------------------------------------------------------------------------- the strategies

# Text an agent may legitimately send: no NUL, no surrogates, short.
fine_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40
)
garbage_text = st.one_of(
    fine_text.map(lambda t: f"{t}\x00{t}"),  # PostgreSQL text cannot hold NUL
    st.characters(categories=["Cs"]).map(lambda c: f"bad{c}"),  # not encodable as UTF-8
    st.integers(),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
)


def too_long(limit: int) -> st.SearchStrategy[str]:
    return st.integers(limit + 1, limit * 4).map(lambda n: "x" * n)


def legal_next(status: ReplicaStatus) -> list[ReplicaStatus]:
    return sorted(REPLICA_TRANSITIONS[status])


def illegal_next(status: ReplicaStatus) -> list[ReplicaStatus]:
    return sorted(set(ReplicaStatus) - REPLICA_TRANSITIONS[status])


LIVE = [s for s in ReplicaStatus if REPLICA_TRANSITIONS[s]]


@st.composite
def bad_report(draw: Callable[..., Any], ids: dict[ReplicaStatus, uuid.UUID]) -> tuple[Report, str]:
    """A report that must be refused, and a fragment of the reason it must be refused with."""
    kind = draw(st.sampled_from(["unknown", "wrong node", "illegal", "garbage"]))
    current = draw(st.sampled_from(LIVE))
    good = Report(
        node=NODE,
        replica_id=ids[current],
        status=draw(st.sampled_from(legal_next(current))),
        reason=draw(fine_text),
        container_id=draw(st.none() | fine_text),
    )
    if kind == "unknown":
        unknown = draw(st.uuids().filter(lambda u: u not in ids.values()))
        return Report(**{**_fields(good), "replica_id": unknown}), "unknown replica"
    if kind == "wrong node":
        node = draw(st.sampled_from([OTHER_NODE, "", NODE.upper()]) | fine_text)
        return Report(**{**_fields(good), "node": node}), "is not on node"
    if kind == "illegal":
        # Any replica, terminal ones included, and a status its state may not move to
        # (there is always one: no status moves to itself).
        held = draw(st.sampled_from(list(ReplicaStatus)))
        status = draw(st.sampled_from(illegal_next(held)))
        return Report(**{**_fields(good), "replica_id": ids[held], "status": status}), "illegal"
    field, value, why = draw(
        st.one_of(
            st.tuples(st.just("replica_id"), garbage_text | fine_text, st.just("not a UUID")),
            st.tuples(
                st.just("status"),
                garbage_text | fine_text.filter(lambda t: t not in set(ReplicaStatus)),
                st.just("unknown replica status"),
            ),
            st.tuples(st.just("reason"), garbage_text | too_long(REASON_MAX), st.just("reason")),
            st.tuples(
                st.just("container_id"),
                garbage_text | too_long(CONTAINER_ID_MAX),
                st.just("container id"),
            ),
        )
    )
    return Report(**{**_fields(good), field: value}), why


def _fields(report: Report) -> dict[str, Any]:
    return {name: getattr(report, name) for name in Report.__dataclass_fields__}


# --------------------------------------------------------------------------- the tests


@generated
async def test_bad_reports_are_refused_and_recorded_nowhere(
    sessions: async_sessionmaker[AsyncSession],
    replicas: dict[ReplicaStatus, uuid.UUID],
    data: st.DataObject,
) -> None:
    before = await snapshot(sessions)
    batch = data.draw(st.lists(bad_report(replicas), min_size=1, max_size=5))
    result = await send(sessions, [report for report, _ in batch])
    assert result.accepted == 0
    assert len(result.refused) == len(batch)
    for (_, why), (_, expected) in zip(result.refused, batch, strict=True):
        assert expected in why
    assert await snapshot(sessions) == before


@generated
async def test_a_legal_report_among_bad_ones_is_the_only_one_written(
    sessions: async_sessionmaker[AsyncSession],
    replicas: dict[ReplicaStatus, uuid.UUID],
    data: st.DataObject,
) -> None:
    # Each example moves the starting replica on to running and puts it back afterwards, so
    # the next example starts from the same rows (the history keeps growing, as it should).
    bad = data.draw(st.lists(bad_report(replicas), min_size=1, max_size=4))
    legal = Report(NODE, replicas[ReplicaStatus.STARTING], ReplicaStatus.RUNNING, "Started", "c1")
    position = data.draw(st.integers(0, len(bad)))
    batch = [report for report, _ in bad]
    batch.insert(position, legal)
    history_before = await history_count(sessions)
    try:
        result = await send(sessions, batch)
        assert result.accepted == 1
        assert len(result.refused) == len(bad)
        assert await history_count(sessions) == history_before + 1
        async with sessions() as session:
            row = await session.get(DeploymentReplica, legal.replica_id)
            assert row is not None
            assert (row.status, row.status_reason, row.container_id) == ("running", "Started", "c1")
            assert row.status_actor == reports.agent_actor(NODE)
    finally:
        async with sessions() as session, session.begin():
            row = await session.get(DeploymentReplica, legal.replica_id)
            assert row is not None
            row.status = ReplicaStatus.STARTING


async def test_a_reason_is_bounded_in_bytes_so_its_history_row_fits_the_index(
    sessions: async_sessionmaker[AsyncSession], replicas: dict[ReplicaStatus, uuid.UUID]
) -> None:
    # Emoji are 4 bytes each, and varied ones do not compress: the history index carries the
    # reason (migration 0014), and a B-tree entry holds at most 2,704 bytes.
    pick = random.Random(0)
    emoji = "".join(chr(pick.randrange(0x1F300, 0x1F5FF)) for _ in range(REASON_MAX // 4 + 1))
    replica = replicas[ReplicaStatus.STARTING]
    too_long = Report(NODE, replica, ReplicaStatus.RUNNING, emoji, "c1")
    refused = await send(sessions, [too_long])
    assert (refused.accepted, len(refused.refused)) == (0, 1)
    assert f"longer than {REASON_MAX} bytes" in refused.refused[0][1]
    history_before = await history_count(sessions)
    try:
        fits = Report(NODE, replica, ReplicaStatus.RUNNING, emoji[: REASON_MAX // 4], "c1")
        assert (await send(sessions, [fits])).accepted == 1
        assert await history_count(sessions) == history_before + 1
    finally:
        async with sessions() as session, session.begin():
            row = await session.get(DeploymentReplica, replica)
            assert row is not None
            row.status = ReplicaStatus.STARTING


async def history_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return len((await session.execute(select(ReplicaStatusHistory.id))).all())


async def test_a_node_with_the_longest_name_can_report(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The longest name `register` takes still fits its agent's actor in the history."""
    name = "n" * db_nodes.NODE_NAME_MAX
    capacity = Resources.from_cores(cpu_cores=4, memory_mb=8192, gpu_units=0, storage_gb=100)
    async with sessions() as session, session.begin():
        node_id = await db_nodes.register(session, name=name, capacity=capacity, labels={})
        deployment = await rows.deployment(session, await rows.user(session))
        replica = await rows.replica(session, deployment, 0, node_id=node_id)
    result = await send(sessions, [Report(name, replica.id, ReplicaStatus.STARTING, "Pulling")])
    assert (result.accepted, result.refused) == (1, [])
    async with sessions() as session:
        actors = (await session.execute(select(ReplicaStatusHistory.actor))).scalars().all()
    assert reports.agent_actor(name) in actors


async def test_replicas_placed_together_are_listed_in_id_order_every_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One transaction's replicas share created_at; the list's order must not depend on luck.

    The simulated agent takes a list equal to the last one as sent for unchanged (and parses
    nothing): an order that differs between two reads of the same rows defeats that.
    """
    ids = sorted((uuid.uuid4() for _ in range(12)), reverse=True)  # inserted last-first
    async with sessions() as session, session.begin():
        deployment = await rows.deployment(session, await rows.user(session), target_replicas=24)
        for node, name in enumerate((NODE, OTHER_NODE)):
            edge = await rows.node(session, name)
            for ordinal, replica in enumerate(ids[node::2]):
                await rows.replica(
                    session,
                    deployment,
                    2 * ordinal + node,
                    node_id=edge.id,
                    id=replica,
                    cpu_millicores=500,
                )
    async with sessions() as session:
        one = await reports.assignments(session, nodes=[NODE])
        both = await reports.assignments(session, nodes=[NODE, OTHER_NODE])
    assert [item.replica_id for item in one] == sorted(ids[0::2])
    assert [(item.node, item.replica_id) for item in both] == [
        *((NODE, replica) for replica in sorted(ids[0::2])),
        *((OTHER_NODE, replica) for replica in sorted(ids[1::2])),
    ]
