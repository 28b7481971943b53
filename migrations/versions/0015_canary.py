"""Canaries and automatic revert: a revision's promotion and abort, stored on its row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27

Issue 16 item 5. The operator never writes the spec, so what a rollout decided beyond it lives
on the revision row (controller/model/canary.py): `promoted_at`/`promoted_by` when the
canaries of the revision were promoted (by `fogctl rollout promote`, or by the operator for
`spec.strategy.canary.autoPromote`), `aborted_at`/`abort_reason` when `spec.strategy.autoRevert`
aborted its rollout. Both survive an operator restart; a revision that returns (renumbered as
the newest) starts afresh, as its completion does.

`deployment_revisions_notify_promotion` wakes the deployment's reconcile when someone other
than the operator promotes (the function the replica triggers use, migrations 0002 and 0012:
it notifies `fog_deployment_changed` with the row's deployment_id). The operator's own
promotion is written inside the reconcile that acts on it and needs no wake-up.

Downgrade drops the trigger and the columns: a rollout waiting for promotion then goes on at
once, as the previous code knows no canaries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE_SQL = """
CREATE TRIGGER deployment_revisions_notify_promotion
AFTER UPDATE OF promoted_at ON deployment_revisions
FOR EACH ROW
WHEN (OLD.promoted_at IS DISTINCT FROM NEW.promoted_at
      AND NEW.promoted_by IS DISTINCT FROM 'operator')
EXECUTE FUNCTION fog_notify_replica_change();
"""


def upgrade() -> None:
    op.add_column(
        "deployment_revisions", sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "deployment_revisions", sa.Column("promoted_by", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "deployment_revisions", sa.Column("aborted_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("deployment_revisions", sa.Column("abort_reason", sa.Text(), nullable=True))
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute("DROP TRIGGER deployment_revisions_notify_promotion ON deployment_revisions")
    for column in ("abort_reason", "aborted_at", "promoted_by", "promoted_at"):
        op.drop_column("deployment_revisions", column)
