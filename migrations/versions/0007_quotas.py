"""Namespace quotas (FogQuota), their history, and the wakeups that release waiting replicas.

Revision ID: 0007
Revises: 0006_agent_credentials
Create Date: 2026-11-27

* `quotas`: one row per FogQuota object, in its namespace's tenant row. Each limit is a
  nullable column (NULL: that resource is not limited), checked non-negative here as the CRD
  checks it at the API server. CPU is kept in millicores like the replica rows, so sums and
  limits compare exactly. A placement in a namespace that has quotas locks its quota rows
  (FOR UPDATE) before it reads the namespace's usage, which serialises placements of one
  namespace and only of namespaces that have a quota (docs/design/quotas.md).
* `quota_history`: every change of a quota's limits (created, changed, deleted), with the old
  and new limits as JSON, the actor and the time, written by a trigger in the same statement as
  the change, as the other histories are. It keeps the namespace and name, not a foreign key:
  the record outlives the quota.
* Wakeups: replicas over quota stay unplaced with status reason `QuotaExceeded`. Whatever can
  make room for them notifies those waiting deployments of the namespace on
  `fog_deployment_changed` (the channel the operator already listens on, migration 0002): a
  replica that stops holding capacity, a quota created, changed or deleted, a deployment deleted.
  A namespace where nobody waits pays one indexed lookup that finds nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006_agent_credentials"
branch_labels = None
depends_on = None

# The deployment status reason of replicas held back by a quota (controller.model.quota).
QUOTA_EXCEEDED = "QuotaExceeded"
# The channel of migration 0002 (controller.db.notify).
CHANNEL = "fog_deployment_changed"

# The limit columns, in the order of FogQuota's spec.hard.
LIMITS = (
    "cpu_millicores",
    "memory_mb",
    "gpu_units",
    "storage_gb",
    "replicas",
    "fog_deployments",
)

_HARD_JSON = "jsonb_build_object({pairs})"


def _hard(row: str) -> str:
    return _HARD_JSON.format(pairs=", ".join(f"'{name}', {row}.{name}" for name in LIMITS))


UPGRADE_SQL = f"""
CREATE FUNCTION fog_record_quota_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO quota_history (namespace, name, old_hard, new_hard, actor)
        SELECT u.name, OLD.name, {_hard("OLD")}, NULL, OLD.actor
          FROM users u WHERE u.id = OLD.user_id;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND {_hard("NEW")} = {_hard("OLD")} THEN
        RETURN NULL;  -- a new generation or uid with the same limits is no quota change
    END IF;
    INSERT INTO quota_history (namespace, name, old_hard, new_hard, actor)
    SELECT u.name, NEW.name, CASE WHEN TG_OP = 'UPDATE' THEN {_hard("OLD")} END, {_hard("NEW")},
           NEW.actor
      FROM users u WHERE u.id = NEW.user_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER quotas_record_change
AFTER INSERT OR DELETE OR UPDATE ON quotas
FOR EACH ROW EXECUTE FUNCTION fog_record_quota_change();

CREATE FUNCTION fog_wake_quota_waiters(tenant uuid) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('{CHANNEL}', id::text)
      FROM deployments
     WHERE user_id = tenant AND deleted_at IS NULL AND status_reason = '{QUOTA_EXCEEDED}'
$$;

CREATE FUNCTION fog_quota_room_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'deployment_replicas' THEN
        PERFORM fog_wake_quota_waiters(d.user_id)
           FROM deployments d
          WHERE d.id = NEW.deployment_id
            AND EXISTS (SELECT 1 FROM quotas q WHERE q.user_id = d.user_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM fog_wake_quota_waiters(OLD.user_id);
    ELSE
        PERFORM fog_wake_quota_waiters(NEW.user_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_quota_room
AFTER UPDATE OF status, node_id ON deployment_replicas
FOR EACH ROW
WHEN (fog_replica_holds_capacity(OLD.status, OLD.node_id)
      AND NOT fog_replica_holds_capacity(NEW.status, NEW.node_id))
EXECUTE FUNCTION fog_quota_room_freed();

CREATE TRIGGER deployments_quota_room
AFTER UPDATE OF deleted_at ON deployments
FOR EACH ROW
WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
EXECUTE FUNCTION fog_quota_room_freed();

CREATE TRIGGER quotas_room
AFTER INSERT OR DELETE OR UPDATE ON quotas
FOR EACH ROW EXECUTE FUNCTION fog_quota_room_freed();
"""

DOWNGRADE_SQL = """
DROP TRIGGER IF EXISTS quotas_room ON quotas;
DROP TRIGGER IF EXISTS deployments_quota_room ON deployments;
DROP TRIGGER IF EXISTS deployment_replicas_quota_room ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_quota_room_freed();
DROP FUNCTION IF EXISTS fog_wake_quota_waiters(uuid);
DROP TRIGGER IF EXISTS quotas_record_change ON quotas;
DROP FUNCTION IF EXISTS fog_record_quota_change();
"""


def _id() -> sa.Column[object]:
    return sa.Column(
        "id",
        postgresql.UUID(as_uuid=True),
        server_default=sa.text("gen_random_uuid()"),
        nullable=False,
    )


def _limit(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), nullable=True)


def upgrade() -> None:
    op.create_table(
        "quotas",
        _id(),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("k8s_uid", sa.String(length=64), nullable=True),
        sa.Column("observed_generation", sa.Integer(), server_default="0", nullable=False),
        *(_limit(name) for name in LIMITS),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        *(
            sa.CheckConstraint(f"{name} >= 0", name=op.f(f"ck_quotas_{name}_nonnegative"))
            for name in LIMITS
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_quotas_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotas")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_quotas_user_id_name")),
    )
    op.create_table(
        "quota_history",
        _id(),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("old_hard", postgresql.JSONB(), nullable=True),
        sa.Column("new_hard", postgresql.JSONB(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_history")),
    )
    op.create_index(
        "ix_quota_history_namespace_name_changed_at",
        "quota_history",
        ["namespace", "name", "changed_at"],
    )
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.drop_index("ix_quota_history_namespace_name_changed_at", table_name="quota_history")
    op.drop_table("quota_history")
    op.drop_table("quotas")
