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
# The URL holds a password: in Kubernetes it comes from a Secret, and a Secret mounted as a file
# (this variable names the file) stays out of the process environment, which `kubectl describe`,
# crash reports and child processes can all show.
FILE_ENV_VAR = "FOG_DATABASE_URL_FILE"
# A URL is well under 1 KiB; anything past this is not a URL file (a wrong path, a binary).
MAX_FILE_BYTES = 64 * 1024
# psycopg 3 serves both the async engine (operator) and the sync one (Alembic) from one URL.
DRIVERS = ("postgresql+psycopg", "postgresql")


def resolve(explicit: str | None) -> URL:
    """The URL from the flags, `FOG_DATABASE_URL` or `FOG_DATABASE_URL_FILE`, checked.

    `explicit` is what `--database-url` or `--database-url-file` gave (the CLI reads the file).
    """
    from_env, from_file = os.environ.get(ENV_VAR), os.environ.get(FILE_ENV_VAR)
    if not explicit and from_env and from_file:
        raise InvalidDatabaseUrlError(f"both {ENV_VAR} and {FILE_ENV_VAR} are set: unset one")
    raw = explicit or from_env or (read_file(from_file) if from_file else None)
    if not raw:
        raise InvalidDatabaseUrlError(
            f"no database given: pass --database-url or --database-url-file, or set {ENV_VAR} "
            f"or {FILE_ENV_VAR} (e.g. postgresql+psycopg://user@127.0.0.1:5432/fog)"
        )
    return parse(raw)


def read_file(path: str) -> str:
    """The URL a file holds (a mounted Secret's key), without the trailing newline editors add."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidDatabaseUrlError(
            f"cannot read database URL file {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidDatabaseUrlError(f"database URL file {path} is not a URL: over 64 KiB")
    try:
        text = data.decode().strip()
    except UnicodeDecodeError:
        raise InvalidDatabaseUrlError(f"database URL file {path} is not UTF-8 text") from None
    if not text:
        raise InvalidDatabaseUrlError(f"database URL file {path} is empty")
    if len(text.splitlines()) > 1:
        raise InvalidDatabaseUrlError(f"database URL file {path} must hold one line, the URL")
    return text


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
