"""The checks of `fogctl check` that read the database (see controller/model/invariants.py).

Each check is one statement that returns only offending rows, so a healthy database of any size
costs a few scans and transfers almost nothing. The history chains are judged in SQL with window
functions against the allowed edges taken from the Python state machine (one source of truth),
rather than by loading every history row into the checker.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import String

from controller.db.nodes import allocated_of, capacity_of
from controller.db.tables import Deployment, DeploymentReplica, Node, User
from controller.model.invariants import (
    RecordedDeployment,
    Rule,
    Violation,
    edges,
    node_violations,
)
from controller.model.resources import Resources
from controller.model.states import (
    ACTIVE_REPLICA_STATUSES,
    CAPACITY_HOLDING_STATUSES,
    DEPLOYMENT_TRANSITIONS,
    REPLICA_TRANSITIONS,
    DeploymentStatus,
    ReplicaStatus,
)

# A node silent this many grace periods has been offline for at least one grace period: the
# node check takes it offline (and fails its replicas) within 1.25 graces of its last heartbeat.
LOST_AFTER_GRACES = 2


@dataclass(frozen=True, slots=True)
class Audit:
    """What the database checks found, and how much they looked at."""

    violations: list[Violation]
    nodes: int
    deployments: int
    replicas: int
    # The deployments that are not soft-deleted, for the comparison with the API server.
    recorded: list[RecordedDeployment]


async def _nodes(session: AsyncSession) -> list[Violation]:
    """Each node's totals against its capacity and a fresh sum over its holding replicas."""
    held = {
        dimension: func.coalesce(func.sum(getattr(DeploymentReplica, column)), 0).label(dimension)
        for dimension, column in (
            ("held_cpu", "cpu_millicores"),
            ("held_memory", "memory_mb"),
            ("held_gpu", "gpu_units"),
            ("held_storage", "storage_gb"),
        )
    }
    rows = await session.execute(
        select(Node, *held.values())
        .outerjoin(
            DeploymentReplica,
            (DeploymentReplica.node_id == Node.id)
            & DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
        )
        .group_by(Node.id)
        .order_by(Node.name)
    )
    found: list[Violation] = []
    for row in rows:
        node = row[0]
        found += node_violations(
            name=node.name,
            capacity=capacity_of(node),
            allocated=allocated_of(node),
            held=Resources(
                cpu_millis=int(row.held_cpu),
                memory_mb=int(row.held_memory),
                gpu_units=int(row.held_gpu),
                storage_gb=int(row.held_storage),
            ),
        )
    return found


# For one history table: every entry with its predecessor in time order, and the offending ones:
# a first entry that is not the creation (NULL -> start), an entry whose old status is not the
# previous entry's new one, an edge the state machine does not allow, a last entry that is not
# the row's current status, and a row with no history at all. One violation per row: its first.
_CHAIN = """
WITH h AS (
    SELECT {owner} AS owner, old_status::text AS old, new_status::text AS new,
           lag(new_status::text) OVER w AS prev,
           row_number() OVER w AS n,
           lead(id) OVER w IS NULL AS last
    FROM {history} WINDOW w AS (PARTITION BY {owner} ORDER BY changed_at, id)
)
SELECT DISTINCT ON (t.id) t.id, t.status::text AS current, h.n, h.old, h.new, h.prev, h.last
FROM {table} t LEFT JOIN h ON h.owner = t.id
WHERE h.owner IS NULL
   OR (h.n = 1 AND (h.old IS NOT NULL OR h.new <> :start))
   OR (h.n > 1 AND h.old IS DISTINCT FROM h.prev)
   OR (h.n > 1 AND NOT (h.old || '>' || h.new = ANY(:edges)))
   OR (h.last AND h.new <> t.status::text)
ORDER BY t.id, h.n
"""


def _chain_problem(row: object, start: str) -> str:
    """Say in words which part of the chain rule one offending entry breaks."""
    n, old, new, prev, last, current = (
        getattr(row, name) for name in ("n", "old", "new", "prev", "last", "current")
    )
    if n is None:
        return f"no history at all (status {current})"
    if n == 1 and (old is not None or new != start):
        return f"history starts with {old or '-'} -> {new}, not - -> {start}"
    if old != prev and n > 1:
        return f"entry {n} ({old} -> {new}) does not follow the previous status {prev}"
    if last and new != current:
        return f"history ends at {new} but the status is {current}"
    return f"entry {n}: {old} -> {new} is not an allowed transition"


@dataclass(frozen=True, slots=True)
class _Chain:
    """One history table and the state machine its entries must follow."""

    table: str
    history: str
    owner: str
    edges: list[str]
    start: str
    rule: Rule
    kind: str


_CHAINS = (
    _Chain(
        table="deployment_replicas",
        history="replica_status_history",
        owner="replica_id",
        edges=edges(REPLICA_TRANSITIONS),
        start=ReplicaStatus.PENDING,
        rule=Rule.REPLICA_HISTORY,
        kind="replica",
    ),
    _Chain(
        table="deployments",
        history="deployment_status_history",
        owner="deployment_id",
        edges=edges(DEPLOYMENT_TRANSITIONS),
        start=DeploymentStatus.PENDING,
        rule=Rule.DEPLOYMENT_HISTORY,
        kind="deployment",
    ),
)


