"""When a replica that waited without a node was given one: `deployment_replicas.assigned_at`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27

A replica holds capacity from the moment it has a node (the allocation trigger of 0001). One
created with a node has that moment in its first history row. One created without a node
(no room, or over quota) gets it later in an UPDATE that changes no status, so the history
has no row then, and `fogctl cost` could only start charging at the agent's `starting` report.
A BEFORE trigger stamps the moment, with the same clock as the history rows
(clock_timestamp()), for every writer, in the statement that assigns the node; the history's
rule "one row per status change" stays as it was.

Rows migrated from before have no stamp (NULL): their cost starts at their first history row
that names a node, as before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
CREATE FUNCTION fog_stamp_assignment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.assigned_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER deployment_replicas_stamp_assignment
BEFORE UPDATE OF node_id ON deployment_replicas
FOR EACH ROW
WHEN (OLD.node_id IS NULL AND NEW.node_id IS NOT NULL)
EXECUTE FUNCTION fog_stamp_assignment();
"""

DOWNGRADE_SQL = """
DROP TRIGGER IF EXISTS deployment_replicas_stamp_assignment ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_stamp_assignment();
"""


def upgrade() -> None:
    op.add_column(
        "deployment_replicas",
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.drop_column("deployment_replicas", "assigned_at")
