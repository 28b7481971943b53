"""The two history tables become range-partitioned by month on `changed_at`, every row kept.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

Every status change is kept, about five rows per replica lifetime: a fleet that replaces a
million replicas a day adds five million rows a day (issue 15). One table of billions of rows
makes every index deeper and a retention a DELETE of millions of rows; partitions by month keep
each index the size of one month and let a retention drop a month whole (controller/model/
partitions.py says why a month, controller/db/partitions.py creates and drops them).

What changes, for `deployment_status_history` and `replica_status_history` alike:

* the table is rebuilt as `PARTITION BY RANGE (changed_at)` with the same columns, defaults,
  foreign keys (ON DELETE CASCADE to deployments and replicas, SET NULL for the seed's
  `changed_by` user) and indexes, which PostgreSQL creates on every partition;
* the primary key becomes `(id, changed_at)`: a partitioned table's unique keys must contain
  the partition key. `id` stays a random UUID, unique on its own in practice;
* partitions are created from the month of the oldest row (at least last month, so a row moved
  back in time stays in range) to three months ahead, then every row is copied over;
* no DEFAULT partition: a row for a month without a partition would land there, and from then
  on creating that month's partition fails until the row is moved out by hand (and each
  creation scans the default partition under lock). Without one, months are created ahead
  (here and hourly by the operator), and a missing month is an error at once, not later.

The triggers that write history (`fog_record_*_transition`, migrations 0001 and 0004) name the
table, which PostgreSQL resolves when they run, so they write into the new table unchanged.

Downgrade rebuilds plain tables with the original primary key `(id)` and copies every row back.
Both directions hold an exclusive lock on each history table while its rows are copied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controller.db.partitions import create_statement
from controller.model.partitions import MONTHS_AHEAD, Month, Partition

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Each history table's secondary indexes (name, columns), as migration 0001 made them.
INDEXES = {
    "deployment_status_history": [
        ("ix_deployment_status_history_deployment_id_changed_at", "deployment_id, changed_at"),
        ("ix_deployment_status_history_changed_by", "changed_by"),
    ],
    "replica_status_history": [
        ("ix_replica_status_history_deployment_id_changed_at", "deployment_id, changed_at"),
        ("ix_replica_status_history_replica_id", "replica_id"),
    ],
}
# The suffix the table being replaced wears while its rows are copied.
OLD = "_old"
# A table's foreign keys, name and definition ("FOREIGN KEY (...) REFERENCES ... ON DELETE ...").
_FOREIGN_KEYS = sa.text(
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = CAST(:table AS regclass) AND contype = 'f' ORDER BY conname"
)


def _rebuild(table: str, *, partitioned: bool) -> None:
    """Rebuild `table` (partitioned by month, or plain) with the same rows and definitions.

    Columns, types, NOT NULL and defaults come from the table itself (`LIKE ... INCLUDING
    DEFAULTS`), foreign keys with their ON DELETE rules from its catalogue, so nothing of the
    seed's definition is restated here and nothing can be lost in the restating.
    """
    old = table + OLD
    op.rename_table(table, old)
    for index in [f"pk_{table}", *(name for name, _ in INDEXES[table])]:
        op.execute(f'ALTER INDEX "{index}" RENAME TO "{index}{OLD}"')
    foreign_keys = op.get_bind().execute(_FOREIGN_KEYS, {"table": old}).all()
    key, partition_by = (
        ("id, changed_at", " PARTITION BY RANGE (changed_at)") if partitioned else ("id", "")
    )
    op.execute(
        f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS,"
        f" CONSTRAINT pk_{table} PRIMARY KEY ({key})){partition_by}"
    )
    if partitioned:
        _create_partitions(table)
    op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
    op.drop_table(old)
    # Indexes and foreign keys after the copy: one sort per index and one check per key
    # instead of an index insert and a key lookup per row.
    for name, columns in INDEXES[table]:
        op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
    for name, definition in foreign_keys:
        op.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def _create_partitions(table: str) -> None:
    """From the oldest row's month (at least last month) to MONTHS_AHEAD months ahead."""
    query = sa.text(f"SELECT min(changed_at), now() FROM {table}{OLD}")
    oldest, now = op.get_bind().execute(query).one()
    this = Month.of(now)
    month = this.plus(-1) if oldest is None else min(Month.of(oldest), this.plus(-1))
    while month <= this.plus(MONTHS_AHEAD):
        op.execute(create_statement(Partition(table, month)))
        month = month.plus(1)


def upgrade() -> None:
    for table in INDEXES:
        _rebuild(table, partitioned=True)


def downgrade() -> None:
    for table in INDEXES:
        _rebuild(table, partitioned=False)
