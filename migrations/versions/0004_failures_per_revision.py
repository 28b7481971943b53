"""Replica failures count against their own revision only.

Revision ID: 0004_failures_per_revision
Revises: 0003_node_leases
Create Date: 2026-11-27

A crash loop fixed by a new image stayed Failed for minutes: the failures of the broken
revision's replicas carried over to the new one, and its replicas waited for the old backoff.
The count now belongs to the deployment's current revision: the operator resets it when it
writes a new revision (db/deployments.py), and `fog_count_failures` no longer counts a replica
of another revision (an old replica that fails during the rollout says nothing about the new
image). Downgrade restores the 0002 function.
"""

from __future__ import annotations

from alembic import op

revision = "0004_failures_per_revision"
down_revision = "0003_node_leases"
branch_labels = None
depends_on = None

# The 0002 function with one more condition; downgrade writes it back without it. (A migration
# keeps its own copy of the SQL: it must not change when later code does.)
COUNT_FAILURES_SQL = """
CREATE OR REPLACE FUNCTION fog_count_failures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE deployments
       SET consecutive_failures = consecutive_failures + 1,
           last_failure_at = now()
     WHERE id = NEW.deployment_id{condition};
    RETURN NULL;
END
$$;
"""
UPGRADE_SQL = COUNT_FAILURES_SQL.format(condition=" AND revision = NEW.revision")
DOWNGRADE_SQL = COUNT_FAILURES_SQL.format(condition="")


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
