"""Batched reconciles (issue 15 item 1) against real PostgreSQL.

A batch must leave the same rows as reconciling each object alone, in a number of statements
that does not grow with the batch, and a batch whose transaction conflicts must still place
every key (each one alone). Concurrent batches racing the agents are in
test_node_lifecycle.py's capacity stress test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_quota_enforcement import placed
from test_reconciler import Driver, add_node, agents, condition, reconcile_many, spec

from controller.db import engine as db_engine
from controller.db import queries
from controller.db.quotas import QuotaRecord
from controller.db.store import Store
from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    DeploymentRevision,
    DeploymentStatusHistory,
    User,
)
from controller.kube.resource import parse_spec
from controller.model.quota import QuotaAmounts
from controller.operator import reconciler as reconciler_module
from controller.operator.reconciler import Outcome, Reconciler, Request


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


class Fleet:
    """Objects reconciled in one batch, each with its live status fed back."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], names: list[str], ns: str
    ) -> None:
        self.drivers = [Driver(sessions, name=name, ns=ns) for name in names]
        self.reconciler = self.drivers[0].reconciler

    async def reconcile(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = await reconcile_many(
            self.reconciler,
            [
                Request(driver.ref, parse_spec(driver.ref.name, body), driver.status)
                for driver, body in zip(self.drivers, bodies, strict=True)
            ],
        )
        for driver, result in zip(self.drivers, results, strict=True):
            assert isinstance(result, Outcome), result
            driver.status = result.status
        return [driver.status for driver in self.drivers]


async def rows_of(sessions: async_sessionmaker[AsyncSession], ns: str) -> dict[str, Any]:
    """What the database says of each deployment of `ns`, without ids, nodes and times."""
    async with sessions() as session:
        deployments = (
            await session.execute(
                select(
                    Deployment.id,
                    Deployment.name,
                    Deployment.status,
                    Deployment.status_reason,
                    Deployment.next_ordinal,
                    Deployment.target_replicas,
                    Deployment.revision,
                    Deployment.observed_generation,
                )
                .join(User, User.id == Deployment.user_id)
                .where(User.name == ns)
            )
        ).all()
        found: dict[str, Any] = {}
        for row in deployments:
            replicas = (
                await session.execute(
                    select(
                        DeploymentReplica.ordinal,
                        DeploymentReplica.status,
                        DeploymentReplica.revision,
                        DeploymentReplica.node_id.is_not(None),
                    )
                    .where(DeploymentReplica.deployment_id == row.id)
                    .order_by(DeploymentReplica.ordinal)
                )
            ).all()
            revisions = (
                await session.execute(
                    select(
                        DeploymentRevision.number,
                        DeploymentRevision.hash,
                        DeploymentRevision.completed_at.is_not(None),
                    )
                    .where(DeploymentRevision.deployment_id == row.id)
                    .order_by(DeploymentRevision.number)
                )
            ).all()
            history = (
                await session.execute(
                    select(
                        DeploymentStatusHistory.old_status,
                        DeploymentStatusHistory.new_status,
                        DeploymentStatusHistory.reason,
                    ).where(DeploymentStatusHistory.deployment_id == row.id)
                )
            ).all()
            found[row.name] = (
                tuple(row[2:]),
                [tuple(replica) for replica in replicas],
                [tuple(revision) for revision in revisions],
                sorted(tuple(map(str, step)) for step in history),  # one clock per commit
            )
    return found


def summary(status: dict[str, Any]) -> tuple[Any, ...]:
    """A status without its times and messages: phase, counts and condition reasons."""
    return (
        status.get("phase"),
        status.get("replicas"),
        status.get("readyReplicas"),
        sorted((c["type"], c["status"], c["reason"]) for c in status["conditions"]),
    )


BODIES = [spec(replicas, cpu=0.5) for replicas in (1, 3, 0, 5, 2, 4)]
NAMES = [f"app-{index}" for index in range(len(BODIES))]


async def test_a_batch_leaves_the_same_rows_and_statuses_as_reconciling_each_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for index in range(4):
        await add_node(sessions, f"edge-{index}", cpu=16, memory=65536)
    alone = [Driver(sessions, name=name, ns="alone") for name in NAMES]
    batch = Fleet(sessions, NAMES, ns="batch")
    for _ in range(3):  # create; agents start them; Ready and the revision completed
        statuses_alone = [
            await driver.reconcile(body) for driver, body in zip(alone, BODIES, strict=True)
        ]
        statuses_batch = await batch.reconcile(BODIES)
        assert [summary(s) for s in statuses_batch] == [summary(s) for s in statuses_alone]
        await agents(sessions)
    assert [condition(s, "Ready")["status"] for s in statuses_batch] == ["True"] * len(NAMES)
    by_alone, by_batch = await rows_of(sessions, "alone"), await rows_of(sessions, "batch")
    assert sorted(by_batch) == NAMES
    assert by_batch == by_alone
    assert sum(len(replicas) for _, replicas, _, _ in by_batch.values()) == 15


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements sent to the database while the block runs."""
    issued: list[str] = []

    def count(*args: Any) -> None:
        issued.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield issued
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


@pytest.mark.parametrize("quota", [False, True], ids=["plain", "quota"])
async def test_a_batch_costs_the_same_statements_for_two_objects_as_for_twelve(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], quota: bool
) -> None:
    for index in range(6):
        await add_node(sessions, f"edge-{index}", cpu=64, memory=131072)
    small = Fleet(sessions, [f"s-{index}" for index in range(2)], ns="small")
    large = Fleet(sessions, [f"l-{index}" for index in range(12)], ns="large")
    if quota:  # generous: every key passes the gate, new ones included, in the batch
        for ns in ("small", "large"):
            await set_quota(sessions, ns, replicas=1000, fog_deployments=100)
    figures: dict[str, list[int]] = {"small": [], "large": []}
    gates: list[int] = []
    for _ in range(3):  # create (new namespace, rows, replicas, revisions); started; at rest
        for label, fleet in (("small", small), ("large", large)):
            with counted(engine) as issued:
                statuses = await fleet.reconcile([spec(3, cpu=0.5)] * len(fleet.drivers))
            figures[label].append(len(issued))
            gates.append(sum("FROM quotas" in s and "FOR UPDATE" in s for s in issued))
        await agents(sessions)
    assert figures["small"] == figures["large"], figures
    assert {s["phase"] for s in statuses} == {"Running"}
    # Lock, deployments, replicas and failure counts, revisions: four reads at rest.
    assert figures["large"][-1] == 4, figures
    # With a quota, the creating batch locks its rows once; nothing to place after that.
    assert gates == ([1, 1] if quota else [0, 0]) + [0] * 4, gates


async def test_a_batch_whose_transaction_conflicts_places_every_key_alone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-0", cpu=16, memory=65536)
    # The first INSERT of replicas after this fails as a serialization failure would (a
    # conflict the store retries); a sequence counts the INSERTs, whatever rolls back.
    async with sessions() as session, session.begin():
        for statement in (
            "CREATE SEQUENCE replica_inserts",
            "CREATE FUNCTION conflict_once() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF nextval('replica_inserts') = 1 THEN"
            " RAISE EXCEPTION 'injected conflict' USING ERRCODE = 'serialization_failure';"
            " END IF; RETURN NULL; END $$",
            "CREATE TRIGGER conflict_once BEFORE INSERT ON deployment_replicas"
            " FOR EACH STATEMENT EXECUTE FUNCTION conflict_once()",
        ):
            await session.execute(text(statement))
    fleet = Fleet(sessions, ["a", "b", "c"], ns="team-c")
    statuses = await fleet.reconcile([spec(2, cpu=0.5)] * 3)

    assert [s["phase"] for s in statuses] == ["Scheduled"] * 3
    async with sessions() as session:
        # The batch's INSERT, rolled back, then one per key alone.
        assert await session.scalar(text("SELECT last_value FROM replica_inserts")) == 4
        placed = await session.scalar(
            select(func.count()).where(DeploymentReplica.node_id.is_not(None))
        )
    assert placed == 6


async def test_two_batches_creating_the_same_namespaces_in_opposite_orders_both_commit(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for index in range(10):  # more than both batches lock (4 each): neither is short of room
        await add_node(sessions, f"edge-{index}", cpu=64, memory=262144)
    # Where a batch creates a namespace's row alone, each waits once it has created its
    # first, so that both hold an uncommitted row the other is about to insert.
    real = queries.ensure_user
    both = asyncio.Barrier(2)
    waited: set[int] = set()

    async def ensure_user(session: Any, namespace: str) -> Any:
        user = await real(session, namespace)
        if len(waited) < 2 and id(session) not in waited:
            waited.add(id(session))
            await asyncio.wait_for(both.wait(), 10)  # a bound for a broken test, not a timing
        return user

    monkeypatch.setattr(queries, "ensure_user", ensure_user)
    first = [Driver(sessions, name="a1", ns="ns1"), Driver(sessions, name="a2", ns="ns2")]
    second = [Driver(sessions, name="b2", ns="ns2"), Driver(sessions, name="b1", ns="ns1")]

    async def batch(drivers: list[Driver]) -> list[Outcome | Exception]:
        return await reconcile_many(
            drivers[0].reconciler,
            [Request(d.ref, parse_spec(d.ref.name, spec(1, cpu=0.5)), {}) for d in drivers],
        )

    with counted(engine) as issued:
        results = await asyncio.gather(batch(first), batch(second))
    assert all(isinstance(r, Outcome) for r in results[0] + results[1]), results
    # Each batch's one INSERT of deployments: neither deadlocked and went alone.
    inserts = [s for s in issued if s.startswith("INSERT INTO deployments ")]
    assert len(inserts) == 2, inserts
    async with sessions() as session:
        names = (await session.scalars(select(User.name).order_by(User.name))).all()
    assert names == ["ns1", "ns2"]


async def set_quota(sessions: async_sessionmaker[AsyncSession], ns: str, **hard: int) -> None:
    await Store(sessions).save_quota(
        QuotaRecord(
            namespace=ns,
            name="q",
            uid=f"uid-{ns}",
            generation=1,
            hard=QuotaAmounts(**hard),
            actor="test",
        )
    )


async def test_keys_at_rest_in_a_quota_namespace_are_batched(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_node(sessions, "edge-0", cpu=64, memory=262144)
    await set_quota(sessions, "limited", replicas=1000)
    fleet = Fleet(sessions, [f"d-{index}" for index in range(8)], ns="limited")
    for driver in fleet.drivers:  # created alone: a new deployment goes through the quota gate
        await driver.reconcile(spec(1, cpu=0.5))
    with counted(engine) as issued:
        await fleet.reconcile([spec(1, cpu=0.5)] * 8)
    # Nothing to place, so no quota gate: the batch's four reads, as in any namespace.
    assert len(issued) == 4, issued


async def test_a_batch_under_a_binding_quota_leaves_the_same_rows_as_each_alone(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for index in range(4):
        await add_node(sessions, f"edge-{index}", cpu=16, memory=65536)
    for ns in ("alone", "batch"):  # 15 replicas wanted, 7 admitted; the sixth deployment none
        await set_quota(sessions, ns, replicas=7, fog_deployments=5)
    alone = [Driver(sessions, name=name, ns="alone") for name in NAMES]
    batch = Fleet(sessions, NAMES, ns="batch")
    for round_ in range(3):  # create; agents start them; at rest under the quota
        statuses_alone = [
            await driver.reconcile(body) for driver, body in zip(alone, BODIES, strict=True)
        ]
        with counted(engine) as issued:
            statuses_batch = await batch.reconcile(BODIES)
        if round_ == 0:
            # app-0..2 (1 + 3 + 0 replicas) in the batch; app-3 wants 5 where 3 are left:
            # cut short by the batch, it goes alone, and so do the two younger ones.
            assert sum("pg_advisory_xact_lock" in s for s in issued) == 4
        assert [summary(s) for s in statuses_batch] == [summary(s) for s in statuses_alone]
        stalled = [condition(s, "Stalled")["message"] for s in statuses_batch]
        assert stalled == [condition(s, "Stalled")["message"] for s in statuses_alone]
        await agents(sessions)
    assert [message.split(";")[0] for message in stalled[3:]] == [
        "quota q: replicas 7/7 used, 2 more requested",
        "quota q: replicas 7/7 used, 2 more requested",
        "quota q: fogDeployments 5/5 used, 1 more requested",
    ]
    assert await rows_of(sessions, "batch") == await rows_of(sessions, "alone")
    assert await placed(sessions, "batch") == 7


async def test_concurrent_batches_in_one_namespace_never_pass_the_quota(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for index in range(3):
        await add_node(sessions, f"edge-{index}", cpu=8)
    await set_quota(sessions, "racers", replicas=9, cpu_millis=9000)
    fleets = [
        Fleet(sessions, [f"racer-{fleet}-{index}" for index in range(4)], ns="racers")
        for fleet in range(3)
    ]
    for _ in range(3):  # several rounds: later ones see what the first left
        await asyncio.gather(*(fleet.reconcile([spec(2)] * 4) for fleet in fleets))
        await agents(sessions)
    assert await placed(sessions, "racers") == 9


async def test_one_keys_bug_in_a_batch_fails_that_key_alone(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_node(sessions, "edge-0", cpu=16, memory=65536)
    intend = Reconciler._intend

    def buggy(self: Reconciler, request: Request, *args: Any) -> Any:
        if request.ref.name == "poison":  # a bug one object's data trips (in the model, say)
            raise ValueError("bug in poison's data")
        return intend(self, request, *args)

    monkeypatch.setattr(Reconciler, "_intend", buggy)
    drivers = [Driver(sessions, name=name, ns="team") for name in ("a", "poison", "c")]
    results = await reconcile_many(
        drivers[0].reconciler,
        [Request(d.ref, parse_spec(d.ref.name, spec(2, cpu=0.5)), {}) for d in drivers],
    )
    assert isinstance(results[0], Outcome), results
    assert isinstance(results[1], ValueError), results
    assert isinstance(results[2], Outcome), results
    assert [results[0].status["phase"], results[2].status["phase"]] == ["Scheduled"] * 2


async def test_the_candidate_budget_is_the_batchs_not_each_groups(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for zone in ("a", "b"):
        for index in range(4):
            await add_node(
                sessions, f"{zone}-{index}", cpu=64, memory=131072, labels={"zone": zone}
            )
    # Two groups (one per selector) of 2 replicas want 4 candidates each; the batch may lock 4.
    monkeypatch.setattr(reconciler_module, "MAX_BATCH_CANDIDATES", 4)
    fleet = Fleet(sessions, ["in-a", "in-b"], ns="zones")
    bodies = [{**spec(2, cpu=0.5), "nodeSelector": {"zone": zone}} for zone in ("a", "b")]
    with counted(engine) as issued:
        statuses = await fleet.reconcile(bodies)
    assert [s["phase"] for s in statuses] == ["Scheduled"] * 2
    # The batch placed the first group; the budget spent, the second went alone: two
    # transactions, each with its lock statement.
    assert sum("pg_advisory_xact_lock" in statement for statement in issued) == 2


async def test_new_revision_rows_with_and_without_an_actor_are_one_insert(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_node(sessions, "edge-0", cpu=64, memory=131072)
    fleet = Fleet(sessions, ["known", "unknown"], ns="actors")
    known = fleet.drivers[0]
    known.ref = replace(known.ref, manager="kubectl")  # the other's manager is None
    with counted(engine) as issued:
        await fleet.reconcile([spec(1, cpu=0.5)] * 2)
    inserts = [s for s in issued if s.startswith("INSERT INTO deployment_revisions")]
    assert len(inserts) == 1, inserts
    async with sessions() as session:
        actors = await session.scalars(
            select(DeploymentRevision.created_by).order_by(DeploymentRevision.created_by)
        )
        assert list(actors) == ["kubectl", None]
