"""The PostgreSQL schema: the INFRA-02 seed's tables plus the two it assumed (`users`, `nodes`).

Names follow the seed exactly (tables, enum types, indexes) because other tools of the platform
read these tables. What we add is what a reconciler needs and the seed left open:

* `users` is the tenant: one row per Kubernetes namespace, created on first use, so the seed's
  unique `(user_id, name)` is Kubernetes' own `(namespace, name)` rule.
* `nodes` carries capacity and the totals allocated to replicas that hold it. A trigger keeps
  the totals and CHECK constraints make over-commit impossible even when two operators race
  (see docs/design/capacity-and-history.md). Its heartbeat lives apart, in `node_leases`.
* Each replica row carries its own resource request and template revision: during a rolling
  update old and new replicas hold different amounts, so the amount released when a replica
  stops must be the one it was placed with, not the deployment's current request.
* `replica_status_history` sits beside `deployment_status_history` because the two status
  columns are different PostgreSQL enum types. Triggers write both histories in the same
  statement as the status change, so no transition can be missed or invented.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from controller.model.nodes import NodeStatus
from controller.model.protocol import CONTAINER_ID_MAX, K8S_NAME_MAX
from controller.model.resources import Resources
from controller.model.states import DeploymentStatus, ReplicaHealth, ReplicaStatus

# The seed's deployment name limit (1-100 characters).
DEPLOYMENT_NAME_MAX = 100
# The seed's image limit (1-500 characters).
IMAGE_MAX = 500
# A SHA-256 hex digest of the pod template, as `controller.model` computes it.
REVISION_MAX = 64
# Actors are "operator", "agent:<node>" or a Kubernetes field manager (at most 128 characters).
ACTOR_MAX = 255

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _values(enum_cls: type[Any]) -> list[str]:
    """Store an enum's values (lowercase, as the seed lists them) rather than member names."""
    return [member.value for member in enum_cls]


