"""Node heartbeats move to a table of their own, `node_leases`.

Revision ID: 0003_node_leases
Revises: 0002_wakeups_and_restarts
Create Date: 2026-11-27

A placement locks its candidate node rows until it commits. A heartbeat stamped on the node row
either waited for those locks (and every placement queued behind the heartbeat in turn) or
skipped the node; under sustained placement a healthy node could miss heartbeats tick after
tick and be declared lost. Kubernetes met the same problem and moved node heartbeats into Lease
objects (KEP-589). Here the lease is a row nobody but the node's agent writes, so a heartbeat
never waits for, and is never skipped because of, placement work. `nodes.last_heartbeat_at` goes:
one place holds a heartbeat. Existing stamps are carried over (and back on downgrade).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_node_leases"
down_revision = "0002_wakeups_and_restarts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_leases",
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column(
            "renewed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name="fk_node_leases_node_id_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name="pk_node_leases"),
    )
    op.execute(
        "INSERT INTO node_leases (node_id, renewed_at)"
        " SELECT id, coalesce(last_heartbeat_at, now()) FROM nodes"
    )
    op.drop_column("nodes", "last_heartbeat_at")


def downgrade() -> None:
    op.add_column(
        "nodes", sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        "UPDATE nodes SET last_heartbeat_at = l.renewed_at"
        " FROM node_leases l WHERE l.node_id = nodes.id"
    )
    op.drop_table("node_leases")
