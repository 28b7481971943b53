"""Observe and apply for one deployment: the reconcile's only database code.

One reconcile is one transaction: take the deployment's advisory lock, read a snapshot with a
fixed number of statements, and write the plan back with a fixed number of batched statements,
however many replicas are involved. History rows and node allocation totals are written by
triggers in the same statements (docs/design/capacity-and-history.md).

Conflicts are expected and cheap: an agent may have moved a replica between our read and our
write (each UPDATE is guarded by the status we read), or another deployment took the room we
planned to use (the node CHECK constraints refuse it). Either way the transaction rolls back
whole and `ConflictError` tells the reconciler to plan again from a fresh snapshot.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from controller.db import queries, quotas
from controller.db.nodes import allocated_of, capacity_of
from controller.db.tables import (
    Deployment,
    DeploymentReplica,
    DeploymentResource,
    Node,
    ReplicaUsage,
    User,
)
from controller.model.desired import DesiredDeployment
from controller.model.nodes import NodeStatus
from controller.model.placement import NodeCapacity, Strategy
from controller.model.planner import DesiredState, Plan, ReplicaTransition
from controller.model.quota import QUOTA_EXCEEDED, QuotaGate
from controller.model.replicas import ReplicaState
from controller.model.resources import MILLIS_PER_CORE, Resources
from controller.model.states import (
    CAPACITY_HOLDING_STATUSES,
    DeploymentStatus,
    ReplicaStatus,
    deployment_path,
)
from controller.model.usage import Sampled, Usage


class ConflictError(RuntimeError):
    """Someone changed what we planned on; roll back and plan again."""


@dataclass(frozen=True, slots=True)
class DesiredRecord:
    """What the deployment row should say: the spec, and which object and generation it is."""

    spec: DesiredDeployment
    k8s_uid: str
    generation: int

    def row_values(self) -> dict[str, Any]:
        """The `deployments` columns this record sets."""
        return {column.key: value(self) for column, value in _TRACKED}

    def resource_values(self) -> dict[str, Any]:
        """The `deployment_resources` columns this record sets."""
        return {column.key: value(self) for column, value in _TRACKED_RESOURCES}


_Tracked = tuple[tuple[InstrumentedAttribute[Any], Callable[[DesiredRecord], Any]], ...]
# The columns that record the spec, declared once with where each value comes from: the
# snapshot reads exactly these, and a reconcile writes them when they differ.
_TRACKED: _Tracked = (
    (Deployment.container_image, attrgetter("spec.image")),
    (Deployment.target_replicas, attrgetter("spec.replicas")),
    (Deployment.container_spec, attrgetter("spec.container_spec")),
    (Deployment.node_selector, attrgetter("spec.node_selector")),
    (Deployment.placement_strategy, attrgetter("spec.strategy")),
    (Deployment.health_check, attrgetter("spec.template.health_check")),
    (Deployment.revision, attrgetter("spec.revision")),
    (Deployment.k8s_uid, attrgetter("k8s_uid")),
    (Deployment.observed_generation, attrgetter("generation")),
)
_TRACKED_RESOURCES: _Tracked = (
    (DeploymentResource.cpu_cores, attrgetter("spec.request.cpu_cores")),
    (DeploymentResource.memory_mb, attrgetter("spec.request.memory_mb")),
    (DeploymentResource.gpu_units, attrgetter("spec.request.gpu_units")),
    (DeploymentResource.storage_gb, attrgetter("spec.request.storage_gb")),
)
_TRACKED_COLUMNS = tuple(column for column, _ in _TRACKED)
_RESOURCE_COLUMNS = tuple(column for column, _ in _TRACKED_RESOURCES)


@dataclass(frozen=True, slots=True)
class StoredDeployment:
    """The deployment row as read in the snapshot."""

    id: uuid.UUID
    status: DeploymentStatus
    next_ordinal: int
    values: Mapping[str, Any]
    resources: Mapping[str, Any]
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    status_reason: str | None = None

    @property
    def revision(self) -> str:
        """The revision recorded, the one `consecutive_failures` counts for (migration 0004)."""
        revision: str = self.values[Deployment.revision.key]
        return revision

    @property
    def target_replicas(self) -> int:
        """The desired replica count recorded by the last reconcile."""
        replicas: int = self.values[Deployment.target_replicas.key]
        return replicas


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one reconcile decides on, read once under the deployment's lock."""

    user_id: uuid.UUID | None
    deployment: StoredDeployment | None
    replicas: tuple[ReplicaState, ...]
    # The database's now() for this transaction: stored times (failures, transitions) are
    # stamped with it, so decisions compare them with it and never with the operator's clock.
    now: datetime
    # Nodes being drained that hold some of this deployment's replicas.
    evacuate: frozenset[uuid.UUID] = frozenset()
    # Whether the namespace has a FogQuota: only then does a placement lock and read its
    # usage (db/quotas.py gate).
    quota_limited: bool = False
    # The latest usage sample of each replica that has one (`.status.usage` sums them).
    usage: Mapping[uuid.UUID, Sampled] = field(default_factory=dict)


