"""Where the database URL comes from and what shapes of it we accept."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from controller.db.errors import InvalidDatabaseUrlError

# The type of a parsed database URL, named here so that the layers above the database (the
# operator) need not import SQLAlchemy to pass one along.
DatabaseUrl = URL

ENV_VAR = "FOG_DATABASE_URL"
# psycopg 3 serves both the async engine (operator) and the sync one (Alembic) from one URL.
DRIVERS = ("postgresql+psycopg", "postgresql")


def resolve(explicit: str | None) -> URL:
    """Return the URL from `--database-url` or `FOG_DATABASE_URL`, checked and normalised."""
    raw = explicit or os.environ.get(ENV_VAR)
    if not raw:
        raise InvalidDatabaseUrlError(
            f"no database given: pass --database-url or set {ENV_VAR} "
            "(e.g. postgresql+psycopg://user@127.0.0.1:5432/fog)"
        )
    return parse(raw)


def parse(raw: str) -> URL:
    """Parse a SQLAlchemy URL; plain `postgresql://` is upgraded to the psycopg 3 driver."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise InvalidDatabaseUrlError(
            f"invalid database URL {_redact(raw)!r}: expected postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    if url.drivername not in DRIVERS:
        raise InvalidDatabaseUrlError(
            f"unsupported database driver {url.drivername!r}: use postgresql+psycopg://..."
        )
    if not url.database:
        raise InvalidDatabaseUrlError(f"database URL {_redact(raw)!r} names no database")
    return url.set(drivername="postgresql+psycopg")


def _redact(raw: str) -> str:
    """Hide a password in messages: URLs end up in logs and issue reports."""
    head, sep, tail = raw.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return raw
    scheme, _, userinfo = head.partition("//")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"
