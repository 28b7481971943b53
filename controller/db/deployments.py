"""Observe and apply for deployments: the reconcile's only database code.

One reconcile is one transaction: take the deployment's advisory lock, read a snapshot with a
fixed number of statements, and write the plan back with a fixed number of batched statements,
however many replicas are involved. A batch of reconciles (issue 15 item 1) is one transaction
with the same statements, each for all its deployments (`observe_many`, `apply_many`); a lone
reconcile is a batch of one. History rows and node allocation totals are written by
triggers in the same statements (docs/design/capacity-and-history.md).

Conflicts are expected and cheap: an agent may have moved a replica between our read and our
write (each UPDATE is guarded by the status we read), or another deployment took the room we
planned to use (the node CHECK constraints refuse it). Either way the transaction rolls back
whole and `ConflictError` tells the reconciler to plan again from a fresh snapshot.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    Select,
    String,
    and_,
    any_,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
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
from controller.model.planner import Assignment, DesiredState, Plan, ReplicaTransition
from controller.model.quota import QUOTA_EXCEEDED, NamespaceQuotas, QuotaGate
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


# A deployment by (namespace, name): what the operator's work queue hands out.
Key = tuple[str, str]


# The snapshot's statements (`observe_many`), built once at Core level (queries.core,
# unnested_slots) and executed with a batch's keys as parameters, as the agent API's are:
# every reconcile reads through them. Built per call, the lock statement alone (its subquery's
# columns, its cache key) held 3-7% of the operator's samples in a 3,000-object restart, and
# under 1.3% built once (docs/design/performance.md).


def _lock_statement() -> Select[int, datetime]:
    """The keys' advisory locks (parameter `locked_key`), in lock-id order; and now()."""
    wanted = queries.unnested_slots("locked", {"key": String()})
    ids = (
        select(func.hashtextextended(wanted.c.key, 0).label("lock_id"))
        .select_from(wanted)
        .order_by(literal_column("lock_id"))
        .subquery("ordered")
    )
    return select(func.count(func.pg_advisory_xact_lock(ids.c.lock_id)), func.now())


def _deployments_statement() -> Select[Any]:
    """Each (namespace, name)'s tenant, quota flag, live deployment row and its resources."""
    wanted = queries.unnested_slots("wanted", {"namespace": String(), "name": String()})
    users, deployments = queries.core(User), queries.core(Deployment)
    resources = queries.core(DeploymentResource)
    return (
        select(
            wanted.c.namespace,
            wanted.c.name,
            users.c.id.label("user_id"),
            quotas.has_quota(users.c.id).label("quota_limited"),
            deployments.c.status_reason,
            deployments.c.id,
            deployments.c.status,
            deployments.c.next_ordinal,
            *(deployments.c[column.key] for column in _TRACKED_COLUMNS),
            *(resources.c[column.key] for column in _RESOURCE_COLUMNS),
        )
        .select_from(wanted)
        .join(users, users.c.name == wanted.c.namespace)
        .outerjoin(
            deployments,
            and_(
                deployments.c.user_id == users.c.id,
                deployments.c.name == wanted.c.name,
                deployments.c.deleted_at.is_(None),
            ),
        )
        .outerjoin(resources, resources.c.deployment_id == deployments.c.id)
    )


def _replicas_statement() -> Select[Any]:
    """The deployments' (parameter `deployment_ids`) live replicas: `_read_replicas`."""
    deployments, replicas = queries.core(Deployment), queries.core(DeploymentReplica)
    nodes, usage = queries.core(Node), queries.core(ReplicaUsage)
    return (
        select(
            deployments.c.id.label("deployment_id"),
            deployments.c.consecutive_failures,
            deployments.c.last_failure_at,
            replicas.c.id,
            replicas.c.node_id,
            replicas.c.status,
            replicas.c.revision,
            replicas.c.ordinal,
            replicas.c.health,
            replicas.c.health_since,
            replicas.c.started_at,
            nodes.c.draining,
            usage.c.cpu_millicores.label("cpu_used"),
            usage.c.memory_mb.label("memory_used"),
            usage.c.sampled_at,
        )
        .select_from(deployments)
        .outerjoin(
            replicas,
            and_(
                replicas.c.deployment_id == deployments.c.id,
                replicas.c.status.in_(sorted(CAPACITY_HOLDING_STATUSES)),
            ),
        )
        .outerjoin(nodes, nodes.c.id == replicas.c.node_id)
        .outerjoin(usage, usage.c.replica_id == replicas.c.id)
        .where(deployments.c.id == any_(queries.array_slot("deployment_ids", UUID(as_uuid=True))))
    )


