"""Schema migrations (Alembic), driven from `fogctl db` and the test harness.

Alembic's own command functions print through logging and raise raw driver errors; this module
wraps them so that the CLI can say one line: unreachable server, bad URL, or a database whose
revision this code does not know (a newer release migrated it; downgrading code is not safe).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, create_engine, func, pool, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from controller.db.errors import DatabaseUnavailableError, SchemaMismatchError

# Where the migration scripts live: the repository's `migrations/` folder; an installed
# package (the container image) points here with FOG_MIGRATIONS_DIR.
MIGRATIONS_ENV = "FOG_MIGRATIONS_DIR"
_REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# A reachable server answers in milliseconds; 10 s covers a loaded CI machine without making
# a wrong host or port hang the CLI.
CONNECT_TIMEOUT_SECONDS = 10
# The advisory lock that serialises migrations (any constant; this spells "fogmigr" in hex).
MIGRATION_LOCK_KEY = 0x666F676D696772


def _config(url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", os.environ.get(MIGRATIONS_ENV, str(_REPO_MIGRATIONS)))
    # Alembic's Config is a ConfigParser: '%' in a password must be doubled.
    config.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


@contextmanager
def _connect(url: URL) -> Iterator[Connection]:
    engine = create_engine(
        url, poolclass=pool.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    )
    try:
        with engine.connect() as connection:
            yield connection
    except OperationalError as exc:
        raise DatabaseUnavailableError(_first_line(exc, url)) from None
    finally:
        engine.dispose()


def _first_line(exc: OperationalError, url: URL) -> str:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
    return f"cannot reach database {url.render_as_string(hide_password=True)}: {detail}"


def head_revision() -> str:
    """The newest revision this code knows."""
    script = ScriptDirectory.from_config(_config(URL.create("postgresql+psycopg", database="x")))
    head = script.get_current_head()
    assert head is not None, "the migration chain has a head"
    return head


def current_revision(url: URL) -> str | None:
    """The revision the database is at, or None for an empty database."""
    # Reading the revision is not a migration: Alembic's "Context impl PostgresqlImpl." and
    # "Will assume transactional DDL." (INFO) would only bury what a command prints.
    alembic_log = logging.getLogger("alembic.runtime.migration")
    level = alembic_log.level
    alembic_log.setLevel(max(level, logging.WARNING))
    try:
        with _connect(url) as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        alembic_log.setLevel(level)


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(_config(URL.create("postgresql+psycopg", database="x")))
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def check_known(url: URL) -> str | None:
    """Refuse a database migrated by a newer release: its schema is not ours to touch."""
    current = current_revision(url)
    if current is not None and not _known(current):
        raise SchemaMismatchError(
            f"database is at revision {current!r}, which this fog-controller does not know "
            f"(newest known: {head_revision()!r}); upgrade fog-controller instead"
        )
    return current


def _run(url: URL, operation: str, revision: str) -> None:
    check_known(url)
    config = _config(url)
    with _connect(url) as connection:
        config.attributes["connection"] = connection
        # One migration at a time: two operator pods starting together both run
        # `fogctl db upgrade`; the second waits here, then finds the schema current. The lock
        # is the transaction's, the one Alembic migrates in, so it holds until the commit.
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        try:
            getattr(command, operation)(config, revision)
        except CommandError as exc:
            raise SchemaMismatchError(str(exc).splitlines()[0]) from None
        connection.commit()


def upgrade(url: URL, revision: str = "head") -> None:
    """Migrate up to `revision` (default: the newest)."""
    _run(url, "upgrade", revision)


def downgrade(url: URL, revision: str) -> None:
    """Migrate down to `revision` (`base` removes every table of ours)."""
    _run(url, "downgrade", revision)