def lock_key(namespace: str, name: str) -> str:
    """The advisory-lock key of one deployment: reconciles of it run one at a time."""
    return f"fogdeployment/{namespace}/{name}"


async def lock(session: AsyncSession, *, namespace: str, name: str) -> datetime:
    """Take the deployment's transaction-scoped advisory lock (released at commit).

    Returns the transaction's now() from the same statement, the one clock of a reconcile.
    """
    key = func.hashtextextended(lock_key(namespace, name), 0)
    now: datetime = (
        await session.execute(select(func.pg_advisory_xact_lock(key), func.now()))
    ).one()[1]
    return now


async def _read_deployment(
    session: AsyncSession, *, namespace: str, name: str
) -> tuple[uuid.UUID | None, StoredDeployment | None, bool]:
    statement = (
        select(
            User.id.label("user_id"),
            quotas.has_quota(User.id).label("quota_limited"),
            Deployment.status_reason,
            Deployment.id,
            Deployment.status,
            Deployment.next_ordinal,
            Deployment.consecutive_failures,
            Deployment.last_failure_at,
            *_TRACKED_COLUMNS,
            *_RESOURCE_COLUMNS,
        )
        .select_from(User)
        .outerjoin(
            Deployment,
            and_(
                Deployment.user_id == User.id,
                Deployment.name == name,
                Deployment.deleted_at.is_(None),
            ),
        )
        .outerjoin(DeploymentResource, DeploymentResource.deployment_id == Deployment.id)
        .where(User.name == namespace)
    )
    row = (await session.execute(statement)).mappings().one_or_none()
    if row is None:
        return None, None, False
    if row["id"] is None:
        return row["user_id"], None, row["quota_limited"]
    return (
        row["user_id"],
        StoredDeployment(
            id=row["id"],
            status=row["status"],
            next_ordinal=row["next_ordinal"],
            values={column.key: row[column.key] for column in _TRACKED_COLUMNS},
            resources={column.key: row[column.key] for column in _RESOURCE_COLUMNS},
            consecutive_failures=row["consecutive_failures"],
            last_failure_at=row["last_failure_at"],
            status_reason=row["status_reason"],
        ),
        row["quota_limited"],
    )