deployment_status_enum = Enum(
    DeploymentStatus, name="deploymentstatus", values_callable=_values, validate_strings=True
)
replica_status_enum = Enum(
    ReplicaStatus, name="replicastatus", values_callable=_values, validate_strings=True
)
replica_health_enum = Enum(
    ReplicaHealth, name="replicahealth", values_callable=_values, validate_strings=True
)
node_status_enum = Enum(
    NodeStatus, name="nodestatus", values_callable=_values, validate_strings=True
)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class User(Base):
    """A tenant: one Kubernetes namespace."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False, unique=True)
    created_at: Mapped[datetime] = _created_at()


class Node(Base):
    """A fog node: capacity, what is allocated on it, and whether it may take replicas."""

    __tablename__ = "nodes"
    __table_args__ = (
        CheckConstraint("cpu_cores >= 0", name="cpu_cores_nonnegative"),
        CheckConstraint("memory_mb >= 0", name="memory_mb_nonnegative"),
        CheckConstraint("gpu_units >= 0", name="gpu_units_nonnegative"),
        CheckConstraint("storage_gb >= 0", name="storage_gb_nonnegative"),
        # The last line of defence against over-commit: whatever the planner believed, a
        # transaction that would allocate past capacity fails here and is re-planned.
        CheckConstraint(
            "allocated_cpu_millicores BETWEEN 0 AND round(cpu_cores * 1000)",
            name="cpu_not_overcommitted",
        ),
        CheckConstraint(
            "allocated_memory_mb BETWEEN 0 AND memory_mb", name="memory_not_overcommitted"
        ),
        CheckConstraint(
            "allocated_gpu_units BETWEEN 0 AND gpu_units", name="gpu_not_overcommitted"
        ),
        CheckConstraint(
            "allocated_storage_gb BETWEEN 0 AND storage_gb", name="storage_not_overcommitted"
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False, unique=True)
    status: Mapped[NodeStatus] = mapped_column(
        node_status_enum, nullable=False, server_default=NodeStatus.ONLINE.value
    )
    cpu_cores: Mapped[float] = mapped_column(Float, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_units: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    storage_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    # Cordoned nodes take no new replicas; draining ones also have theirs moved away.
    cordoned: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    draining: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    labels: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    # Totals of replicas that hold capacity here; maintained by the trigger in migration 0001.
    allocated_cpu_millicores: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default="0"
    )
    allocated_memory_mb: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    allocated_gpu_units: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    allocated_storage_gb: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class NodeLease(Base):
    """A node's heartbeat, in a row of its own, as Kubernetes moved heartbeats to Lease objects.

    Placements lock node rows while they write allocations; a heartbeat stamped on the node row
    had to wait for them or skip the node, and under sustained placement a healthy node could
    miss enough heartbeats to be declared lost. The lease row is written by nobody else, so a
    heartbeat never waits for placement work and is never skipped (migration 0003).
    """

    __tablename__ = "node_leases"

    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    # Stamped with the database's now(): the node check compares it with now() too, so the
    # agent's and the operator's clocks never enter the comparison.
    renewed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Deployment(Base):
    """The Postgres record of one FogDeployment (the seed's `deployments`)."""

    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_user_id_deleted_at", "user_id", "deleted_at"),
        # Deleted ones too: `fogctl history NS/NAME` finds every deployment of a name (0014).
        Index("ix_deployments_user_id_name", "user_id", "name"),
        Index(
            "uq_deployments_user_id_name_active",
            "user_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        CheckConstraint("target_replicas BETWEEN 0 AND 100", name="target_replicas_range"),
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        CheckConstraint("char_length(container_image) BETWEEN 1 AND 500", name="image_length"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(DEPLOYMENT_NAME_MAX), nullable=False)
    container_image: Mapped[str] = mapped_column(String(IMAGE_MAX), nullable=False)
    target_replicas: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[DeploymentStatus] = mapped_column(
        deployment_status_enum, nullable=False, server_default=DeploymentStatus.PENDING.value
    )
    # The rest of the container spec (env, ports, command, args): the seed's flexible JSONB.
    container_spec: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    node_selector: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    placement_strategy: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="Spread"
    )
    # spec.healthCheck with its defaults written out (NULL: none); the agents' assignments
    # carry it (migration 0012).
    health_check: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Hash of image + resources + container spec; replicas of another revision are rolled.
    revision: Mapped[str] = mapped_column(String(REVISION_MAX), nullable=False)
    # The Kubernetes object this row belongs to; a re-created object has a new uid.
    k8s_uid: Mapped[str | None] = mapped_column(String(64))
    observed_generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Failures of the current revision's replicas since the deployment was last Ready, and
    # when the last one happened: the restart backoff reads them (kept by a trigger, see
    # migrations 0002 and 0004; a new revision resets them).
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Next replica ordinal: replica names are <deployment>-<ordinal>, never reused.
    next_ordinal: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Why and by whom the status last changed; the history trigger copies them.
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    status_changed_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    resources: Mapped[DeploymentResource | None] = relationship(
        back_populates="deployment", uselist=False, passive_deletes=True
    )
    replicas: Mapped[list[DeploymentReplica]] = relationship(
        back_populates="deployment", passive_deletes=True
    )


class DeploymentResource(Base):
    """Per-replica resource request of a deployment (one-to-one, the seed's limits as CHECKs)."""

    __tablename__ = "deployment_resources"
    __table_args__ = (
        CheckConstraint("cpu_cores BETWEEN 0.5 AND 32", name="cpu_cores_range"),
        CheckConstraint("memory_mb BETWEEN 512 AND 65536", name="memory_mb_range"),
        CheckConstraint("gpu_units BETWEEN 0 AND 8", name="gpu_units_range"),
        CheckConstraint("storage_gb BETWEEN 1 AND 1000", name="storage_gb_range"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    cpu_cores: Mapped[float] = mapped_column(Float, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_units: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    storage_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    deployment: Mapped[Deployment] = relationship(back_populates="resources")


class DeploymentReplica(Base):
    """One replica instance: where it is placed, what it holds, and its status."""

    __tablename__ = "deployment_replicas"
    __table_args__ = (
        Index("ix_deployment_replicas_deployment_id_status", "deployment_id", "status"),
        Index("ix_deployment_replicas_node_id", "node_id"),
        # Carries the id, so `fogctl history` names a deployment's replicas index-only (0014).
        Index(
            "uq_deployment_replicas_deployment_id_ordinal",
            "deployment_id",
            "ordinal",
            unique=True,
            postgresql_include=["id"],
        ),
        CheckConstraint("cpu_millicores >= 0", name="cpu_millicores_nonnegative"),
        CheckConstraint("memory_mb >= 0", name="memory_mb_nonnegative"),
        CheckConstraint("gpu_units >= 0", name="gpu_units_nonnegative"),
        CheckConstraint("storage_gb >= 0", name="storage_gb_nonnegative"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    node_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    status: Mapped[ReplicaStatus] = mapped_column(
        replica_status_enum, nullable=False, server_default=ReplicaStatus.PENDING.value
    )
    container_id: Mapped[str | None] = mapped_column(String(CONTAINER_ID_MAX))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a replica created without a node was given one: that UPDATE changes no status, so
    # no history row marks the moment it began to hold capacity (stamped by a trigger, 0009).
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ordinal: Mapped[int] = mapped_column(Integer, nullable=False)
    revision: Mapped[str] = mapped_column(String(REVISION_MAX), nullable=False)
    cpu_millicores: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_units: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_gb: Mapped[int] = mapped_column(Integer, nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    # What the agent's health check last said (NULL: no report yet), its words, and since when
    # (stamped when the health changes, with the clock of started_at): Ready counts replicas
    # healthy for minReadySeconds (model/health.py). The history trigger records each change.
    health: Mapped[ReplicaHealth | None] = mapped_column(replica_health_enum)
    health_reason: Mapped[str | None] = mapped_column(Text)
    health_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    deployment: Mapped[Deployment] = relationship(back_populates="replicas")


class DeploymentRevision(Base):
    """One distinct template a deployment has run, numbered per deployment (migration 0011).

    `hash` is what replicas carry (`deployment_replicas.revision`); `template` is the spec
    fragment `fogctl rollout undo` writes back (NULL for older revisions found only on replicas
    when the table was created). A template that returns is the same row, renumbered to the
    newest number, as Kubernetes renumbers a reused ReplicaSet (controller/model/revisions.py).
    `completed_at`: when every desired replica of it was last available, so "the last fully
    healthy revision" is the completed one with the highest number.
    """

    __tablename__ = "deployment_revisions"
    __table_args__ = (
        UniqueConstraint("deployment_id", "hash"),
        UniqueConstraint("deployment_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    hash: Mapped[str] = mapped_column(String(REVISION_MAX), nullable=False)
    template: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()
    # The Kubernetes field manager that last wrote the spec (as quotas' `actor`).
    created_by: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Issue 16 item 5 (migration 0015, model/canary.py): when and by whom its canaries were
    # promoted, and when and why spec.strategy.autoRevert aborted its rollout.
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    promoted_by: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    aborted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    abort_reason: Mapped[str | None] = mapped_column(Text)


def _history_changed_at() -> Mapped[datetime]:
    """A history row's time, part of the primary key: the tables are partitioned on it.

    PostgreSQL requires a partitioned table's unique keys to contain the partition key, so the
    key is `(id, changed_at)`; monthly partitions (migration 0010, model/partitions.py) keep
    each index one month deep and let a retention drop a month whole.
    """
    return mapped_column(
        DateTime(timezone=True),
        primary_key=True,
        nullable=False,
        server_default=func.clock_timestamp(),
    )


# A replica's request: the four columns, in Resources' order. Read together wherever a
# replica's request is rebuilt from its row (the agents' assignments, cost).
REPLICA_REQUEST = (
    DeploymentReplica.cpu_millicores,
    DeploymentReplica.memory_mb,
    DeploymentReplica.gpu_units,
    DeploymentReplica.storage_gb,
)


def request_of(row: Any) -> Resources:
    """The request of a replica from a row that selected REPLICA_REQUEST."""
    return Resources(
        cpu_millis=row.cpu_millicores,
        memory_mb=row.memory_mb,
        gpu_units=row.gpu_units,
        storage_gb=row.storage_gb,
    )


class DeploymentStatusHistory(Base):
    """Immutable audit trail of deployment status changes (written by a trigger)."""

    __tablename__ = "deployment_status_history"
    __table_args__ = (
        # Carries what `fogctl history` reads, which is then an index-only scan (migration 0014).
        Index(
            "ix_deployment_status_history_deployment_id_changed_at",
            "deployment_id",
            "changed_at",
            postgresql_include=["old_status", "new_status", "actor", "reason"],
        ),
        Index("ix_deployment_status_history_changed_by", "changed_by"),
        {"postgresql_partition_by": "RANGE (changed_at)"},
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    old_status: Mapped[DeploymentStatus | None] = mapped_column(deployment_status_enum)
    new_status: Mapped[DeploymentStatus] = mapped_column(deployment_status_enum, nullable=False)
    changed_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = _history_changed_at()


class ReplicaStatusHistory(Base):
    """Immutable audit trail of replica status changes (written by a trigger)."""

    __tablename__ = "replica_status_history"
    __table_args__ = (
        # Carries what `fogctl history` reads, which is then an index-only scan (migration 0014).
        Index(
            "ix_replica_status_history_deployment_id_changed_at",
            "deployment_id",
            "changed_at",
            postgresql_include=[
                "replica_id",
                "node_id",
                "old_status",
                "new_status",
                "old_health",
                "new_health",
                "actor",
                "reason",
            ],
        ),
        Index("ix_replica_status_history_replica_id", "replica_id"),
        {"postgresql_partition_by": "RANGE (changed_at)"},
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    replica_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployment_replicas.id", ondelete="CASCADE"), nullable=False
    )
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    old_status: Mapped[ReplicaStatus | None] = mapped_column(replica_status_enum)
    new_status: Mapped[ReplicaStatus] = mapped_column(replica_status_enum, nullable=False)
    # A health transition (migration 0012) keeps the status (old = new) and changes these.
    old_health: Mapped[ReplicaHealth | None] = mapped_column(replica_health_enum)
    new_health: Mapped[ReplicaHealth | None] = mapped_column(replica_health_enum)
    node_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = _history_changed_at()


class NodeCredential(Base):
    """A token an agent proves its node with, kept only as its SHA-256 (migration 0006).

    Bound to one node and deleted with it, so a removed node's credentials stop working in the
    same commit; deleting a row notifies the agent API, which closes streams opened with it.
    """

    __tablename__ = "node_credentials"
    __table_args__ = (
        CheckConstraint("kind IN ('bootstrap', 'node')", name="kind_known"),
        CheckConstraint("octet_length(token_digest) = 32", name="digest_sha256"),
        Index("ix_node_credentials_node_id", "node_id"),
    )

    token_digest: Mapped[bytes] = mapped_column(BYTEA, primary_key=True)
    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    # Bootstrap tokens expire (a day); node tokens live until rotated, revoked or removed.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Leadership(Base):
    """The epoch of each leader election: advanced by every new leader (migration 0005).

    Every write transaction of an elected operator checks it (`fog_fence`), so a leader that
    lost its Lease while paused cannot commit anything once a successor has taken over.
    """

    __tablename__ = "leadership"

    name: Mapped[str] = mapped_column(String(K8S_NAME_MAX), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False)
    holder: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False)
    acquired_at: Mapped[datetime] = _created_at()


# The limit columns of a quota, in the order of FogQuota's spec.hard (migration 0007).
QUOTA_LIMIT_COLUMNS = (
    "cpu_millicores",
    "memory_mb",
    "gpu_units",
    "storage_gb",
    "replicas",
    "fog_deployments",
)


class Quota(Base):
    """One FogQuota: a namespace's limits (migration 0007).

    Each limit is NULL when the FogQuota leaves that resource unlimited. Placements in the
    namespace lock these rows before reading its usage, so two cannot both take the last unit.
    """

    __tablename__ = "quotas"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        *(
            CheckConstraint(f"{name} >= 0", name=f"{name}_nonnegative")
            for name in QUOTA_LIMIT_COLUMNS
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False)
    k8s_uid: Mapped[str | None] = mapped_column(String(64))
    observed_generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cpu_millicores: Mapped[int | None] = mapped_column(BigInteger)
    memory_mb: Mapped[int | None] = mapped_column(BigInteger)
    gpu_units: Mapped[int | None] = mapped_column(BigInteger)
    storage_gb: Mapped[int | None] = mapped_column(BigInteger)
    replicas: Mapped[int | None] = mapped_column(BigInteger)
    fog_deployments: Mapped[int | None] = mapped_column(BigInteger)
    # Who set these limits (the Kubernetes field manager of the spec); the history copies it.
    actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class QuotaHistory(Base):
    """Immutable record of quota changes (written by a trigger, migration 0007).

    Namespace and name rather than foreign keys: the record outlives the quota.
    """

    __tablename__ = "quota_history"
    __table_args__ = (
        Index("ix_quota_history_namespace_name_changed_at", "namespace", "name", "changed_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    namespace: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False)
    name: Mapped[str] = mapped_column(String(K8S_NAME_MAX), nullable=False)
    old_hard: Mapped[dict[str, int | None] | None] = mapped_column(JSONB)
    new_hard: Mapped[dict[str, int | None] | None] = mapped_column(JSONB)
    actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
    )


class ReplicaUsage(Base):
    """A running replica's latest usage sample, overwritten by the next (migration 0008).

    `fogctl top` and `.status.usage` read it; the history is in the hourly rollups below.
    """

    __tablename__ = "replica_usage"
    __table_args__ = (
        CheckConstraint("cpu_millicores >= 0", name="cpu_nonnegative"),
        CheckConstraint("memory_mb >= 0", name="memory_nonnegative"),
        Index("ix_replica_usage_deployment_id", "deployment_id"),
        Index("ix_replica_usage_node_id", "node_id"),
        # Room on each page for the next sample's row version: updates stay in place (HOT).
        {"postgresql_with": {"fillfactor": 70}},
    )

    replica_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployment_replicas.id", ondelete="CASCADE"), primary_key=True
    )
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False
    )
    cpu_millicores: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb: Mapped[int] = mapped_column(Integer, nullable=False)
    # The database's now() when the sample was written: one clock, as for leases.
    sampled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class _HourlyUsage:
    """An hour of samples for one key: count, sum and maximum (controller.model.usage.Rollup)."""

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer, nullable=False)
    cpu_millicores_sum: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cpu_millicores_max: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_mb_sum: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_mb_max: Mapped[int] = mapped_column(Integer, nullable=False)


class DeploymentUsageHourly(_HourlyUsage, Base):
    """Hourly usage of a deployment's replicas (migration 0008)."""

    __tablename__ = "deployment_usage_hourly"
    __table_args__ = (CheckConstraint("samples > 0", name="samples_positive"),)

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )


class NodeUsageHourly(_HourlyUsage, Base):
    """Hourly usage of the replicas on a node (migration 0008)."""

    __tablename__ = "node_usage_hourly"
    __table_args__ = (CheckConstraint("samples > 0", name="samples_positive"),)

    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
