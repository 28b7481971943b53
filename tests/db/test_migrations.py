"""The migration chain produces exactly the declared schema, and round-trips.

Tables are compared with the models (Alembic's autogenerate diff); functions and triggers, which
models do not describe, with the sets declared here, as procrastinate's schema check does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.engine import URL

from controller.db import migrate, partitions
from controller.db.tables import Base
from controller.model.partitions import HISTORY_TABLES, MONTHS_AHEAD, Month, Partition

# Our trigger functions (name, argument types) and triggers (name, table, timing and events,
# function), as the migrations declare them: the schema is more than its tables.
OUR_FUNCTIONS = {
    ("fog_replica_holds_capacity", "s replicastatus, node uuid"),
    ("fog_track_allocation", ""),
    ("fog_record_replica_transition", ""),
    ("fog_record_deployment_transition", ""),
    ("fog_notify_replica_change", ""),
    ("fog_count_failures", ""),
    ("fog_fence", "expected bigint, election text"),
    ("fog_notify_assignment", ""),
    ("fog_notify_revoked", ""),
    ("fog_record_quota_change", ""),
    ("fog_wake_quota_waiters", "tenant uuid"),
    ("fog_quota_room_freed", ""),
    ("fog_stamp_assignment", ""),
}
OUR_TRIGGERS = {
    (
        "deployment_replicas_track_allocation",
        "deployment_replicas",
        "AFTER INSERT OR DELETE OR UPDATE OF status, node_id, cpu_millicores, memory_mb,"
        " gpu_units, storage_gb",
        "fog_track_allocation",
    ),
    (
        "deployment_replicas_record_transition",
        "deployment_replicas",
        "AFTER INSERT OR UPDATE OF status, health",
        "fog_record_replica_transition",
    ),
    (
        "deployment_replicas_notify_health",
        "deployment_replicas",
        "AFTER UPDATE OF health",
        "fog_notify_replica_change",
    ),
    (
        "deployment_revisions_notify_promotion",
        "deployment_revisions",
        "AFTER UPDATE OF promoted_at",
        "fog_notify_replica_change",
    ),
    (
        "deployments_record_transition",
        "deployments",
        "AFTER INSERT OR UPDATE OF status",
        "fog_record_deployment_transition",
    ),
    (
        "deployment_replicas_notify",
        "deployment_replicas",
        "AFTER UPDATE OF status",
        "fog_notify_replica_change",
    ),
    (
        "deployment_replicas_count_failures",
        "deployment_replicas",
        "AFTER UPDATE OF status",
        "fog_count_failures",
    ),
    (
        "deployment_replicas_assign_insert",
        "deployment_replicas",
        "AFTER INSERT",
        "fog_notify_assignment",
    ),
    (
        "deployment_replicas_assign_update",
        "deployment_replicas",
        "AFTER UPDATE OF status, node_id",
        "fog_notify_assignment",
    ),
    (
        "node_credentials_revoked",
        "node_credentials",
        "AFTER DELETE",
        "fog_notify_revoked",
    ),
    (
        "quotas_record_change",
        "quotas",
        "AFTER INSERT OR DELETE OR UPDATE",
        "fog_record_quota_change",
    ),
    (
        "deployment_replicas_quota_room",
        "deployment_replicas",
        "AFTER UPDATE OF status, node_id",
        "fog_quota_room_freed",
    ),
    ("deployments_quota_room", "deployments", "AFTER UPDATE OF deleted_at", "fog_quota_room_freed"),
    ("quotas_room", "quotas", "AFTER INSERT OR DELETE OR UPDATE", "fog_quota_room_freed"),
    (
        "deployment_replicas_stamp_assignment",
        "deployment_replicas",
        "BEFORE UPDATE OF node_id",
        "fog_stamp_assignment",
    ),
}
# Reads what pg_get_triggerdef says between the table and FOR EACH ROW, e.g.
# "CREATE TRIGGER t AFTER INSERT OR UPDATE OF status ON deployments FOR EACH ROW ...".
_TRIGGERS = text(
    "SELECT t.tgname, c.relname,"
    " substring(pg_get_triggerdef(t.oid) FROM 'CREATE TRIGGER \\S+ (.*) ON '),"
    " p.proname"
    " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid"
    " WHERE NOT t.tgisinternal"
)
_FUNCTIONS = text(
    "SELECT p.proname, pg_get_function_arguments(p.oid) FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
)

OUR_TABLES = {
    "users",
    "nodes",
    "node_leases",
    "leadership",
    "node_credentials",
    "deployments",
    "deployment_resources",
    "deployment_replicas",
    "deployment_revisions",
    "deployment_status_history",
    "replica_status_history",
    "quotas",
    "quota_history",
    "replica_usage",
    "deployment_usage_hourly",
    "node_usage_hourly",
}


def _diff(url: URL) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": partitions.include_name,
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables_and_types(url: URL) -> tuple[set[str], set[str]]:
    """The declared tables (partitions apart, see `_partitions`) and the enum types."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
            types = set(connection.scalars(text("SELECT typname FROM pg_type WHERE typtype = 'e'")))
            return tables - _partitions(url), types
    finally:
        engine.dispose()


def _partitions(url: URL) -> set[str]:
    """Every partition in the database, whatever its parent."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return set(
                connection.scalars(
                    text("SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'")
                )
            )
    finally:
        engine.dispose()


def _assert_history_partitioned(url: URL) -> None:
    """Partitions are tables too, but not declared ones: each history table has one per month,
    named by it, from last month (the migration's floor) to MONTHS_AHEAD ahead, and no others."""
    this = Month.of(datetime.now(UTC))
    months = [this.plus(offset) for offset in range(-1, MONTHS_AHEAD + 1)]
    expected = {Partition(table, month).name for table in HISTORY_TABLES for month in months}
    assert _partitions(url) == expected


def _functions_and_triggers(url: URL) -> tuple[set[tuple[str, str]], set[tuple[str, ...]]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            functions = {(name, args) for name, args in connection.execute(_FUNCTIONS)}
            triggers = {tuple(row) for row in connection.execute(_TRIGGERS)}
            return functions, triggers
    finally:
        engine.dispose()


def test_migrations_produce_exactly_the_models_schema(empty_database_url: URL) -> None:
    migrate.upgrade(empty_database_url)
    assert _diff(empty_database_url) == []
    tables, types = _tables_and_types(empty_database_url)
    assert tables == OUR_TABLES
    _assert_history_partitioned(empty_database_url)
    assert types == {"deploymentstatus", "replicastatus", "replicahealth", "nodestatus"}
    assert _functions_and_triggers(empty_database_url) == (OUR_FUNCTIONS, OUR_TRIGGERS)


def test_downgrade_base_then_upgrade_head_round_trips(empty_database_url: URL) -> None:
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    assert _tables_and_types(empty_database_url) == (set(), set())
    assert _functions_and_triggers(empty_database_url) == (set(), set())
    assert migrate.current_revision(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert _diff(empty_database_url) == []
    _assert_history_partitioned(empty_database_url)
    assert _functions_and_triggers(empty_database_url) == (OUR_FUNCTIONS, OUR_TRIGGERS)


def test_two_upgrades_at_once_both_succeed(empty_database_url: URL) -> None:
    """Two operator pods run `fogctl db upgrade` together: one migrates, the other waits."""
    with ThreadPoolExecutor(max_workers=2) as pool_:
        results = list(pool_.map(migrate.upgrade, [empty_database_url, empty_database_url]))
    assert results == [None, None]
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert _diff(empty_database_url) == []