async def _read_replicas(
    session: AsyncSession, deployment_id: uuid.UUID
) -> tuple[tuple[ReplicaState, ...], frozenset[uuid.UUID], dict[uuid.UUID, Sampled]]:
    """The live replicas, which of their nodes are being drained, and their latest usage."""
    statement = (
        select(
            DeploymentReplica.id,
            DeploymentReplica.node_id,
            DeploymentReplica.status,
            DeploymentReplica.revision,
            DeploymentReplica.ordinal,
            DeploymentReplica.health,
            DeploymentReplica.health_since,
            DeploymentReplica.started_at,
            Node.draining,
            ReplicaUsage.cpu_millicores.label("cpu_used"),
            ReplicaUsage.memory_mb.label("memory_used"),
            ReplicaUsage.sampled_at,
        )
        .outerjoin(Node, Node.id == DeploymentReplica.node_id)
        .outerjoin(ReplicaUsage, ReplicaUsage.replica_id == DeploymentReplica.id)
        .where(
            DeploymentReplica.deployment_id == deployment_id,
            DeploymentReplica.status.in_(CAPACITY_HOLDING_STATUSES),
        )
    )
    rows = list(await session.execute(statement))
    replicas = tuple(
        ReplicaState(
            replica_id=row.id,
            node_id=row.node_id,
            status=row.status,
            revision=row.revision,
            created_seq=row.ordinal,
            health=row.health,
            health_since=row.health_since,
            running_since=row.started_at,
        )
        for row in rows
    )
    usage = {
        row.id: Sampled(Usage(row.cpu_used, row.memory_used), row.sampled_at)
        for row in rows
        if row.sampled_at is not None
    }
    return replicas, frozenset(row.node_id for row in rows if row.draining), usage


def _node_capacity(row: Any) -> NodeCapacity:
    return NodeCapacity(
        node_id=row.id,
        name=row.name,
        labels=row.labels,
        capacity=capacity_of(row),
        allocated=allocated_of(row),
        schedulable=True,
    )


def _by_strategy(share: Any, strategy: Strategy) -> Any:
    """Least allocated first for Spread, most for BinPack; nodes without a share last."""
    return (share.asc() if strategy is Strategy.SPREAD else share.desc()).nulls_last()


async def candidate_nodes(
    session: AsyncSession,
    *,
    node_selector: Mapping[str, str],
    request: Resources,
    strategy: Strategy,
    limit: int,
    lock: bool,
    closest: bool = False,
) -> tuple[NodeCapacity, ...]:
    """The best `limit` nodes that could take one more replica of `request`.

    Candidates are online, not cordoned, carry the selector's labels and have room for one
    replica in every dimension. They are ordered in SQL by the same allocation share the
    placement scores (CPU and memory, which every request asks for): least allocated first for
    Spread, most for BinPack. Reading only the best few keeps a reconcile's cost independent
    of the cluster's size; placement among them stays exact, and never over-commits, because
    the planner re-checks every fit and the node CHECK constraints back it up.

    With `lock`, the rows are locked (FOR NO KEY UPDATE SKIP LOCKED) until the transaction
    ends, so what we read stays true while we place on it, and nodes another reconcile is
    placing on right now are passed over instead of waited for: concurrent reconciles then
    spread over different nodes rather than queueing behind each other (with Spread they all
    want the same least-allocated few). A caller that finds too little room this way must ask
    again without `lock`: the skipped nodes may be the only ones with room. That second read
    locks nothing (a waiting lock taken while holding the first read's would deadlock with
    another reconcile doing the same); the node CHECK constraints guard what it places.

    With `closest` (for that second read), the places left over after every node with room are
    filled with full nodes, the closest to fitting one more replica first (the placement's own
    measure, placement._closest_fit): the planner never places on them, but the capacity
    message names what the closest node lacks, on every reconcile and not only on the one that
    filled the last node.
    """
    share = Node.allocated_cpu_millicores / func.nullif(
        Node.cpu_cores * MILLIS_PER_CORE, 0
    ) + Node.allocated_memory_mb / func.nullif(cast(Node.memory_mb, Float), 0)
    cpu_capacity = func.round(Node.cpu_cores * MILLIS_PER_CORE)
    free_and_need = (
        (cpu_capacity - Node.allocated_cpu_millicores, request.cpu_millis),
        (Node.memory_mb - Node.allocated_memory_mb, request.memory_mb),
        (Node.gpu_units - Node.allocated_gpu_units, request.gpu_units),
        (Node.storage_gb - Node.allocated_storage_gb, request.storage_gb),
    )
    room = and_(*(need <= free for free, need in free_and_need))
    statement = (
        select(
            Node.id,
            Node.name,
            Node.labels,
            Node.cpu_cores,
            Node.memory_mb,
            Node.gpu_units,
            Node.storage_gb,
            Node.allocated_cpu_millicores,
            Node.allocated_memory_mb,
            Node.allocated_gpu_units,
            Node.allocated_storage_gb,
        )
        .where(Node.status == NodeStatus.ONLINE, Node.cordoned.is_(False))
        .limit(limit)
    )
    # Random among equals with room, so that reconciles reading without locks do not all plan
    # on the same first rows.
    if closest:
        # The scarcest dimension's free amount in replicas: what placement._closest_fit ranks
        # (ties by name, as there).
        ratios = [cast(free, Float) / need for free, need in free_and_need if need > 0]
        nearness = func.least(*ratios) if ratios else literal(0.0)
        statement = statement.order_by(
            room.desc(),
            _by_strategy(case((room, share)), strategy),
            case((room, func.random())),
            nearness.desc(),
            Node.name,
        )
    else:
        statement = statement.where(room).order_by(_by_strategy(share, strategy), func.random())
    if lock:
        # NO KEY UPDATE, not UPDATE: the foreign-key checks of agents' replica writes take
        # KEY SHARE on the node and must not queue (or deadlock) behind a placement.
        statement = statement.with_for_update(of=Node, skip_locked=True, key_share=True)
    if node_selector:
        statement = statement.where(Node.labels.contains(dict(node_selector)))
    return tuple(_node_capacity(row) for row in await session.execute(statement))


