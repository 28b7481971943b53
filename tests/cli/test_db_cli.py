"""`fogctl db ...` end to end, as a person runs it: real processes, a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from controller.db import migrate


def fogctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FOG_DATABASE_URL")}
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


def _assert_one_line_error(
    result: subprocess.CompletedProcess[str],
    *fragments: str,
    code: int = 1,
    prefix: str = "fogctl: error: ",
) -> None:
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix)
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


def test_the_url_from_a_file_as_a_mounted_secret_gives_it(
    empty_database_url: URL, tmp_path: Path
) -> None:
    # A Secret's key mounted as a file; kubectl create secret --from-file keeps the newline.
    secret = tmp_path / "url"
    secret.write_text(_url(empty_database_url) + "\n")
    upgraded = fogctl("db", "upgrade", "--database-url-file", str(secret))
    assert upgraded.returncode == 0, upgraded.stderr
    current = fogctl("db", "current", env={"FOG_DATABASE_URL_FILE": str(secret)})
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip().endswith("(head)")


def _assert_usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A bad --database-url-file is argparse's usage error (exit 2), naming the flag."""
    prefix = "fogctl db current: error: argument --database-url-file: "
    _assert_one_line_error(result, *fragments, code=2, prefix=prefix)


def test_a_bad_url_file_is_one_line(tmp_path: Path) -> None:
    empty, two_lines, good = tmp_path / "empty", tmp_path / "two", tmp_path / "good"
    empty.write_text("")
    good.write_text("postgresql://a/b\n")
    two_lines.write_text("postgresql://a/b\npostgresql://c/d\n")
    missing = str(tmp_path / "missing")
    _assert_usage_error(
        fogctl("db", "current", "--database-url-file", missing), missing, "No such file"
    )
    _assert_usage_error(fogctl("db", "current", "--database-url-file", str(tmp_path)), "directory")
    _assert_usage_error(fogctl("db", "current", "--database-url-file", str(empty)), "is empty")
    _assert_usage_error(fogctl("db", "current", "--database-url-file", str(two_lines)), "one line")
    _assert_usage_error(
        fogctl("db", "current", "--database-url", "x", "--database-url-file", str(good)),
        "not allowed with argument --database-url",
    )


def test_an_unreadable_url_file_from_the_environment_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    result = fogctl("db", "current", env={"FOG_DATABASE_URL_FILE": missing})
    _assert_one_line_error(result, f"cannot read database URL file {missing}")
    both = fogctl("db", "current", env={"FOG_DATABASE_URL_FILE": missing, "FOG_DATABASE_URL": "x"})
    _assert_one_line_error(both, "both FOG_DATABASE_URL and FOG_DATABASE_URL_FILE are set")


def test_a_bad_url_in_the_file_is_one_line_without_its_password(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql+psycopg://u:s3cret@127.0.0.1:5432\n")
    result = fogctl("db", "current", "--database-url-file", str(secret))
    _assert_one_line_error(result, "names no database")
    assert "s3cret" not in result.stderr