_LOCK = _lock_statement()
_DEPLOYMENTS = _deployments_statement()
_REPLICAS = _replicas_statement()


def lock_key(namespace: str, name: str) -> str:
    """The advisory-lock key of one deployment: reconciles of it run one at a time."""
    return f"fogdeployment/{namespace}/{name}"


async def lock(session: AsyncSession, keys: Sequence[Key]) -> datetime:
    """Take the deployments' transaction-scoped advisory locks (released at commit).

    One statement for any number of keys, taken in the order of their lock ids (the inner
    ORDER BY feeds the aggregate in that order): two batches that share keys wait for each
    other in one order and cannot deadlock on these locks. The rows a batch writes are
    ordered elsewhere (new namespaces' rows: `queries.ensure_users`). Returns the
    transaction's now() from the same statement, the one clock of a reconcile.
    """
    keys_param = queries.unnested_values("locked", {"key": [lock_key(*key) for key in keys]})
    now: datetime = (await session.execute(_LOCK, keys_param)).one()[1]
    return now


async def _read_deployments(
    session: AsyncSession, keys: Sequence[Key]
) -> dict[Key, tuple[uuid.UUID | None, StoredDeployment | None, bool]]:
    """Each key's tenant, live deployment row (None if there is none) and quota flag.

    A key whose namespace has no tenant row yet is absent from the result.
    """
    wanted = queries.unnested_values(
        "wanted",
        {"namespace": [namespace for namespace, _ in keys], "name": [name for _, name in keys]},
    )
    found: dict[Key, tuple[uuid.UUID | None, StoredDeployment | None, bool]] = {}
    for row in (await session.execute(_DEPLOYMENTS, wanted)).mappings():
        stored = (
            None
            if row["id"] is None
            else StoredDeployment(
                id=row["id"],
                status=row["status"],
                next_ordinal=row["next_ordinal"],
                values={column.key: row[column.key] for column in _TRACKED_COLUMNS},
                resources={column.key: row[column.key] for column in _RESOURCE_COLUMNS},
                status_reason=row["status_reason"],
            )
        )
        found[(row["namespace"], row["name"])] = (row["user_id"], stored, row["quota_limited"])
    return found


@dataclass(slots=True)
class _Observed:
    """One deployment's live replicas, drained nodes, usage, and failure count, as read."""

    replicas: list[ReplicaState] = field(default_factory=list)
    evacuate: set[uuid.UUID] = field(default_factory=set)
    usage: dict[uuid.UUID, Sampled] = field(default_factory=dict)
    failures: int = 0
    last_failure_at: datetime | None = None


async def _read_replicas(
    session: AsyncSession, deployment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, _Observed]:
    """The deployments' live replicas, their drained nodes, usage, and failure counts.

    One statement for the batch: the deployment row LEFT JOIN its live replicas, so that the
    failure count comes from the same statement, and so the same snapshot, as the replicas.
    Under READ COMMITTED each statement sees its own snapshot, and an agent's report that fails
    a replica bumps the count (trigger, migration 0004) in its own transaction: a count read
    before the replicas could miss a failure whose replica is already gone from them, and the
    planner would replace it at once, with no backoff (autoRevert would let a second canary
    start; commit 19825d9). Read together, every failure the replicas show is counted.
    """
    observed: dict[uuid.UUID, _Observed] = defaultdict(_Observed)
    ids = {"deployment_ids": list(deployment_ids)}
    for row in await session.execute(_REPLICAS, ids):
        seen = observed[row.deployment_id]
        seen.failures, seen.last_failure_at = row.consecutive_failures, row.last_failure_at
        if row.id is None:
            continue
        seen.replicas.append(
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
        )
        if row.draining:
            seen.evacuate.add(row.node_id)
        if row.sampled_at is not None:
            seen.usage[row.id] = Sampled(Usage(row.cpu_used, row.memory_used), row.sampled_at)
    return observed


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


