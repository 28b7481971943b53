"""The history tables partitioned by month (migration 0010): rows, triggers, cascades, retention.

A real PostgreSQL throughout: partition routing, foreign keys on partitioned tables and
DROP TABLE of a partition are the server's behaviour, which a fake would only restate.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import rows
from sqlalchemy import create_engine, delete, pool, text, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from controller.db import migrate, partitions
from controller.db.store import Store
from controller.db.tables import Deployment, DeploymentReplica, User
from controller.model.partitions import HISTORY_TABLES, Month, Partition
from controller.model.states import DeploymentStatus, ReplicaStatus
from controller.operator.history import HistoryPartitions
from controller.operator.metrics import Metrics
from controller.sandbox import ports

# Which partition holds each history row of a deployment, and the row's status.
_WHERE = text(
    "SELECT tableoid::regclass::text, new_status::text FROM {table}"
    " WHERE deployment_id = :deployment ORDER BY changed_at"
)
# The revision just before the history tables were partitioned.
BEFORE = "0009"


async def _placed(session: AsyncSession, table: str, deployment: Deployment) -> list[object]:
    """Each history row of `deployment` in `table`: (the partition holding it, new status)."""
    query = text(str(_WHERE).format(table=table))
    return list((await session.execute(query, {"deployment": deployment.id})).all())


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def _deployment_with_replica(session: AsyncSession) -> tuple[Deployment, DeploymentReplica]:
    owner = await rows.user(session)
    edge = await rows.node(session)
    deployment = await rows.deployment(session, owner)
    replica = await rows.replica(session, deployment, 0, node_id=edge.id)
    return deployment, replica


async def _this_month(session: AsyncSession) -> Month:
    """The database's month (its clock writes changed_at), not the test process's."""
    return Month.of(await session.scalar(text("SELECT now()")))


async def test_triggers_write_history_into_this_months_partition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        deployment, replica = await _deployment_with_replica(session)
        await session.flush()
        await session.execute(
            update(DeploymentReplica)
            .where(DeploymentReplica.id == replica.id)
            .values(status=ReplicaStatus.RUNNING)
        )
        await session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id)
            .values(status=DeploymentStatus.RUNNING)
        )
        month = await _this_month(session)
    async with sessions() as session:
        replica_rows = await _placed(session, "replica_status_history", deployment)
        own_rows = await _placed(session, "deployment_status_history", deployment)
    replica_partition = Partition("replica_status_history", month).name
    own_partition = Partition("deployment_status_history", month).name
    assert replica_rows == [(replica_partition, "pending"), (replica_partition, "running")]
    assert own_rows == [(own_partition, "pending"), (own_partition, "running")]


async def test_a_row_moved_back_a_month_moves_to_last_months_partition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Tests and repairs shift changed_at; the row must follow into the older partition."""
    async with sessions() as session, session.begin():
        deployment, _ = await _deployment_with_replica(session)
        month = await _this_month(session)
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE replica_status_history SET changed_at = changed_at - interval '1 month'"
                " WHERE deployment_id = :deployment"
            ),
            {"deployment": deployment.id},
        )
        found = await _placed(session, "replica_status_history", deployment)
    assert found == [(Partition("replica_status_history", month.plus(-1)).name, "pending")]


