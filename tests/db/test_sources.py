"""The notification source against real PostgreSQL: LISTEN, malformed payloads, reconnects.

One NOTIFY whose payload was not a UUID used to end the LISTEN loop for good: agent reports
stopped reaching status until the 10-minute resync. These run the operator's real listener
(`notify.listen` under `Sources.listen` and `Sources.resolve`) on a real connection.
"""

from __future__ import annotations

import asyncio
import functools
import uuid

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from test_reconciler import Driver, add_node, spec

from controller.db import engine as db_engine
from controller.db import notify
from controller.db.store import Store
from controller.db.tables import Deployment
from controller.operator.objects import ObservedObjects
from controller.operator.sources import Sources
from controller.operator.supervisor import Progress

# How long a notification may take to reach the queue on a busy machine; it takes
# milliseconds.
DELIVERY_SECONDS = 10.0


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db_engine.make_sessions(engine)


def send(url: URL, payload: str) -> None:
    """NOTIFY on the operator's channel from another connection, as a trigger would."""
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SELECT pg_notify(%s, %s)", (notify.CHANNEL, payload))


def terminate_listeners(url: URL) -> None:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE 'LISTEN%%'"
        )


class Listening:
    """Sources wired to a queue of their own, their two notification loops running."""

    def __init__(self, url: URL, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.queued: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.sources = Sources(
            objects=ObservedObjects(),
            enqueue=self.queued.put_nowait,
            forget=lambda key: None,
            listen=functools.partial(notify.listen, url),
            keys_of=Store(sessions).deployment_keys,
            resync_seconds=600,
        )
        self.progress = Progress()
        self.tasks = [
            asyncio.create_task(self.sources.listen(self.progress)),
            asyncio.create_task(self.sources.resolve(Progress())),
        ]

    async def wait_listening(self, url: URL) -> None:
        """Until the listener's connection is up (a NOTIFY sent before that is lost)."""
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        for _ in range(200):
            with psycopg.connect(conninfo, autocommit=True) as connection:
                listening = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
                ).fetchone()
            if listening and listening[0]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the listener never connected")

    async def next_key(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.queued.get(), timeout=DELIVERY_SECONDS)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in self.tasks:
            assert task.cancelled(), task  # neither loop ended on its own


async def deployment_id(sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    await driver.reconcile(spec(1))
    async with sessions() as session:
        found: uuid.UUID = (await session.execute(select(Deployment.id))).scalar_one()
    return found


async def test_a_malformed_payload_is_skipped_and_the_listener_keeps_going(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    known = await deployment_id(sessions)
    listening = Listening(database_url, sessions)
    try:
        await listening.wait_listening(database_url)
        send(database_url, "not-a-uuid")
        send(database_url, "")
        send(database_url, str(known))
        assert await listening.next_key() == ("team-a", "web")
        send(database_url, str(uuid.uuid4()))  # a deployment that is gone: nothing queued
        send(database_url, str(known))
        assert await listening.next_key() == ("team-a", "web")
        assert listening.queued.empty()
    finally:
        await listening.stop()


async def test_the_listener_reconnects_and_requeues_what_it_may_have_missed(
    database_url: URL, sessions: async_sessionmaker[AsyncSession]
) -> None:
    known = await deployment_id(sessions)
    listening = Listening(database_url, sessions)
    watched = {"namespace": "team-b", "name": "api", "uid": "u-2", "generation": 1}
    listening.sources.observe({"metadata": watched, "spec": {}}, deleted=False)
    try:
        assert await listening.next_key() == ("team-b", "api")  # new to the watch
        await listening.wait_listening(database_url)
        # The first connection too: a report sent before it was heard by nobody.
        assert await listening.next_key() == ("team-b", "api")
        assert listening.queued.empty()
        terminate_listeners(database_url)
        # Whatever was notified while it was away is lost: every known object is requeued.
        assert await listening.next_key() == ("team-b", "api")
        await listening.wait_listening(database_url)
        send(database_url, str(known))
        assert await listening.next_key() == ("team-a", "web")
    finally:
        await listening.stop()