async def observe(session: AsyncSession, *, namespace: str, name: str) -> Snapshot:
    """Lock the deployment and read it and its live replicas (four statements).

    Nodes are read separately (`candidate_nodes`), only when something needs placing.
    """
    now = await lock(session, namespace=namespace, name=name)
    user_id, deployment, quota_limited = await _read_deployment(
        session, namespace=namespace, name=name
    )
    replicas, evacuate, usage = (
        await _read_replicas(session, deployment.id) if deployment else ((), frozenset(), {})
    )
    if deployment is not None:
        deployment = await _reread_failures(session, deployment)
    return Snapshot(
        user_id=user_id,
        deployment=deployment,
        replicas=replicas,
        now=now,
        evacuate=evacuate,
        usage=usage,
        quota_limited=quota_limited,
    )


async def _reread_failures(session: AsyncSession, stored: StoredDeployment) -> StoredDeployment:
    """The failure count again, read after the replicas.

    Under READ COMMITTED each statement sees its own snapshot, and an agent's report that fails
    a replica bumps the count (trigger, migration 0004) in its own transaction. Read before the
    replicas, the count could miss a failure whose replica is already gone from them: the
    planner would then replace it at once, with no backoff, and autoRevert would let a second
    canary start. Read after, every failure the replicas show is counted (a newer one only
    holds back a replacement a reconcile early).
    """
    row = (
        await session.execute(
            select(Deployment.consecutive_failures, Deployment.last_failure_at).where(
                Deployment.id == stored.id
            )
        )
    ).one()
    return replace(
        stored, consecutive_failures=row.consecutive_failures, last_failure_at=row.last_failure_at
    )


async def quota_gate(session: AsyncSession, *, snapshot: Snapshot) -> QuotaGate | None:
    """The namespace's quotas, locked, and its usage (db/quotas.py); None without a quota."""
    if not snapshot.quota_limited or snapshot.user_id is None:
        return None
    stored = snapshot.deployment
    return await quotas.gate(
        session, user_id=snapshot.user_id, deployment_id=stored.id if stored else None
    )


