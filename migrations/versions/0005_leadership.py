"""Leadership epochs: a deposed leader's late writes roll back instead of committing.

Revision ID: 0005_leadership
Revises: 0004_failures_per_revision
Create Date: 2026-11-27

With `fogctl run --leader-elect` only the holder of a Kubernetes Lease reconciles. A Lease alone
is not a fence: a leader paused (a long GC, SIGSTOP, a VM migration) past its lease still
believes it leads when it wakes, and client-go's election does nothing to stop its writes. So
each election advances an epoch stored here, and every write transaction of the operator first
calls `fog_fence(epoch, election)`:

* it takes the election's advisory lock in shared mode, so a new leader's epoch advance (which
  takes it exclusively) waits for the transactions in flight and they finish under the old
  epoch, in order;
* then reads the epoch with a fresh snapshot (plpgsql runs each statement with a new one), and
  raises `fog: fenced` if it moved on: the whole transaction rolls back.

Shared advisory locks live in memory: no row lock, no WAL per reconcile.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_leadership"
down_revision = "0004_failures_per_revision"
branch_labels = None
depends_on = None

# The message a fenced transaction fails with; the db layer classifies it (errors.FENCED).
FENCED = "fog: fenced"

UPGRADE_SQL = f"""
CREATE FUNCTION fog_fence(expected bigint, election text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('fog-leadership/' || election, 0));
    SELECT epoch INTO current FROM leadership WHERE name = election;
    IF current IS DISTINCT FROM expected THEN
        RAISE EXCEPTION '{FENCED}: epoch % is over, % is current', expected, current
            USING ERRCODE = 'P0001';
    END IF;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "leadership",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=253), nullable=False),
        sa.Column(
            "acquired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name="pk_leadership"),
    )
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS fog_fence(bigint, text)")
    op.drop_table("leadership")
