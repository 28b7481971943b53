"""Row builders for database tests: the smallest valid rows, overridable per test."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.tables import Deployment, DeploymentReplica, DeploymentResource, Node, User


async def user(session: AsyncSession, name: str = "team-a") -> User:
    row = User(name=name)
    session.add(row)
    await session.flush()
    return row


async def node(session: AsyncSession, name: str = "edge-1", **overrides: Any) -> Node:
    values: dict[str, Any] = {
        "cpu_cores": 8.0,
        "memory_mb": 16384,
        "gpu_units": 0,
        "storage_gb": 100,
    }
    values.update(overrides)
    row = Node(name=name, **values)
    session.add(row)
    await session.flush()
    return row


async def deployment(
    session: AsyncSession, owner: User, name: str = "web", **overrides: Any
) -> Deployment:
    values: dict[str, Any] = {
        "container_image": "nginx:1.27",
        "target_replicas": 2,
        "revision": "r1",
    }
    values.update(overrides)
    row = Deployment(user_id=owner.id, name=name, **values)
    session.add(row)
    await session.flush()
    return row


async def resources(
    session: AsyncSession, owner: Deployment, **overrides: Any
) -> DeploymentResource:
    values: dict[str, Any] = {"cpu_cores": 1.5, "memory_mb": 1024, "gpu_units": 0, "storage_gb": 10}
    values.update(overrides)
    row = DeploymentResource(deployment_id=owner.id, **values)
    session.add(row)
    await session.flush()
    return row


async def replica(
    session: AsyncSession,
    owner: Deployment,
    ordinal: int,
    node_id: uuid.UUID | None = None,
    **overrides: Any,
) -> DeploymentReplica:
    values: dict[str, Any] = {
        "revision": owner.revision,
        "cpu_millicores": 1500,
        "memory_mb": 1024,
        "gpu_units": 0,
        "storage_gb": 10,
        "status_actor": "test",
    }
    values.update(overrides)
    row = DeploymentReplica(deployment_id=owner.id, node_id=node_id, ordinal=ordinal, **values)
    session.add(row)
    await session.flush()
    return row
