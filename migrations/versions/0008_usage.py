"""Measured usage: each running replica's latest sample, and hourly rollups per deployment and node.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

Agents sample what every running replica uses (CPU, memory) and send the samples in batches
(docs/agent-protocol.md). Raw samples are not kept: at one sample per replica every 30 s,
10,000 replicas make 10.5 billion rows a year. What is kept (docs/design/capacity-and-history.md,
"Usage"):

* `replica_usage`: the latest sample of each replica, one row per replica, overwritten by the
  next. `fogctl top` and `.status.usage` read it with one indexed lookup per deployment or
  node. Its indexed columns never change on an overwrite, so with room left on each page
  (fillfactor 70) PostgreSQL updates it in place (HOT) and the indexes are not touched.
* `deployment_usage_hourly` and `node_usage_hourly`: per key and hour, the number of samples,
  their sum and their maximum, for CPU (millicores) and memory (MB). The batch that writes
  the samples upserts them in the same transaction (counts and sums add, maxima take the
  larger), so a rollup is never behind the samples. A year is 8,760 rows per deployment, read
  by the primary key `(key, hour)` in milliseconds.

Every row goes with its replica, deployment or node (ON DELETE CASCADE). Deployments are only
soft-deleted, so their rollups outlive the FogDeployment object, as their history does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROLLUPS = (
    ("deployment_usage_hourly", "deployment_id", "deployments"),
    ("node_usage_hourly", "node_id", "nodes"),
)


def upgrade() -> None:
    op.create_table(
        "replica_usage",
        sa.Column("replica_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("deployment_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("node_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("cpu_millicores", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column(
            "sampled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("cpu_millicores >= 0", name=op.f("ck_replica_usage_cpu_nonnegative")),
        sa.CheckConstraint("memory_mb >= 0", name=op.f("ck_replica_usage_memory_nonnegative")),
        sa.ForeignKeyConstraint(
            ["replica_id"],
            ["deployment_replicas.id"],
            name=op.f("fk_replica_usage_replica_id_deployment_replicas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_replica_usage_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_replica_usage_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("replica_id", name=op.f("pk_replica_usage")),
        postgresql_with={"fillfactor": 70},
    )
    op.create_index(
        op.f("ix_replica_usage_deployment_id"), "replica_usage", ["deployment_id"], unique=False
    )
    op.create_index(op.f("ix_replica_usage_node_id"), "replica_usage", ["node_id"], unique=False)
    for table, key, parent in ROLLUPS:
        op.create_table(
            table,
            sa.Column(key, postgresql.UUID(as_uuid=True), nullable=False),
            sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
            sa.Column("samples", sa.Integer(), nullable=False),
            sa.Column("cpu_millicores_sum", sa.BigInteger(), nullable=False),
            sa.Column("cpu_millicores_max", sa.Integer(), nullable=False),
            sa.Column("memory_mb_sum", sa.BigInteger(), nullable=False),
            sa.Column("memory_mb_max", sa.Integer(), nullable=False),
            sa.CheckConstraint("samples > 0", name=op.f(f"ck_{table}_samples_positive")),
            sa.ForeignKeyConstraint(
                [key], [f"{parent}.id"], name=op.f(f"fk_{table}_{key}_{parent}"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint(key, "hour", name=op.f(f"pk_{table}")),
        )


def downgrade() -> None:
    for table, _, _ in ROLLUPS:
        op.drop_table(table)
    op.drop_index(op.f("ix_replica_usage_node_id"), table_name="replica_usage")
    op.drop_index(op.f("ix_replica_usage_deployment_id"), table_name="replica_usage")
    op.drop_table("replica_usage")
