"""Replica health: what the agent's health check last said, since when, and its history.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27

Issue 16 item 1: a running replica is healthy or unhealthy as its agent reports (the agent runs
`spec.healthCheck` and decides after `failureThreshold` failures), and Ready counts only the
replicas healthy for at least `spec.minReadySeconds`.

* `deployments.health_check`: `spec.healthCheck` in the CRD's own words (NULL: none), which
  the agents' assignments carry (controller/db/reports.py).
* `deployment_replicas.health` (enum `replicahealth`, NULL until the first report: no check,
  or none run yet), `health_reason` (the agent's words) and `health_since` (when the health
  last changed, stamped by the report's write with the same clock as `started_at`): the facts
  the status computation needs to count a replica as available, and to know when it will be.
* `replica_status_history.old_health` / `new_health`: `fog_record_replica_transition` now also
  writes a row when only the health changes (status unchanged, the health's reason as reason),
  so `fogctl history` shows every health transition beside the status ones, and again no
  code path can change either without leaving its row.
* `deployment_replicas_notify_health`: a health change wakes the deployment's reconcile, as a
  reported status change does (the same `fog_notify_replica_change`), so Ready moves and an
  unhealthy replica is replaced without waiting for a resync.
* `fog_count_failures` also counts a replica the operator stops because it is unhealthy (status
  `stopping`, reason `Unhealthy`): it goes through `stopping`, not `failed`, because its
  container still runs and holds its node's capacity until the agent has stopped it, yet it
  counts toward the crash backoff as a failed start does.

Downgrade restores the 0001 history function and trigger and the 0002 failure trigger, and
drops the columns (the health rows of the history lose their health, and stay as rows whose
status did not change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

HEALTH = postgresql.ENUM("healthy", "unhealthy", name="replicahealth", create_type=False)

# A migration keeps its own copy of the SQL: it must not change when later code does. The
# reasons are restarts.NODE_LOST and restarts.UNHEALTHY as they are spelled today.
RECORD_SQL = """
CREATE OR REPLACE FUNCTION fog_record_replica_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status
       AND NEW.health IS NOT DISTINCT FROM OLD.health THEN
        RETURN NULL;
    END IF;
    INSERT INTO replica_status_history
        (replica_id, deployment_id, old_status, new_status, old_health, new_health,
         node_id, actor, reason)
    VALUES (NEW.id, NEW.deployment_id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.health END, NEW.health,
            NEW.node_id, NEW.status_actor,
            CASE WHEN TG_OP = 'UPDATE' AND NEW.status = OLD.status
                 THEN NEW.health_reason ELSE NEW.status_reason END);
    RETURN NULL;
END
$$;

DROP TRIGGER deployment_replicas_record_transition ON deployment_replicas;
CREATE TRIGGER deployment_replicas_record_transition
AFTER INSERT OR UPDATE OF status, health ON deployment_replicas
FOR EACH ROW EXECUTE FUNCTION fog_record_replica_transition();

CREATE TRIGGER deployment_replicas_notify_health
AFTER UPDATE OF health ON deployment_replicas
FOR EACH ROW
WHEN (OLD.health IS DISTINCT FROM NEW.health)
EXECUTE FUNCTION fog_notify_replica_change();

DROP TRIGGER deployment_replicas_count_failures ON deployment_replicas;
CREATE TRIGGER deployment_replicas_count_failures
AFTER UPDATE OF status ON deployment_replicas
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND ((NEW.status = 'failed' AND NEW.status_reason IS DISTINCT FROM 'NodeLost')
           OR (NEW.status = 'stopping' AND NEW.status_reason = 'Unhealthy')))
EXECUTE FUNCTION fog_count_failures();
"""

# What 0001 and 0002 created, written back by the downgrade.
RESTORE_SQL = """
DROP TRIGGER deployment_replicas_count_failures ON deployment_replicas;
CREATE TRIGGER deployment_replicas_count_failures
AFTER UPDATE OF status ON deployment_replicas
FOR EACH ROW
WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM NEW.status
      AND NEW.status_reason IS DISTINCT FROM 'NodeLost')
EXECUTE FUNCTION fog_count_failures();

DROP TRIGGER deployment_replicas_notify_health ON deployment_replicas;

DROP TRIGGER deployment_replicas_record_transition ON deployment_replicas;
CREATE TRIGGER deployment_replicas_record_transition
AFTER INSERT OR UPDATE OF status ON deployment_replicas
FOR EACH ROW EXECUTE FUNCTION fog_record_replica_transition();

CREATE OR REPLACE FUNCTION fog_record_replica_transition() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""


def upgrade() -> None:
    HEALTH.create(op.get_bind(), checkfirst=False)
    op.add_column("deployments", sa.Column("health_check", postgresql.JSONB(), nullable=True))
    op.add_column("deployment_replicas", sa.Column("health", HEALTH, nullable=True))
    op.add_column("deployment_replicas", sa.Column("health_reason", sa.Text(), nullable=True))
    op.add_column(
        "deployment_replicas",
        sa.Column("health_since", sa.DateTime(timezone=True), nullable=True),
    )
    # Added to the partitioned parent, PostgreSQL adds them to every month's partition.
    op.add_column("replica_status_history", sa.Column("old_health", HEALTH, nullable=True))
    op.add_column("replica_status_history", sa.Column("new_health", HEALTH, nullable=True))
    op.execute(RECORD_SQL)


def downgrade() -> None:
    op.execute(RESTORE_SQL)
    for column in ("new_health", "old_health"):
        op.drop_column("replica_status_history", column)
    for column in ("health_since", "health_reason", "health"):
        op.drop_column("deployment_replicas", column)
    op.drop_column("deployments", "health_check")
    HEALTH.drop(op.get_bind(), checkfirst=False)
