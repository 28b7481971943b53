"""The migration chain produces exactly the models' schema, and round-trips."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.engine import URL

from controller.db import migrate
from controller.db.tables import Base

OUR_TABLES = {
    "users",
    "nodes",
    "deployments",
    "deployment_resources",
    "deployment_replicas",
    "deployment_status_history",
    "replica_status_history",
}


def _diff(url: URL) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables_and_types(url: URL) -> tuple[set[str], set[str]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
            types = set(connection.scalars(text("SELECT typname FROM pg_type WHERE typtype = 'e'")))
            return tables, types
    finally:
        engine.dispose()


def test_migrations_produce_exactly_the_models_schema(empty_database_url: URL) -> None:
    migrate.upgrade(empty_database_url)
    assert _diff(empty_database_url) == []
    tables, types = _tables_and_types(empty_database_url)
    assert tables == OUR_TABLES
    assert types == {"deploymentstatus", "replicastatus", "nodestatus"}


def test_downgrade_base_then_upgrade_head_round_trips(empty_database_url: URL) -> None:
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    assert _tables_and_types(empty_database_url) == (set(), set())
    assert migrate.current_revision(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert _diff(empty_database_url) == []
