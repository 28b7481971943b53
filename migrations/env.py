"""Alembic environment: runs migrations on a synchronous psycopg 3 connection.

The URL comes from the caller (`fogctl db ...` puts it in the config) or from FOG_DATABASE_URL
when someone runs `alembic` by hand, so there is one place to say which database is meant.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from controller.db import urls
from controller.db.partitions import include_name
from controller.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    return urls.resolve(configured).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