async def _write_deployment(
    session: AsyncSession, snapshot: Snapshot, namespace: str, desired: DesiredRecord, actor: str
) -> StoredDeployment:
    """Insert the row or update what changed; return the row as it now is."""
    stored = snapshot.deployment
    values = desired.row_values()
    resources = desired.resource_values()
    if stored is None:
        user_id = snapshot.user_id or await queries.ensure_user(session, namespace)
        deployment_id = uuid.uuid4()
        await session.execute(
            insert(Deployment).values(
                id=deployment_id,
                user_id=user_id,
                name=desired.spec.name,
                status=DeploymentStatus.PENDING,
                status_actor=actor,
                status_reason="Created",
                # The time of this statement, not of the transaction's start: with a quota,
                # inserts happen under its lock, and the oldest deployments are the ones the
                # fogDeployments limit admits, so the order must be the order of the inserts.
                created_at=func.clock_timestamp(),
                **values,
            )
        )
        await session.execute(
            insert(DeploymentResource).values(deployment_id=deployment_id, **resources)
        )
        return StoredDeployment(
            id=deployment_id,
            status=DeploymentStatus.PENDING,
            next_ordinal=0,
            values=values,
            resources=resources,
        )
    if dict(stored.values) != values:
        changes = dict(values)
        if values[Deployment.revision.key] != stored.revision:
            # A new revision starts with a clean slate: the old one's failures say nothing
            # about it (model/restarts.py).
            changes.update(consecutive_failures=0, last_failure_at=None)
        await session.execute(
            update(Deployment).where(Deployment.id == stored.id).values(**changes)
        )
    if dict(stored.resources) != resources:
        await session.execute(
            update(DeploymentResource)
            .where(DeploymentResource.deployment_id == stored.id)
            .values(**resources)
        )
    return stored


async def _insert_replicas(
    session: AsyncSession,
    stored: StoredDeployment,
    plan: Plan,
    new_ids: Sequence[uuid.UUID],
    planned: DesiredState,
    actor: str,
) -> int:
    """Insert the plan's new replicas in one statement; return the next free ordinal.

    `new_ids[i]` and ordinal `next_ordinal + i` belong to `plan.create[i]`, as the status
    computation assumed (planner.outcome). They are of the revision the plan was made for
    (the spec's, or the one an automatic revert went back to), with its request.
    """
    if not plan.create:
        return stored.next_ordinal
    request = planned.request
    rows = [
        {
            "id": new_id,
            "deployment_id": stored.id,
            "node_id": replica.node_id,
            "ordinal": stored.next_ordinal + offset,
            "revision": planned.revision,
            "cpu_millicores": request.cpu_millis,
            "memory_mb": request.memory_mb,
            "gpu_units": request.gpu_units,
            "storage_gb": request.storage_gb,
            "status_actor": actor,
            "status_reason": "Scheduled" if replica.node_id else "Unschedulable",
        }
        for offset, (new_id, replica) in enumerate(zip(new_ids, plan.create, strict=True))
    ]
    # Sorted by node so concurrent reconciles lock node rows (via the trigger) in one order.
    rows.sort(key=lambda row: str(row["node_id"]))
    await session.execute(insert(DeploymentReplica), rows)
    return stored.next_ordinal + len(rows)


async def _assign(session: AsyncSession, plan: Plan) -> None:
    """Give waiting replicas their nodes in one UPDATE ... FROM (VALUES ...).

    Each must still be pending without a node, or the plan is stale.
    """
    if not plan.assign:
        return
    pairs = values(
        column("replica_id", UUID(as_uuid=True)),
        column("target_node", UUID(as_uuid=True)),
        name="assignment",
    ).data([(a.replica_id, a.node_id) for a in sorted(plan.assign, key=lambda a: str(a.node_id))])
    result = await session.execute(
        update(DeploymentReplica)
        .where(
            DeploymentReplica.id == pairs.c.replica_id,
            DeploymentReplica.status == ReplicaStatus.PENDING,
            DeploymentReplica.node_id.is_(None),
        )
        .values(node_id=pairs.c.target_node, status_reason="Scheduled")
    )
    if result.rowcount != len(plan.assign):  # type: ignore[attr-defined]
        raise ConflictError("a replica changed while it was being assigned")


