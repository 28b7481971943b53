"""`fogctl db ...` end to end, as a person runs it: real processes, a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy.engine import URL

from controller.db import migrate


def fogctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "FOG_DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "controller.cli.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def test_upgrade_current_downgrade(empty_database_url: URL) -> None:
    url = _url(empty_database_url)
    current = fogctl("db", "current", "--database-url", url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith("base (empty)")

    upgraded = fogctl("db", "upgrade", env={"FOG_DATABASE_URL": url})
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at revision {migrate.head_revision()}" in upgraded.stdout
    assert fogctl("db", "current", "--database-url", url).stdout.strip().endswith("(head)")

    downgraded = fogctl("db", "downgrade", "base", "--database-url", url)
    assert downgraded.returncode == 0, downgraded.stderr
    assert migrate.current_revision(empty_database_url) is None


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fogctl: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "invalid database URL"),
        ("mysql://root@127.0.0.1/fog", "unsupported database driver 'mysql'"),
        ("postgresql+psycopg://u@127.0.0.1:5432", "names no database"),
    ],
)
def test_bad_url_is_one_line(url: str, fragment: str) -> None:
    _assert_one_line_error(fogctl("db", "upgrade", "--database-url", url), fragment)


def test_missing_url_is_one_line() -> None:
    _assert_one_line_error(fogctl("db", "current"), "FOG_DATABASE_URL")


def test_password_is_not_printed() -> None:
    result = fogctl("db", "current", "--database-url", "postgresql+psycopg://u:s3cret@[::1")
    _assert_one_line_error(result)
    assert "s3cret" not in result.stderr


def test_unreachable_database_is_one_line(empty_database_url: URL) -> None:
    closed = empty_database_url.set(port=1)  # port 1 (tcpmux) is never a PostgreSQL server
    _assert_one_line_error(
        fogctl("db", "upgrade", "--database-url", _url(closed)), "cannot reach database"
    )


def test_revision_newer_than_the_code_is_one_line(empty_database_url: URL) -> None:
    migrate.upgrade(empty_database_url)
    with psycopg.connect(
        host=empty_database_url.host,
        port=empty_database_url.port,
        user=empty_database_url.username,
        dbname=empty_database_url.database,
        autocommit=True,
    ) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    for action in (["upgrade"], ["current"], ["downgrade", "base"]):
        _assert_one_line_error(
            fogctl("db", *action, "--database-url", _url(empty_database_url)),
            "9999_from_the_future",
            "upgrade fog-controller",
        )
