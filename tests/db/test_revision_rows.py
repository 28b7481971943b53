"""Revision rows against real PostgreSQL: numbering, reuse, pruning, cascade, migration 0011.

The decisions are model/revisions.py's (unit-tested in tests/unit/test_revisions.py); here the
reconcile writes them in its transaction and the status reports the numbers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_history_partitions import _execute
from test_reconciler import Driver, add_node, converge, sessions, spec

from controller.db import migrate
from controller.db import revisions as db_revisions
from controller.db.tables import Deployment, DeploymentRevision
from controller.model.resources import Resources
from controller.model.revision import Template

__all__ = ["sessions"]  # the fixture, shared with test_reconciler


async def numbered(driver: Driver) -> list[tuple[int, str]]:
    """(number, image) of each revision row, oldest number first."""
    async with driver.sessions() as session:
        found = await db_revisions.history(
            session, namespace=driver.ref.namespace, name=driver.ref.name
        )
    assert found is not None
    return [(row.number, (row.template or {}).get("image", "?")) for row in found]


def with_limit(body: dict[str, Any], limit: int) -> dict[str, Any]:
    return {**body, "revisionHistoryLimit": limit}


async def test_each_new_template_is_numbered_and_a_returning_one_is_renumbered(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    driver.ref = replace(driver.ref, manager="kubectl-client-side-apply")
    status = await converge(driver, spec(2, image="app:1"))
    assert (status["updateRevision"], status["currentRevision"]) == (1, 1)
    assert status["availableReplicas"] == 2

    # Scaling is not a new template; a new image is, and it is current once rolled out.
    await converge(driver, spec(3, image="app:1"))
    status = await converge(driver, spec(3, image="app:2"))
    assert (status["updateRevision"], status["currentRevision"]) == (2, 2)
    assert await numbered(driver) == [(1, "app:1"), (2, "app:2")]

    # Back to app:1: the same row, renumbered to 3, not a new one.
    driver.ref = replace(driver.ref, manager="fogctl")
    status = await driver.reconcile(spec(3, image="app:1"))
    # Not rolled out yet: the current revision is still the last completed one.
    assert (status["updateRevision"], status["currentRevision"]) == (3, 2)
    assert await numbered(driver) == [(2, "app:2"), (3, "app:1")]
    status = await converge(driver, spec(3, image="app:1"))
    assert (status["updateRevision"], status["currentRevision"]) == (3, 3)

    async with sessions() as session:
        rows = await db_revisions.history(session, namespace="team-a", name="web")
    assert rows is not None
    first, renumbered = rows
    assert (first.created_by, first.replicas, first.current) == (
        "kubectl-client-side-apply",
        0,
        False,
    )
    assert (renumbered.created_by, renumbered.replicas, renumbered.current) == ("fogctl", 3, True)
    # The template is what the spec says, in its words: what an undo writes back.
    assert renumbered.template == {
        "image": "app:1",
        "resources": {"cpuCores": 1.0, "memoryMB": 512, "gpuUnits": 0, "storageGB": 1},
    }


async def test_pruning_keeps_the_limit_and_every_revision_that_still_runs(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1", cpu=8)
    driver = Driver(sessions)
    for image in ("app:1", "app:2", "app:3"):
        await converge(driver, with_limit(spec(2, image=image), 1))
    # The current one and one old one: app:1 went.
    assert await numbered(driver) == [(2, "app:2"), (3, "app:3")]

    # With no old revision allowed, app:3 still stays while its replicas run (no agent acts:
    # the rollout to app:4 has only begun).
    await driver.reconcile(with_limit(spec(2, image="app:4"), 0))
    assert await numbered(driver) == [(3, "app:3"), (4, "app:4")]
    await converge(driver, with_limit(spec(2, image="app:4"), 0))
    assert await numbered(driver) == [(4, "app:4")]


async def test_revisions_go_with_their_deployment(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add_node(sessions, "edge-1")
    driver = Driver(sessions)
    await driver.reconcile(spec(1, image="app:1"))
    await driver.reconcile(spec(1, image="app:2"))
    async with sessions() as session, session.begin():
        assert len((await session.scalars(select(DeploymentRevision))).all()) == 2
        await session.execute(delete(Deployment))
        assert (await session.scalars(select(DeploymentRevision))).all() == []


# A deployment with a node selector, one replica of its current template and one of an older
# one (a rollout under way), as migration 0010's schema holds them.
_BEFORE = (
    "WITH u AS (INSERT INTO users (name) VALUES ('team-a') RETURNING id),"
    " d AS (INSERT INTO deployments (user_id, name, container_image, target_replicas,"
    " revision, node_selector) SELECT id, 'web', 'app:2', 2, 'old-current',"
    ' \'{"zone": "a"}\' FROM u RETURNING id),'
    " res AS (INSERT INTO deployment_resources (deployment_id, cpu_cores, memory_mb,"
    " gpu_units, storage_gb) SELECT id, 0.5, 512, 0, 1 FROM d)"
    " INSERT INTO deployment_replicas (deployment_id, ordinal, revision, status,"
    " cpu_millicores, memory_mb, gpu_units, storage_gb, created_at)"
    " SELECT d.id, o, r, 'pending', 500, 512, 0, 1, now() - make_interval(mins => 10 - o)"
    " FROM d, (VALUES (0, 'older'), (1, 'old-current')) AS v(o, r)"
)


def test_migration_0011_relabels_selector_deployments_and_backfills(
    empty_database_url: URL,
) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0010")
    _execute(url, _BEFORE)

    migrate.upgrade(url, "0011")
    template = Template(
        image="app:2",
        request=Resources(cpu_millis=500, memory_mb=512, gpu_units=0, storage_gb=1),
        container_spec={},
        node_selector={"zone": "a"},
    )
    # The current replica and the row carry the new hash (the operator computes the same, so
    # nothing rolls); the older replica keeps its own.
    assert _execute(url, "SELECT revision FROM deployments") == [(template.revision,)]
    assert _execute(url, "SELECT revision FROM deployment_replicas ORDER BY ordinal") == [
        ("older",),
        (template.revision,),
    ]
    rows = _execute(url, "SELECT number, hash, template FROM deployment_revisions ORDER BY 1")
    assert rows == [(1, "older", None), (2, template.revision, template.as_spec())]

    migrate.downgrade(url, "0010")
    assert _execute(url, "SELECT to_regclass('deployment_revisions')") == [(None,)]
    migrate.upgrade(url, "0011")
    assert len(_execute(url, "SELECT 1 FROM deployment_revisions")) == 2