async def transition(
    session: AsyncSession, transitions: Sequence[ReplicaTransition], actor: str
) -> None:
    """Apply status changes, one UPDATE per (from, to, reason) group, each guarded by `from`."""
    groups: dict[tuple[ReplicaStatus, ReplicaStatus, str], list[uuid.UUID]] = defaultdict(list)
    for change in transitions:
        groups[(change.from_status, change.to_status, change.reason)].append(change.replica_id)
    for (old, new, reason), ids in groups.items():
        values: dict[str, Any] = {"status": new, "status_reason": reason, "status_actor": actor}
        if new in (ReplicaStatus.STOPPED, ReplicaStatus.FAILED):
            values["stopped_at"] = func.now()
        result = await session.execute(
            update(DeploymentReplica)
            .where(DeploymentReplica.id.in_(ids), DeploymentReplica.status == old)
            .values(**values)
        )
        if result.rowcount != len(ids):  # type: ignore[attr-defined]
            raise ConflictError(f"{len(ids) - result.rowcount} replicas left {old} meanwhile")  # type: ignore[attr-defined]


async def set_status(
    session: AsyncSession,
    deployment_id: uuid.UUID,
    *,
    old: DeploymentStatus,
    new: DeploymentStatus,
    reason: str,
    actor: str,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Move the deployment to `new` along legal steps: one history row per step."""
    steps = deployment_path(old=old, new=new) or (old,)
    for step in steps:
        values: dict[str, Any] = {"status": step, "status_reason": reason, "status_actor": actor}
        if step == steps[-1] and extra:
            values.update(extra)
        await session.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(**values)
        )


async def apply(
    session: AsyncSession,
    *,
    snapshot: Snapshot,
    namespace: str,
    desired: DesiredRecord,
    planned: DesiredState,
    plan: Plan,
    new_ids: Sequence[uuid.UUID],
    status: DeploymentStatus,
    reason: str,
    actor: str,
) -> uuid.UUID:
    """Write the spec, the plan (made for `planned`) and the new status; return the id."""
    stored = await _write_deployment(session, snapshot, namespace, desired, actor)
    next_ordinal = await _insert_replicas(session, stored, plan, new_ids, planned, actor)
    await _assign(session, plan)
    await transition(session, plan.transitions, actor)
    # Ready again: the crash-loop count starts over (model/restarts.py).
    reset = status is DeploymentStatus.RUNNING and stored.consecutive_failures > 0
    # Waiting on a quota, or no longer: migration 0007's wakeups look for this reason.
    quota_wait = (reason == QUOTA_EXCEEDED) != (stored.status_reason == QUOTA_EXCEEDED)
    if status != stored.status or next_ordinal != stored.next_ordinal or reset or quota_wait:
        extra: dict[str, Any] = {"next_ordinal": next_ordinal}
        if reset:
            extra["consecutive_failures"] = 0
        await set_status(
            session,
            stored.id,
            old=stored.status,
            new=status,
            reason=reason,
            actor=actor,
            extra=extra,
        )
    return stored.id


async def soft_delete(
    session: AsyncSession,
    *,
    snapshot: Snapshot,
    transitions: Sequence[ReplicaTransition],
    actor: str,
) -> None:
    """Mark the deployment deleted and stop its replicas; the rows stay as the record."""
    stored = snapshot.deployment
    if stored is None:
        return
    await transition(session, transitions, actor)
    await set_status(
        session,
        stored.id,
        old=stored.status,
        new=DeploymentStatus.DELETED,
        reason="Deleted",
        actor=actor,
        extra={"deleted_at": func.now()},
    )
