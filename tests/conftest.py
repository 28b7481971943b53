"""Shared fixtures: a real PostgreSQL server per session, a fresh migrated database per test.

Following procrastinate's harness: the schema is migrated once into a template database, and
each test gets `CREATE DATABASE ... TEMPLATE`, which copies files instead of replaying
migrations (milliseconds per test). With FOG_TEST_DATABASE_URL set, that server is used
instead of a throwaway one (the URL's user must be allowed to create databases).

Here too: the `db` and `kube` markers, put on each test by the fixtures it uses (so
`pytest -m "not db and not kube"` runs the pure tests alone), and hypothesis's profiles.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from controller.db import migrate
from controller.sandbox import harness, postgres

TEST_DATABASE_ENV = "FOG_TEST_DATABASE_URL"
_names = itertools.count()

# Hypothesis: "default" keeps the unit suite well under a minute on a busy 2-core machine;
# "ci" (chosen when CI is set, as CI services do, or by HYPOTHESIS_PROFILE) tries five times
# as many examples. No example database, so test runs leave nothing in the work tree; no
# deadline, since a loaded machine makes timings meaningless.
settings.register_profile("default", max_examples=200, deadline=None, database=None)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=1000)


def _hypothesis_profile() -> str:
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return "ci" if in_ci else "default"


settings.load_profile(_hypothesis_profile())

# Every database fixture starts from the server's URL; every control-plane one from the
# control plane (tests/kube/conftest.py). tests/kube/ also runs whole sandboxes by command.
DATABASE_FIXTURES = frozenset({"postgres_server_url"})
CONTROL_PLANE_FIXTURES = frozenset({"control_plane"})
CONTROL_PLANE_TESTS = Path(__file__).resolve().parent / "kube"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test `db` and/or `kube` by the servers its fixtures start."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & DATABASE_FIXTURES:
            item.add_marker(pytest.mark.db)
        if used & CONTROL_PLANE_FIXTURES or CONTROL_PLANE_TESTS in item.path.parents:
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[URL]:
    """A URL of a database on a server we may create databases on."""
    given = os.environ.get(TEST_DATABASE_ENV)
    if given:
        yield make_url(given).set(drivername="postgresql+psycopg")
        return
    server = postgres.start()
    try:
        yield make_url(server.url())
    finally:
        postgres.stop(server)


@pytest.fixture(scope="session")
def template_database(postgres_server_url: URL) -> Iterator[str]:
    """A database migrated to head once per session, copied by each test."""
    name = f"fog_template_{os.getpid()}"
    try:
        migrate.upgrade(harness.create_database(postgres_server_url, name))
        yield name
    finally:
        harness.drop_database(postgres_server_url, name)


def _fresh_database(server_url: URL, template: str | None) -> Iterator[URL]:
    name = f"fog_test_{os.getpid()}_{next(_names)}"
    try:
        yield harness.create_database(server_url, name, template=template)
    finally:
        harness.drop_database(server_url, name)


@pytest.fixture
def database_url(postgres_server_url: URL, template_database: str) -> Iterator[URL]:
    """A fresh database at the newest schema revision, dropped after the test."""
    yield from _fresh_database(postgres_server_url, template_database)


@pytest.fixture
def empty_database_url(postgres_server_url: URL) -> Iterator[URL]:
    """A fresh database with no schema at all (for migration tests)."""
    yield from _fresh_database(postgres_server_url, None)


@pytest.fixture
async def engine(database_url: URL) -> AsyncIterator[AsyncEngine]:
    """An async engine on the test's own database."""
    engine = create_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