async def test_deleting_a_deployment_cascades_into_every_partition(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        deployment, _ = await _deployment_with_replica(session)
    async with sessions() as session, session.begin():
        # One row in last month's partition too: the cascade must find it there.
        await session.execute(
            text(
                "INSERT INTO deployment_status_history (deployment_id, new_status, changed_at)"
                " VALUES (:deployment, 'pending', now() - interval '1 month')"
            ),
            {"deployment": deployment.id},
        )
        await session.execute(delete(Deployment).where(Deployment.id == deployment.id))
    async with sessions() as session:
        left = await session.scalar(
            text(
                "SELECT (SELECT count(*) FROM deployment_status_history)"
                " + (SELECT count(*) FROM replica_status_history)"
            )
        )
    assert left == 0


async def test_deleting_the_changing_user_keeps_the_history_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The seed: `changed_by` user deleted -> history entry preserved (SET NULL)."""
    async with sessions() as session, session.begin():
        deployment, _ = await _deployment_with_replica(session)
        admin = await rows.user(session, "admin")
        await session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id)
            .values(status=DeploymentStatus.STOPPED, status_changed_by=admin.id)
        )
    async with sessions() as session, session.begin():
        await session.execute(delete(User).where(User.id == admin.id))
    async with sessions() as session:
        kept = (
            await session.execute(
                text(
                    "SELECT new_status::text, changed_by FROM deployment_status_history"
                    " WHERE deployment_id = :deployment ORDER BY changed_at"
                ),
                {"deployment": deployment.id},
            )
        ).all()
    assert kept == [("pending", None), ("stopped", None)]


async def _maintain(
    sessions: async_sessionmaker[AsyncSession], now: datetime, retention: timedelta | None
) -> partitions.Maintenance:
    async with sessions() as session, session.begin():
        return await partitions.maintain(session, retention=retention, now=now)


async def test_maintenance_is_idempotent_even_when_two_run_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two operators at once: the advisory lock makes one wait, then find nothing to do."""
    later = datetime.now(UTC) + timedelta(days=200)  # months the migration did not create
    first, second = await asyncio.gather(
        _maintain(sessions, later, None), _maintain(sessions, later, None)
    )
    created = [p.name for p in first.created + second.created]
    assert sorted(created) == sorted(set(created))  # none created twice
    async with sessions() as session:
        present = set(await partitions.existing(session))
    assert {p.name for p in partitions.wanted(later)} <= present
    again = await _maintain(sessions, later, None)
    assert (again.created, again.dropped) == ([], [])


async def test_retention_drops_only_whole_months_older_than_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        deployment, _ = await _deployment_with_replica(session)
        now = await session.scalar(text("SELECT now()"))
        this = Month.of(now)
        for months_back in range(2, 7):
            for table in HISTORY_TABLES:
                await session.execute(
                    text(partitions.create_statement(Partition(table, this.plus(-months_back))))
                )
        # One row in the middle of each month from six months back to now.
        for months_back in range(7):
            await session.execute(
                text(
                    "INSERT INTO deployment_status_history (deployment_id, new_status, changed_at)"
                    " VALUES (:deployment, 'running', :at)"
                ),
                {"deployment": deployment.id, "at": this.plus(-months_back).start + timedelta(15)},
            )
    retention = timedelta(days=100)
    cutoff = now - retention
    done = await _maintain(sessions, now, retention)
    expected = sorted(
        Partition(table, this.plus(-back))
        for table in HISTORY_TABLES
        for back in range(1, 7)
        if this.plus(-back).end <= cutoff
    )
    assert done.dropped == expected
    assert done.dropped  # 100 days drop at least the three oldest months of each table
    async with sessions() as session:
        present = set(await partitions.existing(session))
        oldest_kept = await session.scalar(
            text("SELECT min(changed_at) FROM deployment_status_history")
        )
    assert not present & {p.name for p in done.dropped}
    # Every row younger than the retention is still there; the oldest kept row is at most a
    # month older than the cut-off (its month has not wholly aged out yet).
    assert oldest_kept is not None
    assert cutoff - timedelta(days=31) < oldest_kept
    assert Month.of(oldest_kept).end > cutoff
    assert (await _maintain(sessions, now, retention)).dropped == []


async def test_retention_never_drops_a_partition_named_by_someone_else(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "CREATE TABLE archive_2001 PARTITION OF replica_status_history"
                " FOR VALUES FROM ('2001-01-01 00:00+00') TO ('2001-02-01 00:00+00')"
            )
        )
    done = await _maintain(sessions, datetime.now(UTC), timedelta(days=1))
    async with sessions() as session:
        present = set(await partitions.existing(session))
    assert done.dropped  # last month's partitions went: the retention did run
    assert "archive_2001" in present