async def observe_many(session: AsyncSession, keys: Sequence[Key]) -> dict[Key, Snapshot]:
    """Lock the deployments and read them and their live replicas: three statements, any keys.

    Nodes are read separately (`candidate_nodes`), only when something needs placing.
    """
    now = await lock(session, keys)
    rows = await _read_deployments(session, keys)
    ids = [stored.id for _, stored, _ in rows.values() if stored is not None]
    observed = await _read_replicas(session, ids) if ids else {}
    snapshots: dict[Key, Snapshot] = {}
    for key in keys:
        user_id, stored, quota_limited = rows.get(key, (None, None, False))
        seen = observed[stored.id] if stored is not None else _Observed()
        if stored is not None:
            stored = replace(
                stored,
                consecutive_failures=seen.failures,
                last_failure_at=seen.last_failure_at,
            )
        snapshots[key] = Snapshot(
            user_id=user_id,
            deployment=stored,
            replicas=tuple(seen.replicas),
            now=now,
            evacuate=frozenset(seen.evacuate),
            usage=seen.usage,
            quota_limited=quota_limited,
        )
    return snapshots


async def observe(session: AsyncSession, *, namespace: str, name: str) -> Snapshot:
    """`observe_many` of one deployment."""
    key = (namespace, name)
    return (await observe_many(session, [key]))[key]


async def quota_gates(
    session: AsyncSession, snapshots: Iterable[Snapshot]
) -> dict[uuid.UUID, NamespaceQuotas]:
    """The quotas, locked, and usage of the namespaces with a quota the snapshots are in.

    With the age rank of each stored deployment among them (db/quotas.py `gates`), by tenant.
    """
    wanted: dict[uuid.UUID, list[uuid.UUID]] = {}
    for snapshot in snapshots:
        if snapshot.quota_limited and snapshot.user_id is not None:
            ids = wanted.setdefault(snapshot.user_id, [])
            if snapshot.deployment is not None:
                ids.append(snapshot.deployment.id)
    return await quotas.gates(session, wanted) if wanted else {}


async def quota_gate(session: AsyncSession, *, snapshot: Snapshot) -> QuotaGate | None:
    """What one deployment's placement decides on; None without a quota."""
    found = await quota_gates(session, [snapshot])
    if snapshot.user_id not in found:
        return None
    stored = snapshot.deployment
    return found[snapshot.user_id].gate(stored.id if stored else None)


@dataclass(frozen=True, slots=True)
class Write:
    """What one deployment's reconcile writes: the spec, the plan (made for `planned`), status."""

    snapshot: Snapshot
    namespace: str
    desired: DesiredRecord
    planned: DesiredState
    plan: Plan
    new_ids: Sequence[uuid.UUID]
    status: DeploymentStatus
    reason: str


async def _write_deployments(
    session: AsyncSession, writes: Sequence[Write], actor: str
) -> list[StoredDeployment]:
    """Insert the new rows (one INSERT per table for all) or update what changed; the rows.

    An update of a recorded spec is a statement per deployment: it follows a person's edit,
    rare next to the reconciles that place, report and resync.
    """
    stored_rows: list[StoredDeployment] = []
    new_rows: list[dict[str, Any]] = []
    new_resources: list[dict[str, Any]] = []
    # The new namespaces' tenant rows before any other row, in one statement in name order
    # (queries.ensure_users): one per namespace in batch order deadlocked two batches.
    unknown = [w.namespace for w in writes if w.snapshot.user_id is None]
    users = await queries.ensure_users(session, unknown) if unknown else {}
    for write in writes:
        stored = write.snapshot.deployment
        values = write.desired.row_values()
        resources = write.desired.resource_values()
        if stored is None:
            user_id = write.snapshot.user_id or users[write.namespace]
            deployment_id = uuid.uuid4()
            new_rows.append(
                {"id": deployment_id, "user_id": user_id, "name": write.desired.spec.name, **values}
            )
            new_resources.append({"deployment_id": deployment_id, **resources})
            stored_rows.append(
                StoredDeployment(
                    id=deployment_id,
                    status=DeploymentStatus.PENDING,
                    next_ordinal=0,
                    values=values,
                    resources=resources,
                )
            )
            continue
        await _update_spec(session, stored, values, resources)
        stored_rows.append(stored)
    if new_rows:
        await session.execute(
            insert(Deployment).values(
                status=DeploymentStatus.PENDING,
                status_actor=actor,
                status_reason="Created",
                # The time of this statement, not of the transaction's start: with a quota,
                # inserts happen under its lock, and the oldest deployments are the ones the
                # fogDeployments limit admits, so the order must be the order of the inserts.
                created_at=func.clock_timestamp(),
            ),
            new_rows,
        )
        await session.execute(insert(DeploymentResource), new_resources)
    return stored_rows


