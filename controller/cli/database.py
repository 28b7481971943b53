"""Running one async database job from a synchronous CLI command, with one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import engine as db_engine
from controller.db import migrate, urls
from controller.db.errors import DatabaseUnavailableError, SchemaMismatchError

T = TypeVar("T")


def check_schema(url: URL) -> None:
    """SchemaMismatchError unless the database is at the code's revision."""
    current = migrate.check_known(url)
    if current != migrate.head_revision():
        raise SchemaMismatchError(
            f"database is at revision {current or 'base (empty)'}: run 'fogctl db upgrade' first"
        )


def run(
    database_url: str | None, job: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    """Check the schema is current, then run `job` with a session factory on that database."""
    url = urls.resolve(database_url)
    check_schema(url)

    async def main() -> T:
        engine = db_engine.make_engine(url)
        try:
            return await job(db_engine.make_sessions(engine))
        except (OperationalError, InterfaceError) as exc:
            detail = str(exc.orig or exc).strip().splitlines()[0]
            raise DatabaseUnavailableError(f"database error: {detail}") from None
        finally:
            await engine.dispose()

    return asyncio.run(main())