async def _chains(session: AsyncSession, chain: _Chain) -> list[Violation]:
    statement = text(
        _CHAIN.format(table=chain.table, history=chain.history, owner=chain.owner)
    ).bindparams(bindparam("edges", type_=ARRAY(String)), bindparam("start"))
    rows = await session.execute(statement, {"edges": chain.edges, "start": chain.start})
    return [
        Violation(chain.rule, f"{chain.kind}/{row.id}", _chain_problem(row, chain.start))
        for row in rows
    ]


async def _active_of_deleted(session: AsyncSession) -> list[Violation]:
    rows = await session.execute(
        select(DeploymentReplica.id, DeploymentReplica.status, User.name, Deployment.name)
        .join(Deployment, Deployment.id == DeploymentReplica.deployment_id)
        .join(User, User.id == Deployment.user_id)
        .where(
            Deployment.deleted_at.is_not(None),
            DeploymentReplica.status.in_(ACTIVE_REPLICA_STATUSES),
        )
    )
    return [
        Violation(
            Rule.ACTIVE_ON_DELETED,
            f"replica/{replica_id}",
            f"{status} but its deployment {namespace}/{name} is deleted",
        )
        for replica_id, status, namespace, name in rows
    ]


async def _on_lost_nodes(session: AsyncSession, grace: timedelta) -> list[Violation]:
    silent = text(
        "SELECT r.id, r.status::text AS status, n.name, now() - l.renewed_at AS silent"
        " FROM deployment_replicas r JOIN nodes n ON n.id = r.node_id"
        " LEFT JOIN node_leases l ON l.node_id = n.id"
        " WHERE r.status::text = ANY(:holding)"
        " AND (l.renewed_at IS NULL OR l.renewed_at < now() - :lost)"
        " ORDER BY n.name, r.id"
    ).bindparams(bindparam("holding", type_=ARRAY(String)))
    rows = await session.execute(
        silent,
        {"holding": sorted(CAPACITY_HOLDING_STATUSES), "lost": grace * LOST_AFTER_GRACES},
    )
    return [
        Violation(
            Rule.ACTIVE_ON_LOST_NODE,
            f"replica/{row.id}",
            f"{row.status} on node {row.name}, silent for "
            f"{'ever' if row.silent is None else f'{row.silent.total_seconds():.0f} s'}"
            f" (grace {grace.total_seconds():g} s)",
        )
        for row in rows
    ]


async def audit(sessions: async_sessionmaker[AsyncSession], *, grace: timedelta) -> Audit:
    """Run every database check in one REPEATABLE READ, read-only transaction.

    One snapshot, so that the checks see one moment of a live system (a replica failed between
    two statements would otherwise look like a broken chain), and read-only, so that the
    checker can never change what it judges.
    """
    async with sessions() as session, session.begin():
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        violations = await _nodes(session)
        for chain in _CHAINS:
            violations += await _chains(session, chain)
        violations += await _active_of_deleted(session)
        violations += await _on_lost_nodes(session, grace)
        counts = (
            await session.execute(
                select(
                    select(func.count()).select_from(Node).scalar_subquery(),
                    select(func.count()).select_from(Deployment).scalar_subquery(),
                    select(func.count()).select_from(DeploymentReplica).scalar_subquery(),
                )
            )
        ).one()
        recorded = await _recorded_deployments(session)
    return Audit(
        violations=violations,
        nodes=counts[0],
        deployments=counts[1],
        replicas=counts[2],
        recorded=recorded,
    )


async def _recorded_deployments(session: AsyncSession) -> list[RecordedDeployment]:
    """Every deployment row that is not soft-deleted, with its active replicas per revision."""
    rows = await session.execute(
        select(
            Deployment.id,
            User.name,
            Deployment.name,
            Deployment.k8s_uid,
            DeploymentReplica.revision,
            func.count(DeploymentReplica.id),
        )
        .join(User, User.id == Deployment.user_id)
        .outerjoin(
            DeploymentReplica,
            (DeploymentReplica.deployment_id == Deployment.id)
            & DeploymentReplica.status.in_(ACTIVE_REPLICA_STATUSES),
        )
        .where(Deployment.deleted_at.is_(None))
        .group_by(Deployment.id, User.name, DeploymentReplica.revision)
    )
    names: dict[uuid.UUID, tuple[str, str, str | None]] = {}
    active: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for deployment_id, namespace, name, uid, revision, count in rows:
        names[deployment_id] = (namespace, name, uid)
        if revision is not None:
            active[deployment_id][revision] = count
    return [
        RecordedDeployment(
            namespace=namespace, name=name, k8s_uid=uid, active_by_revision=active[key]
        )
        for key, (namespace, name, uid) in names.items()
    ]
