"""Revisions: every distinct template a deployment has run, numbered, for history and undo.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27

Issue 16 item 2. A row per distinct template (image, resources, container spec, health check,
node selector) of a deployment: its number (1, 2, ... per deployment, as Kubernetes numbers a
Deployment's ReplicaSets), the hash replicas carry (`deployment_replicas.revision`), the
template in the CRD's own words (what `fogctl rollout undo` writes back into the spec), when
and by whom (the Kubernetes field manager) it was created, and when its rollout completed
(every desired replica of it available: "the last fully healthy revision" of issue 16 item 5).
Rows go with their deployment (ON DELETE CASCADE, as the other child tables).

The upgrade also:

* relabels the current revision of deployments that have a node selector. The revision hash
  now covers a non-empty node selector (controller/model/revision.py), so their hash changes;
  without the relabel the first reconcile after the upgrade would roll every one of their
  replicas although nothing they run changed. The replicas of the current revision and the
  deployment row get the new hash here, computed by the same function the operator uses.
  Deployments without a selector hash as before and are not touched.
* backfills the revisions: the current template of each deployment (from its row), and every
  other hash its live replicas still carry (a rollout in progress), numbered in the order
  their first replica was created, the current one last. Those older templates were never
  stored, so their `template` is NULL: they are listed, but `rollout undo` to them says so.

Downgrade drops the table. The relabelled hashes stay: the previous code computes the old
hash for a deployment with a node selector, so its replicas roll once after a downgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from controller.model.resources import Resources
from controller.model.revision import Template

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Statuses of a replica that still runs or will (the capacity-holding ones, migration 0001):
# an older revision they carry is one a rollout has not finished replacing.
LIVE = "('pending', 'starting', 'running', 'stopping')"

_DEPLOYMENTS = sa.text(
    "SELECT d.id, d.revision, d.container_image, d.container_spec, d.node_selector,"
    " r.cpu_cores, r.memory_mb, r.gpu_units, r.storage_gb"
    " FROM deployments d JOIN deployment_resources r ON r.deployment_id = d.id"
)


def _current_templates() -> list[dict[str, object]]:
    """Each deployment's current template and hash, relabelled if the hash changed."""
    bind = op.get_bind()
    rows = []
    for row in bind.execute(_DEPLOYMENTS):
        request = Resources.from_cores(
            cpu_cores=row.cpu_cores,
            memory_mb=row.memory_mb,
            gpu_units=row.gpu_units,
            storage_gb=row.storage_gb,
        )
        template = Template(
            image=row.container_image,
            request=request,
            container_spec=row.container_spec,
            node_selector=row.node_selector,
        )
        new = template.revision
        if new != row.revision:
            bind.execute(
                sa.text(
                    "UPDATE deployment_replicas SET revision = :new"
                    " WHERE deployment_id = :id AND revision = :old"
                ),
                {"new": new, "old": row.revision, "id": row.id},
            )
            bind.execute(
                sa.text("UPDATE deployments SET revision = :new WHERE id = :id"),
                {"new": new, "id": row.id},
            )
        rows.append({"id": row.id, "hash": new, "template": template.as_spec()})
    return rows


def upgrade() -> None:
    op.create_table(
        "deployment_revisions",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("deployment_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("template", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("number >= 1", name=op.f("ck_deployment_revisions_number_positive")),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_revisions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_revisions")),
        sa.UniqueConstraint(
            "deployment_id", "hash", name=op.f("uq_deployment_revisions_deployment_id_hash")
        ),
        sa.UniqueConstraint(
            "deployment_id", "number", name=op.f("uq_deployment_revisions_deployment_id_number")
        ),
    )
    current = _current_templates()
    bind = op.get_bind()
    # Older hashes still carried by live replicas, numbered by their first replica's creation.
    bind.execute(
        sa.text(
            "INSERT INTO deployment_revisions (deployment_id, number, hash, created_at)"
            " SELECT r.deployment_id,"
            "  row_number() OVER ("
            "   PARTITION BY r.deployment_id ORDER BY min(r.created_at), r.revision),"
            "  r.revision, min(r.created_at)"
            " FROM deployment_replicas r JOIN deployments d ON d.id = r.deployment_id"
            f" WHERE r.status IN {LIVE} AND r.revision <> d.revision"
            " GROUP BY r.deployment_id, r.revision"
        )
    )
    # The current template, numbered after them; created when the row last changed.
    for row in current:
        bind.execute(
            sa.text(
                "INSERT INTO deployment_revisions"
                " (deployment_id, number, hash, template, created_at)"
                " SELECT CAST(:id AS uuid), coalesce(max(number), 0) + 1, :hash,"
                "  CAST(:template AS jsonb), (SELECT updated_at FROM deployments WHERE id = :id)"
                " FROM deployment_revisions WHERE deployment_id = :id"
            ).bindparams(sa.bindparam("template", type_=postgresql.JSONB)),
            row,
        )


def downgrade() -> None:
    op.drop_table("deployment_revisions")