async def test_the_operators_loop_drops_and_counts_each_expired_month_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The loop as the operator runs it: the real store, its own metrics registry."""
    metrics = Metrics()
    loop = HistoryPartitions(store=Store(sessions), retention=timedelta(days=32), metrics=metrics)
    async with sessions() as session, session.begin():
        # Three months back: its end is at least 59 days old, so 32 days' retention drops it,
        # while last month's partition (from the migration) ends less than 32 days ago.
        old_month = (await _this_month(session)).plus(-3)
        for table in HISTORY_TABLES:
            await session.execute(text(partitions.create_statement(Partition(table, old_month))))

    first = await loop.maintain()
    second = await loop.maintain()

    assert first is not None
    assert second is not None
    assert first.dropped == [Partition(table, old_month) for table in HISTORY_TABLES]
    assert (second.created, second.dropped) == ([], [])
    for table in HISTORY_TABLES:
        dropped = metrics.registry.get_sample_value(
            "fog_history_partitions_dropped_total", {"table": table}
        )
        assert dropped == 1


async def test_the_loop_skips_a_pass_while_the_database_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage is a skipped pass (retried in a minute), logged, never a crashed loop."""
    nobody = URL.create("postgresql+psycopg", host="127.0.0.1", port=ports.free_port())
    engine = create_async_engine(nobody, connect_args={"connect_timeout": 2})
    metrics = Metrics()
    loop = HistoryPartitions(
        store=Store(async_sessionmaker(engine)), retention=timedelta(days=1), metrics=metrics
    )
    try:
        assert await loop.maintain() is None
    finally:
        await engine.dispose()
    assert "history partitions not maintained this time" in caplog.text
    assert (
        metrics.registry.get_sample_value(
            "fog_history_partitions_dropped_total", {"table": "replica_status_history"}
        )
        is None
    )


def _execute(url: URL, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


# Every history row, with the kind of table holding it ('r' plain, 'p' partitioned parent).
_ALL_ROWS = (
    "SELECT 'deployment', id, changed_at, new_status::text FROM deployment_status_history"
    " UNION ALL"
    " SELECT 'replica', id, changed_at, new_status::text FROM replica_status_history"
    " ORDER BY 1, 3, 2"
)
_KINDS = (
    "SELECT relname, relkind::text FROM pg_class"
    " WHERE relname IN ('deployment_status_history', 'replica_status_history') ORDER BY 1"
)


def test_migrating_up_down_and_up_again_keeps_every_row(empty_database_url: URL) -> None:
    url = empty_database_url
    migrate.upgrade(url, BEFORE)
    # A deployment whose story spans fourteen months, in both histories.
    _execute(
        url,
        "WITH u AS (INSERT INTO users (name) VALUES ('team-a') RETURNING id),"
        " d AS (INSERT INTO deployments (user_id, name, container_image, target_replicas,"
        " revision) SELECT id, 'web', 'nginx', 1, 'r1' FROM u RETURNING id),"
        " r AS (INSERT INTO deployment_replicas (deployment_id, ordinal, revision,"
        " cpu_millicores, memory_mb, gpu_units, storage_gb)"
        " SELECT id, 0, 'r1', 500, 512, 0, 1 FROM d RETURNING id, deployment_id)"
        " INSERT INTO replica_status_history (replica_id, deployment_id, new_status, changed_at)"
        " SELECT r.id, r.deployment_id, 'running', now() - make_interval(days => 30 * m)"
        " FROM r, generate_series(1, 14) m",
    )
    _execute(
        url,
        "INSERT INTO deployment_status_history (deployment_id, new_status, changed_at)"
        " SELECT id, 'running', now() - interval '400 days' FROM deployments",
    )
    before = _execute(url, _ALL_ROWS)
    assert len(before) == 14 + 1 + 2  # the generated rows, and the triggers' first rows

    migrate.upgrade(url)
    assert _execute(url, _ALL_ROWS) == before
    assert _execute(url, _KINDS) == [
        ("deployment_status_history", "p"),
        ("replica_status_history", "p"),
    ]
    # Every row sits in the partition of its own month (the oldest month got one).
    misplaced = _execute(
        url,
        "SELECT tableoid::regclass::text, changed_at FROM replica_status_history"
        " WHERE tableoid::regclass::text"
        " <> 'replica_status_history_p' || to_char(changed_at AT TIME ZONE 'UTC', 'YYYY_MM')",
    )
    assert misplaced == []

    migrate.downgrade(url, BEFORE)
    assert _execute(url, _ALL_ROWS) == before
    assert _execute(url, _KINDS) == [
        ("deployment_status_history", "r"),
        ("replica_status_history", "r"),
    ]

    migrate.upgrade(url)
    assert _execute(url, _ALL_ROWS) == before
