"""The seed's deployment schema, users and nodes, capacity tracking and history triggers.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25

Tables, enums and indexes are the INFRA-02 seed's (see controller/db/tables.py for the columns
we add and why). Two triggers do work that must happen in the same statement as the change:

* `fog_track_allocation` keeps `nodes.allocated_*` equal to the sum of the replicas that hold
  capacity there, so placement reads one row per node instead of summing every replica, and
  the CHECK constraints on `nodes` refuse any over-commit, whoever writes.
* `fog_record_*_transition` writes one history row per status change (and one for the first
  status on insert), copying the row's `status_actor` / `status_reason`: no code path can change
  a status without leaving its history, and no history row exists without a change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

DEPLOYMENT_STATUSES = ("pending", "scheduled", "running", "stopped", "failed", "deleted")
REPLICA_STATUSES = ("pending", "starting", "running", "stopping", "stopped", "failed")
NODE_STATUSES = ("online", "offline")

deploymentstatus = postgresql.ENUM(*DEPLOYMENT_STATUSES, name="deploymentstatus", create_type=False)
replicastatus = postgresql.ENUM(*REPLICA_STATUSES, name="replicastatus", create_type=False)
nodestatus = postgresql.ENUM(*NODE_STATUSES, name="nodestatus", create_type=False)

UUID = postgresql.UUID(as_uuid=True)
JSONB_EMPTY = sa.text("'{}'::jsonb")


def _id() -> sa.Column[object]:
    return sa.Column("id", UUID, server_default=sa.text("gen_random_uuid()"), nullable=False)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


TRIGGERS_SQL = """
CREATE FUNCTION fog_replica_holds_capacity(s replicastatus, node uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT node IS NOT NULL AND s IN ('pending', 'starting', 'running', 'stopping')
$$;

CREATE FUNCTION fog_track_allocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND fog_replica_holds_capacity(OLD.status, OLD.node_id) THEN
        IF TG_OP = 'UPDATE' AND fog_replica_holds_capacity(NEW.status, NEW.node_id)
           AND NEW.node_id = OLD.node_id
           AND (NEW.cpu_millicores, NEW.memory_mb, NEW.gpu_units, NEW.storage_gb)
             = (OLD.cpu_millicores, OLD.memory_mb, OLD.gpu_units, OLD.storage_gb) THEN
            RETURN NULL;  -- still held by the same node: nothing moves
        END IF;
        UPDATE nodes SET
            allocated_cpu_millicores = allocated_cpu_millicores - OLD.cpu_millicores,
            allocated_memory_mb = allocated_memory_mb - OLD.memory_mb,
            allocated_gpu_units = allocated_gpu_units - OLD.gpu_units,
            allocated_storage_gb = allocated_storage_gb - OLD.storage_gb
        WHERE id = OLD.node_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND fog_replica_holds_capacity(NEW.status, NEW.node_id) THEN
        UPDATE nodes SET
            allocated_cpu_millicores = allocated_cpu_millicores + NEW.cpu_millicores,
            allocated_memory_mb = allocated_memory_mb + NEW.memory_mb,
            allocated_gpu_units = allocated_gpu_units + NEW.gpu_units,
            allocated_storage_gb = allocated_storage_gb + NEW.storage_gb
        WHERE id = NEW.node_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_track_allocation
AFTER INSERT OR DELETE
   OR UPDATE OF status, node_id, cpu_millicores, memory_mb, gpu_units, storage_gb
ON deployment_replicas FOR EACH ROW EXECUTE FUNCTION fog_track_allocation();

CREATE FUNCTION fog_record_replica_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO replica_status_history
        (replica_id, deployment_id, old_status, new_status, node_id, actor, reason)
    VALUES (NEW.id, NEW.deployment_id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.status, NEW.node_id, NEW.status_actor, NEW.status_reason);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_record_transition
AFTER INSERT OR UPDATE OF status ON deployment_replicas
FOR EACH ROW EXECUTE FUNCTION fog_record_replica_transition();

CREATE FUNCTION fog_record_deployment_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO deployment_status_history
        (deployment_id, old_status, new_status, changed_by, actor, reason)
    VALUES (NEW.id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
            NEW.status, NEW.status_changed_by, NEW.status_actor, NEW.status_reason);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployments_record_transition
AFTER INSERT OR UPDATE OF status ON deployments
FOR EACH ROW EXECUTE FUNCTION fog_record_deployment_transition();
"""

DROP_TRIGGERS_SQL = """
DROP TRIGGER IF EXISTS deployments_record_transition ON deployments;
DROP FUNCTION IF EXISTS fog_record_deployment_transition();
DROP TRIGGER IF EXISTS deployment_replicas_record_transition ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_record_replica_transition();
DROP TRIGGER IF EXISTS deployment_replicas_track_allocation ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_track_allocation();
DROP FUNCTION IF EXISTS fog_replica_holds_capacity(replicastatus, uuid);
"""


def upgrade() -> None:
    bind = op.get_bind()
    for enum in (deploymentstatus, replicastatus, nodestatus):
        enum.create(bind, checkfirst=False)

    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "nodes",
        _id(),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("status", nodestatus, server_default="online", nullable=False),
        sa.Column("cpu_cores", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_units", sa.Integer(), server_default="0", nullable=False),
        sa.Column("storage_gb", sa.Integer(), nullable=False),
        sa.Column("cordoned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("labels", postgresql.JSONB(), server_default=JSONB_EMPTY, nullable=False),
        sa.Column("allocated_cpu_millicores", sa.Integer(), server_default="0", nullable=False),
        sa.Column("allocated_memory_mb", sa.Integer(), server_default="0", nullable=False),
        sa.Column("allocated_gpu_units", sa.Integer(), server_default="0", nullable=False),
        sa.Column("allocated_storage_gb", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.CheckConstraint("cpu_cores >= 0", name=op.f("ck_nodes_cpu_cores_nonnegative")),
        sa.CheckConstraint("memory_mb >= 0", name=op.f("ck_nodes_memory_mb_nonnegative")),
        sa.CheckConstraint("gpu_units >= 0", name=op.f("ck_nodes_gpu_units_nonnegative")),
        sa.CheckConstraint("storage_gb >= 0", name=op.f("ck_nodes_storage_gb_nonnegative")),
        sa.CheckConstraint(
            "allocated_cpu_millicores BETWEEN 0 AND round(cpu_cores * 1000)",
            name=op.f("ck_nodes_cpu_not_overcommitted"),
        ),
        sa.CheckConstraint(
            "allocated_memory_mb BETWEEN 0 AND memory_mb",
            name=op.f("ck_nodes_memory_not_overcommitted"),
        ),
        sa.CheckConstraint(
            "allocated_gpu_units BETWEEN 0 AND gpu_units",
            name=op.f("ck_nodes_gpu_not_overcommitted"),
        ),
        sa.CheckConstraint(
            "allocated_storage_gb BETWEEN 0 AND storage_gb",
            name=op.f("ck_nodes_storage_not_overcommitted"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
    )
    op.create_table(
        "deployments",
        _id(),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("container_image", sa.String(500), nullable=False),
        sa.Column("target_replicas", sa.Integer(), nullable=False),
        sa.Column("status", deploymentstatus, server_default="pending", nullable=False),
        sa.Column("container_spec", postgresql.JSONB(), server_default=JSONB_EMPTY, nullable=False),
        sa.Column("node_selector", postgresql.JSONB(), server_default=JSONB_EMPTY, nullable=False),
        sa.Column("placement_strategy", sa.String(16), server_default="Spread", nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("k8s_uid", sa.String(64), nullable=True),
        sa.Column("observed_generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_ordinal", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_actor", sa.String(255), nullable=True),
        sa.Column("status_changed_by", UUID, nullable=True),
        *_timestamps(),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "target_replicas BETWEEN 0 AND 100", name=op.f("ck_deployments_target_replicas_range")
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 100", name=op.f("ck_deployments_name_length")
        ),
        sa.CheckConstraint(
            "char_length(container_image) BETWEEN 1 AND 500",
            name=op.f("ck_deployments_image_length"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_deployments_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_user_id_deleted_at", "deployments", ["user_id", "deleted_at"])
    op.create_index(
        "uq_deployments_user_id_name_active",
        "deployments",
        ["user_id", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "deployment_resources",
        _id(),
        sa.Column("deployment_id", UUID, nullable=False),
        sa.Column("cpu_cores", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_units", sa.Integer(), server_default="0", nullable=False),
        sa.Column("storage_gb", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.CheckConstraint(
            "cpu_cores BETWEEN 0.5 AND 32", name=op.f("ck_deployment_resources_cpu_cores_range")
        ),
        sa.CheckConstraint(
            "memory_mb BETWEEN 512 AND 65536", name=op.f("ck_deployment_resources_memory_mb_range")
        ),
        sa.CheckConstraint(
            "gpu_units BETWEEN 0 AND 8", name=op.f("ck_deployment_resources_gpu_units_range")
        ),
        sa.CheckConstraint(
            "storage_gb BETWEEN 1 AND 1000", name=op.f("ck_deployment_resources_storage_gb_range")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_resources_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_resources"),
        sa.UniqueConstraint("deployment_id", name="uq_deployment_resources_deployment_id"),
    )
    op.create_table(
        "deployment_replicas",
        _id(),
        sa.Column("deployment_id", UUID, nullable=False),
        sa.Column("node_id", UUID, nullable=True),
        sa.Column("status", replicastatus, server_default="pending", nullable=False),
        sa.Column("container_id", sa.String(255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("cpu_millicores", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_units", sa.Integer(), nullable=False),
        sa.Column("storage_gb", sa.Integer(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("status_actor", sa.String(255), nullable=True),
        *_timestamps(),
        sa.CheckConstraint(
            "cpu_millicores >= 0", name=op.f("ck_deployment_replicas_cpu_millicores_nonnegative")
        ),
        sa.CheckConstraint(
            "memory_mb >= 0", name=op.f("ck_deployment_replicas_memory_mb_nonnegative")
        ),
        sa.CheckConstraint(
            "gpu_units >= 0", name=op.f("ck_deployment_replicas_gpu_units_nonnegative")
        ),
        sa.CheckConstraint(
            "storage_gb >= 0", name=op.f("ck_deployment_replicas_storage_gb_nonnegative")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_replicas_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name="fk_deployment_replicas_node_id_nodes",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_replicas"),
    )
    op.create_index(
        "ix_deployment_replicas_deployment_id_status",
        "deployment_replicas",
        ["deployment_id", "status"],
    )
    op.create_index("ix_deployment_replicas_node_id", "deployment_replicas", ["node_id"])
    op.create_index(
        "uq_deployment_replicas_deployment_id_ordinal",
        "deployment_replicas",
        ["deployment_id", "ordinal"],
        unique=True,
    )
    op.create_table(
        "deployment_status_history",
        _id(),
        sa.Column("deployment_id", UUID, nullable=False),
        sa.Column("old_status", deploymentstatus, nullable=True),
        sa.Column("new_status", deploymentstatus, nullable=False),
        sa.Column("changed_by", UUID, nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.clock_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_deployment_status_history_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["changed_by"],
            ["users.id"],
            name="fk_deployment_status_history_changed_by_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_status_history"),
    )
    op.create_index(
        "ix_deployment_status_history_deployment_id_changed_at",
        "deployment_status_history",
        ["deployment_id", "changed_at"],
    )
    op.create_index(
        "ix_deployment_status_history_changed_by", "deployment_status_history", ["changed_by"]
    )
    op.create_table(
        "replica_status_history",
        _id(),
        sa.Column("replica_id", UUID, nullable=False),
        sa.Column("deployment_id", UUID, nullable=False),
        sa.Column("old_status", replicastatus, nullable=True),
        sa.Column("new_status", replicastatus, nullable=False),
        sa.Column("node_id", UUID, nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.clock_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["replica_id"],
            ["deployment_replicas.id"],
            name="fk_replica_status_history_replica_id_deployment_replicas",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name="fk_replica_status_history_deployment_id_deployments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replica_status_history"),
    )
    op.create_index(
        "ix_replica_status_history_deployment_id_changed_at",
        "replica_status_history",
        ["deployment_id", "changed_at"],
    )
    op.create_index(
        "ix_replica_status_history_replica_id", "replica_status_history", ["replica_id"]
    )
    op.execute(TRIGGERS_SQL)


def downgrade() -> None:
    op.execute(DROP_TRIGGERS_SQL)
    for table in (
        "replica_status_history",
        "deployment_status_history",
        "deployment_replicas",
        "deployment_resources",
        "deployments",
        "nodes",
        "users",
    ):
        op.drop_table(table)
    bind = op.get_bind()
    for enum in (nodestatus, replicastatus, deploymentstatus):
        enum.drop(bind, checkfirst=False)