async def _update_spec(
    session: AsyncSession,
    stored: StoredDeployment,
    values: Mapping[str, Any],
    resources: Mapping[str, Any],
) -> None:
    """Write the spec's columns of an existing row where they differ from what it records."""
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


def _replica_rows(stored: StoredDeployment, write: Write, actor: str) -> list[dict[str, Any]]:
    """The rows of the plan's new replicas.

    `new_ids[i]` and ordinal `next_ordinal + i` belong to `plan.create[i]`, as the status
    computation assumed (planner.outcome). They are of the revision the plan was made for
    (the spec's, or the one an automatic revert went back to), with its request.
    """
    request = write.planned.request
    return [
        {
            "id": new_id,
            "deployment_id": stored.id,
            "node_id": replica.node_id,
            "ordinal": stored.next_ordinal + offset,
            "revision": write.planned.revision,
            "cpu_millicores": request.cpu_millis,
            "memory_mb": request.memory_mb,
            "gpu_units": request.gpu_units,
            "storage_gb": request.storage_gb,
            "status_actor": actor,
            "status_reason": "Scheduled" if replica.node_id else "Unschedulable",
        }
        for offset, (new_id, replica) in enumerate(
            zip(write.new_ids, write.plan.create, strict=True)
        )
    ]


async def _insert_replicas(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert every new replica of the batch in one INSERT ... SELECT FROM unnest(...).

    One statement on the server, of one shape for any batch size: an executemany would be a
    statement per row (the allocation trigger runs per row either way).
    """
    if not rows:
        return
    # Sorted by node so concurrent reconciles lock node rows (via the trigger) in one order;
    # unnest() yields the rows in array order.
    rows.sort(key=lambda row: str(row["node_id"]))
    table = DeploymentReplica.__table__.c
    new = queries.unnested(
        "new_replica", {key: ([row[key] for row in rows], table[key].type) for key in rows[0]}
    )
    await session.execute(insert(DeploymentReplica).from_select(list(rows[0]), select(*new.c)))


async def _assign(session: AsyncSession, assignments: Sequence[Assignment]) -> None:
    """Give waiting replicas their nodes in one UPDATE ... FROM unnest(...).

    Each must still be pending without a node, or the plan is stale.
    """
    if not assignments:
        return
    ordered = sorted(assignments, key=lambda a: str(a.node_id))
    pairs = queries.unnested(
        "assignment",
        {
            "replica_id": ([a.replica_id for a in ordered], UUID()),
            "target_node": ([a.node_id for a in ordered], UUID()),
        },
    )
    result = await session.execute(
        update(DeploymentReplica)
        .where(
            DeploymentReplica.id == pairs.c.replica_id,
            DeploymentReplica.status == ReplicaStatus.PENDING,
            DeploymentReplica.node_id.is_(None),
        )
        .values(node_id=pairs.c.target_node, status_reason="Scheduled")
    )
    if result.rowcount != len(ordered):  # type: ignore[attr-defined]
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
            .where(
                DeploymentReplica.id
                == any_(queries.array_param("replica_ids", sorted(ids, key=str), UUID())),
                DeploymentReplica.status == old,
            )
            .values(**values)
        )
        if result.rowcount != len(ids):  # type: ignore[attr-defined]
            raise ConflictError(f"{len(ids) - result.rowcount} replicas left {old} meanwhile")  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _StatusChange:
    """One deployment's move to a new status, and what its last step also sets."""

    deployment_id: uuid.UUID
    steps: tuple[DeploymentStatus, ...]
    reason: str
    next_ordinal: int | None = None
    reset_failures: bool = False
    deleted: bool = False


async def _set_statuses(
    session: AsyncSession, changes: Sequence[_StatusChange], actor: str
) -> None:
    """Move each deployment along its legal steps: one history row per step (trigger).

    One UPDATE ... FROM unnest(...) per step depth for the whole batch (one for most moves,
    `deployment_path` is at most a few steps long); a deployment's `next_ordinal` and failure
    reset (or its soft delete) go with its last step.
    """
    ordered = sorted(changes, key=lambda change: str(change.deployment_id))
    for depth in range(max((len(change.steps) for change in ordered), default=0)):
        moving = [change for change in ordered if len(change.steps) > depth]
        last = [len(change.steps) == depth + 1 for change in moving]
        rows = queries.unnested(
            "moved",
            {
                "id": ([change.deployment_id for change in moving], UUID()),
                "status": ([change.steps[depth].value for change in moving], String()),
                "reason": ([change.reason for change in moving], String()),
                "next_ordinal": (
                    [c.next_ordinal if end else None for c, end in zip(moving, last, strict=True)],
                    Integer(),
                ),
                "reset": (
                    [c.reset_failures and end for c, end in zip(moving, last, strict=True)],
                    Boolean(),
                ),
                "deleted": (
                    [c.deleted and end for c, end in zip(moving, last, strict=True)],
                    Boolean(),
                ),
            },
        )
        await session.execute(
            update(Deployment)
            .where(Deployment.id == rows.c.id)
            .values(
                status=cast(rows.c.status, Deployment.status.type),
                status_reason=rows.c.reason,
                status_actor=actor,
                next_ordinal=func.coalesce(rows.c.next_ordinal, Deployment.next_ordinal),
                consecutive_failures=case((rows.c.reset, 0), else_=Deployment.consecutive_failures),
                deleted_at=case((rows.c.deleted, func.now()), else_=Deployment.deleted_at),
            )
        )


def _status_change(
    stored: StoredDeployment, write: Write, next_ordinal: int
) -> _StatusChange | None:
    """The deployment's status write, or None if its row already says it all."""
    # Ready again: the crash-loop count starts over (model/restarts.py).
    reset = write.status is DeploymentStatus.RUNNING and stored.consecutive_failures > 0
    # Waiting on a quota, or no longer: migration 0007's wakeups look for this reason.
    quota_wait = (write.reason == QUOTA_EXCEEDED) != (stored.status_reason == QUOTA_EXCEEDED)
    if not (
        write.status != stored.status or next_ordinal != stored.next_ordinal or reset or quota_wait
    ):
        return None
    return _StatusChange(
        deployment_id=stored.id,
        steps=deployment_path(old=stored.status, new=write.status) or (stored.status,),
        reason=write.reason,
        next_ordinal=next_ordinal,
        reset_failures=reset,
    )


async def apply_many(
    session: AsyncSession, writes: Sequence[Write], *, actor: str
) -> list[uuid.UUID]:
    """Write every deployment's spec, plan and status; return their ids, in order.

    A fixed number of statements for any batch: one INSERT per table for new deployments
    (plus a spec UPDATE per edited one), one INSERT of replicas, one UPDATE of assignments,
    one per kind of replica transition, one per status step depth.
    """
    stored_rows = await _write_deployments(session, writes, actor)
    replica_rows: list[dict[str, Any]] = []
    changes: list[_StatusChange] = []
    for stored, write in zip(stored_rows, writes, strict=True):
        rows = _replica_rows(stored, write, actor)
        replica_rows += rows
        change = _status_change(stored, write, stored.next_ordinal + len(rows))
        if change is not None:
            changes.append(change)
    await _insert_replicas(session, replica_rows)
    await _assign(session, [a for write in writes for a in write.plan.assign])
    await transition(session, [t for write in writes for t in write.plan.transitions], actor)
    await _set_statuses(session, changes, actor)
    return [stored.id for stored in stored_rows]


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
    steps = deployment_path(old=stored.status, new=DeploymentStatus.DELETED) or (stored.status,)
    await _set_statuses(
        session,
        [_StatusChange(deployment_id=stored.id, steps=steps, reason="Deleted", deleted=True)],
        actor,
    )
