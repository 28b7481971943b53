"""Fenced leadership on real Postgres: only the current epoch's writes commit.

Two `Store`s play two operator processes. The Lease itself is Kubernetes' business (tested end
to end); here the question is what the database lets through once a successor has taken over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, spec

from controller.db import engine as db_engine
from controller.db.errors import FencedError
from controller.db.store import Store, Transaction
from controller.db.tables import Deployment, Leadership
from controller.operator.reconciler import Reconciler

ELECTION = "fog-controller"


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


def elected(sessions: async_sessionmaker[AsyncSession]) -> Store:
    store = Store(sessions)
    store.elect()
    return store


async def deployments(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Deployment)) or 0)


async def test_a_candidate_writes_nothing_before_it_leads(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    driver.reconciler = Reconciler(elected(sessions))
    with pytest.raises(FencedError, match="not the leader"):
        await driver.reconcile(spec(1))
    assert await deployments(sessions) == 0


async def test_a_deposed_leader_writes_nothing_once_a_successor_leads(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    old, new = elected(sessions), elected(sessions)
    assert await old.lead(election=ELECTION, holder="pod-a") == 1
    driver = Driver(sessions)
    driver.reconciler = Reconciler(old)
    await driver.reconcile(spec(1))
    assert await deployments(sessions) == 1

    # The old leader is paused past its Lease; the standby wins it and advances the epoch.
    assert await new.lead(election=ELECTION, holder="pod-b") == 2
    late = Driver(sessions, name="late")
    late.reconciler = Reconciler(old)  # the old leader wakes and carries on where it was
    with pytest.raises(FencedError, match="epoch 1 of fog-controller is over"):
        await late.reconcile(spec(2))
    assert await deployments(sessions) == 1  # its late write rolled back
    with pytest.raises(FencedError):
        await old.mark_lost_nodes(grace=timedelta(seconds=40))
    async with sessions() as session:
        row = await session.scalar(select(Leadership))
    assert row is not None
    assert (row.epoch, row.holder) == (2, "pod-b")


async def test_the_new_epoch_waits_for_the_old_leaders_transactions_in_flight(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A transaction that passed the fence commits before the successor's epoch begins."""
    old, new = elected(sessions), elected(sessions)
    await old.lead(election=ELECTION, holder="pod-a")
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(tx: Transaction) -> None:
        await tx.observe(namespace="team-a", name="web")
        inside.set()
        await release.wait()

    in_flight = asyncio.create_task(old.transaction(slow))
    await inside.wait()
    takeover = asyncio.create_task(new.lead(election=ELECTION, holder="pod-b"))
    await asyncio.sleep(0.5)
    assert not takeover.done()  # held back by the old leader's open transaction
    release.set()
    await in_flight  # it committed under epoch 1
    assert await takeover == 2
