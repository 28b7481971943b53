"""Which monthly partitions the history tables need, and which a retention lets go.

The history tables (`deployment_status_history`, `replica_status_history`) are range-partitioned
on `changed_at`, one partition per calendar month in UTC (migration 0010). Why a month and not
a week: `fogctl history NS/NAME` reads a deployment's whole story, with no time bound, so each
query probes every partition's `(deployment_id, changed_at)` index once (and the planner
considers every partition). That cost grows with the number of partitions: 12 a year, not 52.
A month of a large fleet (a million replica lifetimes a day, five rows each) is about 150
million rows, which one B-tree descent (four or five pages) still reads in microseconds, while
weekly partitions would make the same query 4.3 times as many descents for no gain.

Everything here is date arithmetic on names and bounds, so that it can be tested without a
database: the SQL that creates, lists and drops partitions is in controller/db/partitions.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The partitioned tables, in the order their partitions are created and dropped.
HISTORY_TABLES = ("deployment_status_history", "replica_status_history")
# Months created ahead of the current one. Inserting a row whose month has no partition fails,
# and that row is written by the trigger of a status change, so the change itself would fail:
# three months let the operator be down (or the maintenance loop fail) for two full months
# before any write is refused. Partitions cost nothing while empty.
MONTHS_AHEAD = 3
# A partition's name: the table's, then `_p` and its month (`replica_status_history_p2026_11`).
_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})$")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month in UTC: one partition's range, [start, next month's start)."""

    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        """The month `moment` falls in, in UTC (naive datetimes are refused, not guessed)."""
        if moment.tzinfo is None:
            raise ValueError("a moment without a time zone has no month")
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month)

    def plus(self, months: int) -> Month:
        """The month `months` later (earlier when negative)."""
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        """The first instant of the month (inclusive lower bound of its partition)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (exclusive upper bound of its partition)."""
        return self.plus(1).start


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One month of one history table."""

    table: str
    month: Month

    @property
    def name(self) -> str:
        """The partition's table name, e.g. `replica_status_history_p2026_11`."""
        return f"{self.table}_p{self.month.year:04d}_{self.month.month:02d}"

    @classmethod
    def parse(cls, name: str) -> Partition | None:
        """The partition a table name stands for; None for a name we did not give.

        Retention only ever drops what this recognises, so a partition someone attached by
        hand under another name is never dropped by us.
        """
        match = _NAME.match(name)
        if match is None or match["table"] not in HISTORY_TABLES:
            return None
        month = int(match["month"])
        if not 1 <= month <= 12:
            return None
        return cls(match["table"], Month(int(match["year"]), month))


def wanted(now: datetime, *, ahead: int = MONTHS_AHEAD) -> list[Partition]:
    """The partitions that must exist at `now`: this month and `ahead` more, for each table."""
    this = Month.of(now)
    return [
        Partition(table, this.plus(offset))
        for table in HISTORY_TABLES
        for offset in range(ahead + 1)
    ]


def expired(existing: list[str], now: datetime, retention: timedelta) -> list[Partition]:
    """The partitions a retention drops: those whose every row is older than `now - retention`.

    A partition is dropped only when its whole range ends at or before the cut-off, so no row
    younger than the retention is ever lost; rows up to a month older than the retention stay
    until their whole month has aged out. Names we did not give are never chosen.
    """
    if retention <= timedelta(0):
        raise ValueError(f"a retention must be positive, got {retention}")
    cutoff = now - retention
    found = (Partition.parse(name) for name in existing)
    return sorted(p for p in found if p is not None and p.month.end <= cutoff)
