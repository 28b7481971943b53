"""`fogctl history NS/NAME` reads indexes only: a deployment found by name, its rows from the index.

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-27

Issue 15 item 6 asks for `fogctl history` under 10 ms (p99) at 100 million history rows. Measured
at that size before this migration (bench/history.py): p50 62.7 ms, p99 105.7 ms. Three costs,
gone here (docs/design/capacity-and-history.md has the figures after):

* **Finding the deployment.** The history is of every deployment of that name, deleted ones too,
  and the only index on `deployments.name` is the unique one of live deployments
  (`WHERE deleted_at IS NULL`), which such a query cannot use: each of the two statements read
  every deployment of the namespace through `(user_id, deleted_at)` and filtered on the name,
  490,000 rows each in the benchmark. `ix_deployments_user_id_name` on `(user_id, name)`, deleted
  rows included, makes it one index descent.
* **A deployment's rows.** Each monthly partition's `(deployment_id, changed_at)` index gave the
  rows' places, then every row was a random read of the table (history is written in time
  order, so a deployment's rows lie one per page among everyone else's). The index now also
  carries (INCLUDE) every column `fogctl history` returns, so each partition is an index-only
  scan: a deployment's rows of a month are next to each other in one or two leaf pages.
  Index-only scans skip the table only for pages the visibility map marks all-visible, which
  vacuum sets: autovacuum vacuums a partition after inserts of 20% of its rows
  (`autovacuum_vacuum_insert_scale_factor`), so closed months are all-visible and only the
  current month's newest pages are read from the table. The health columns (migration 0012)
  are included so that showing them keeps the scans index-only.
* **The replicas' names.** A replica is shown by its ordinal (`web-3`), which the history rows
  do not carry: the query looked each row's replica up by primary key, 200 probes of a table of
  20 million replicas for the benchmark's 204 rows, each a random read once cold. Now the
  deployment's replicas are read once through `(deployment_id, ordinal)`, which also carries
  the replica's id (INCLUDE), index-only: the leaf pages of one deployment's replicas, however
  scattered its rows are in the table (replicas are created over the deployment's life).

What the upgrade costs on a big table: it builds the new index on every partition of both
history tables (one sort per partition; the benchmark's 100 million rows took 110 s for all
six history indexes) and on `deployment_replicas`, each under a SHARE lock, so placements and
status changes (whose triggers write history) wait for the builds; `fogctl history` can read
meanwhile, until the old indexes are dropped at the end. The history's covering index is
larger than the one it replaces: 0.85 times its partition's size instead of 0.31 (the
benchmark's replica history), so the history's indexes and tables together grow by about 30%.
A large installation can build the history's first without blocking writes (per partition
`CREATE INDEX CONCURRENTLY`, then `ALTER INDEX ... ATTACH PARTITION` to an index created
`ON ONLY` the parent) and run `VACUUM` after, so that the old partitions' visibility maps are
set before the first read.

Downgrade puts the indexes back as they were and drops the name index.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

# Each index replaced: (table, name, unique, key columns, the columns it now carries). The
# history's carry what controller/db/history.py selects; the replicas' the replica's id, which
# the history rows name, beside its ordinal, which `fogctl history` shows.
REPLACED = [
    (
        "deployment_status_history",
        "ix_deployment_status_history_deployment_id_changed_at",
        "",
        "deployment_id, changed_at",
        "old_status, new_status, actor, reason",
    ),
    (
        "replica_status_history",
        "ix_replica_status_history_deployment_id_changed_at",
        "",
        "deployment_id, changed_at",
        "replica_id, node_id, old_status, new_status, old_health, new_health, actor, reason",
    ),
    (
        "deployment_replicas",
        "uq_deployment_replicas_deployment_id_ordinal",
        "UNIQUE ",
        "deployment_id, ordinal",
        "id",
    ),
]
NAME_INDEX = "ix_deployments_user_id_name"
# The name the new index wears until the one it replaces is dropped.
NEW = "_new"


def _replace(table: str, name: str, unique: str, key: str, include: str) -> None:
    """Build the new index beside the old one, then drop the old one and take its name.

    Built first, dropped last: readers keep the old index while the new one is built, and the
    ACCESS EXCLUSIVE lock of the drop lasts from the drop to the commit, not the whole build.
    The unique index keeps its uniqueness throughout: the old one holds until the new one does.
    """
    op.execute(f"CREATE {unique}INDEX {name}{NEW} ON {table} ({key}){include}")
    op.execute(f"DROP INDEX {name}")
    op.execute(f"ALTER INDEX {name}{NEW} RENAME TO {name}")


def upgrade() -> None:
    op.create_index(NAME_INDEX, "deployments", ["user_id", "name"])
    for table, name, unique, key, columns in REPLACED:
        _replace(table, name, unique, key, f" INCLUDE ({columns})")


def downgrade() -> None:
    for table, name, unique, key, _ in REPLACED:
        _replace(table, name, unique, key, "")
    op.drop_index(NAME_INDEX, table_name="deployments")
