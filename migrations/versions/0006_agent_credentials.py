"""Agent credentials, and notifications that tell the agent API which node's list changed.

Revision ID: 0006_agent_credentials
Revises: 0005_leadership
Create Date: 2026-11-27

Edge agents stop connecting to PostgreSQL: they speak to the agent API (`fogctl serve-agents`)
with a token of their own node (docs/agent-protocol.md).

* `node_credentials`: one row per token, stored only as its SHA-256 digest, bound to a node and
  removed with it (ON DELETE CASCADE: a removed node's tokens stop working in the same commit).
  `kind` is `bootstrap` (one exchange, expires) or `node`.
* `fog_notify_assignment`: a replica inserted on a node, or changed there by anyone but that
  node's agent (a placement, a stop, a lost node), sends `NOTIFY fog_agent_events` with
  `assign:<node id>`; the agent API pushes that node's new list at once, without polling the
  database per agent. PostgreSQL folds identical payloads of one transaction, so a burst that
  places a thousand replicas on one node sends one notification for it.
* `fog_notify_revoked`: a deleted credential (revoked, rotated, exchanged, or its node removed)
  sends `revoke:<digest in hex>`, so that streams opened with it close at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_agent_credentials"
down_revision = "0005_leadership"
branch_labels = None
depends_on = None

# The agent history actor's prefix (controller.model.actors.AGENT_PREFIX).
AGENT_PREFIX = "agent:"

UPGRADE_SQL = f"""
CREATE FUNCTION fog_notify_assignment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fog_agent_events', 'assign:' || NEW.node_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_assign_insert
AFTER INSERT ON deployment_replicas
FOR EACH ROW
WHEN (NEW.node_id IS NOT NULL)
EXECUTE FUNCTION fog_notify_assignment();

CREATE TRIGGER deployment_replicas_assign_update
AFTER UPDATE OF status, node_id ON deployment_replicas
FOR EACH ROW
WHEN (NEW.node_id IS NOT NULL
      AND (OLD.status IS DISTINCT FROM NEW.status OR OLD.node_id IS DISTINCT FROM NEW.node_id)
      AND NEW.status_actor NOT LIKE '{AGENT_PREFIX}%')
EXECUTE FUNCTION fog_notify_assignment();

CREATE FUNCTION fog_notify_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fog_agent_events', 'revoke:' || encode(OLD.token_digest, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER node_credentials_revoked
AFTER DELETE ON node_credentials
FOR EACH ROW
EXECUTE FUNCTION fog_notify_revoked();
"""

DOWNGRADE_SQL = """
DROP TRIGGER IF EXISTS deployment_replicas_assign_update ON deployment_replicas;
DROP TRIGGER IF EXISTS deployment_replicas_assign_insert ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_notify_assignment();
DROP TRIGGER IF EXISTS node_credentials_revoked ON node_credentials;
DROP FUNCTION IF EXISTS fog_notify_revoked();
"""


def upgrade() -> None:
    op.create_table(
        "node_credentials",
        sa.Column("token_digest", postgresql.BYTEA(), nullable=False),
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('bootstrap', 'node')", name=op.f("ck_node_credentials_kind_known")
        ),
        sa.CheckConstraint(
            "octet_length(token_digest) = 32", name=op.f("ck_node_credentials_digest_sha256")
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_credentials_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_node_credentials")),
    )
    op.create_index("ix_node_credentials_node_id", "node_credentials", ["node_id"])
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.drop_index("ix_node_credentials_node_id", table_name="node_credentials")
    op.drop_table("node_credentials")
