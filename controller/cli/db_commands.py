"""`fogctl db upgrade|downgrade|current`: schema migrations from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from controller.db import migrate, urls
from controller.db.errors import InvalidDatabaseUrlError


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """The `--database-url` / `--database-url-file` options every database command shares."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--database-url",
        metavar="URL",
        help=f"SQLAlchemy URL, postgresql+psycopg://... (default: ${urls.ENV_VAR})",
    )
    source.add_argument(
        "--database-url-file",
        dest="database_url",
        metavar="PATH",
        type=_url_from_file,
        help=f"a file holding the URL, e.g. a mounted Secret (default: ${urls.FILE_ENV_VAR})",
    )


def _url_from_file(path: str) -> str:
    try:
        return urls.read_file(path)
    except InvalidDatabaseUrlError as exc:  # argparse reports it as one line, naming the flag
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: Any) -> None:
    """Add `db` and its sub-commands to the `fogctl` parser."""
    db = commands.add_parser("db", help="database schema migrations")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    upgrade = actions.add_parser("upgrade", help="migrate up (default: to the newest revision)")
    upgrade.add_argument("revision", nargs="?", default="head")
    add_database_url(upgrade)
    upgrade.set_defaults(handler=_upgrade)

    downgrade = actions.add_parser("downgrade", help="migrate down to REVISION ('base': empty)")
    downgrade.add_argument("revision")
    add_database_url(downgrade)
    downgrade.set_defaults(handler=_downgrade)

    current = actions.add_parser("current", help="print the database's revision")
    add_database_url(current)
    current.set_defaults(handler=_current)


def _upgrade(args: argparse.Namespace) -> int:
    url = urls.resolve(args.database_url)
    migrate.upgrade(url, args.revision)
    print(f"database at revision {migrate.current_revision(url)}")
    return 0


def _downgrade(args: argparse.Namespace) -> int:
    url = urls.resolve(args.database_url)
    migrate.downgrade(url, args.revision)
    print(f"database at revision {migrate.current_revision(url) or 'base (empty)'}")
    return 0


def _current(args: argparse.Namespace) -> int:
    url = urls.resolve(args.database_url)
    current = migrate.check_known(url)
    head = migrate.head_revision()
    if current is None:
        print(f"base (empty); newest known: {head}")
    else:
        print(f"{current}{' (head)' if current == head else f'; newest known: {head}'}")
    return 0
