"""Wake the operator on agent reports; count replica failures per deployment.

Revision ID: 0002_wakeups_and_restarts
Revises: 0001_initial
Create Date: 2026-11-25

* `fog_notify_replica_change`: a replica status change made by anyone but the operator itself
  (an agent's report, the node-lifecycle check) sends `NOTIFY fog_deployment_changed` with the
  deployment id. PostgreSQL delivers it at commit and folds identical payloads of one
  transaction into one, so a batch of reports wakes each deployment's reconcile once.
* `deployments.consecutive_failures` / `last_failure_at`: kept by `fog_count_failures`
  when a replica fails (a lost node is not the replica's fault and does not count), and reset
  by the operator when the deployment is Ready again. The restart backoff reads them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_wakeups_and_restarts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# The reason the node-lifecycle check gives replicas of a node that went silent.
NODE_LOST = "NodeLost"

UPGRADE_SQL = f"""
CREATE FUNCTION fog_notify_replica_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fog_deployment_changed', NEW.deployment_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_notify
AFTER UPDATE OF status ON deployment_replicas
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status_actor IS DISTINCT FROM 'operator')
EXECUTE FUNCTION fog_notify_replica_change();

CREATE FUNCTION fog_count_failures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE deployments
       SET consecutive_failures = consecutive_failures + 1,
           last_failure_at = now()
     WHERE id = NEW.deployment_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_replicas_count_failures
AFTER UPDATE OF status ON deployment_replicas
FOR EACH ROW
WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status_reason IS DISTINCT FROM '{NODE_LOST}')
EXECUTE FUNCTION fog_count_failures();
"""

DOWNGRADE_SQL = """
DROP TRIGGER IF EXISTS deployment_replicas_count_failures ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_count_failures();
DROP TRIGGER IF EXISTS deployment_replicas_notify ON deployment_replicas;
DROP FUNCTION IF EXISTS fog_notify_replica_change();
"""


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "deployments", sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
    op.drop_column("deployments", "last_failure_at")
    op.drop_column("deployments", "consecutive_failures")
