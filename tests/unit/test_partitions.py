"""History partitions: months, names, what to create, what a retention drops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.model.partitions import (
    HISTORY_TABLES,
    MONTHS_AHEAD,
    Month,
    Partition,
    expired,
    wanted,
)

NOV = Month(2026, 11)


def test_a_month_starts_at_midnight_utc_on_the_first() -> None:
    assert Month.of(datetime(2026, 12, 1, tzinfo=UTC)) == Month(2026, 12)
    assert Month.of(datetime(2026, 12, 1, tzinfo=UTC) - timedelta(microseconds=1)) == NOV
    assert NOV.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert NOV.end == datetime(2026, 12, 1, tzinfo=UTC)


def test_the_month_of_a_moment_is_its_utc_month() -> None:
    """01:00 on 1 December in UTC+2 is still November in UTC: partitions follow the database."""
    plus_two = timezone(timedelta(hours=2))
    assert Month.of(datetime(2026, 12, 1, 1, 0, tzinfo=plus_two)) == NOV


def test_a_moment_without_a_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Month.of(datetime(2026, 11, 27))  # naive on purpose


def test_months_cross_year_ends_both_ways() -> None:
    assert Month(2026, 12).plus(1) == Month(2027, 1)
    assert Month(2027, 1).plus(-1) == Month(2026, 12)
    assert NOV.plus(14) == Month(2028, 1)
    assert Month(2026, 12).end == datetime(2027, 1, 1, tzinfo=UTC)


@given(
    st.integers(min_value=2000, max_value=2100),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=-240, max_value=240),
)
def test_moving_by_months_is_reversible_and_contiguous(year: int, month: int, by: int) -> None:
    start = Month(year, month)
    moved = start.plus(by)
    assert moved.plus(-by) == start
    assert moved.end == moved.plus(1).start  # no gap and no overlap between partitions
    assert (moved > start) == (by > 0)


def test_partition_names_round_trip() -> None:
    partition = Partition("replica_status_history", Month(2027, 3))
    assert partition.name == "replica_status_history_p2027_03"
    assert Partition.parse(partition.name) == partition


@pytest.mark.parametrize(
    "name",
    [
        "replica_status_history",  # the parent
        "quota_history_p2026_11",  # not a partitioned table of ours
        "replica_status_history_p2026_13",  # no such month
        "replica_status_history_p2026_11_old",
        "archive_2001",
    ],
)
def test_names_we_did_not_give_are_not_partitions_of_ours(name: str) -> None:
    assert Partition.parse(name) is None


def test_wanted_is_this_month_and_the_months_ahead_for_each_table() -> None:
    now = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    found = wanted(now)
    assert len(found) == len(HISTORY_TABLES) * (MONTHS_AHEAD + 1)
    assert {p.month for p in found} == {NOV, Month(2026, 12), Month(2027, 1), Month(2027, 2)}
    assert {p.table for p in found} == set(HISTORY_TABLES)


def _names(*months: Month) -> list[str]:
    return [Partition(table, m).name for table in HISTORY_TABLES for m in months]


def test_retention_drops_a_month_only_once_it_has_wholly_aged_out() -> None:
    months = [NOV.plus(-back) for back in range(6)]  # June to November
    retention = timedelta(days=90)
    # The cut-off is exactly the end of July: July goes (its last row is 90 days old), August
    # stays although most of its rows are older than 90 days.
    now = Month(2026, 8).start + retention
    dropped = expired(_names(*months), now, retention)
    assert {p.month for p in dropped} == {Month(2026, 6), Month(2026, 7)}
    assert len(dropped) == 2 * len(HISTORY_TABLES)
    just_before = expired(_names(*months), now - timedelta(microseconds=1), retention)
    assert {p.month for p in just_before} == {Month(2026, 6)}


def test_retention_ignores_names_we_did_not_give_and_never_drops_this_month() -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    names = ["archive_2001", *_names(NOV, NOV.plus(1))]
    assert expired(names, now, timedelta(seconds=1)) == []


def test_a_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        expired([], datetime(2026, 11, 27, tzinfo=UTC), timedelta(0))
