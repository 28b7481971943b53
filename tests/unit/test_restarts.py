"""The restart policy: how long a failed replica's replacement waits, and when to give up."""

from datetime import UTC, datetime, timedelta

import pytest

from controller.model.restarts import CRASH_LOOP, RestartDecision, RestartPolicy, decide

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
S = timedelta(seconds=1)
REV = "a" * 64


def decided(
    failures: int,
    last: datetime | None,
    now: datetime,
    policy: RestartPolicy,
    *,
    counted: str | None = REV,
) -> RestartDecision:
    """The decision for replicas of REV, the count kept for `counted`."""
    return decide(
        failures=failures,
        last_failure_at=last,
        counted_revision=counted,
        revision=REV,
        now=now,
        policy=policy,
    )


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(-1, 0), (0, 0), (1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 300), (64, 300)],
)
def test_default_delays_double_from_five_seconds_up_to_five_minutes(
    failures: int, seconds: int
) -> None:
    assert RestartPolicy().delay(failures) == seconds * S


def test_a_custom_policy_caps_at_its_own_maximum() -> None:
    policy = RestartPolicy(base_delay=200 * S / 1000, max_delay=S, failure_limit=3)
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(10**6) == S  # no overflow for a very long crash loop


def test_no_failure_holds_nothing() -> None:
    for failures, last in ((0, None), (0, T0), (3, None)):
        assert decided(failures, last, T0, RestartPolicy()) == RestartDecision(
            hold_until=None, stalled_reason=None
        )


def test_replacement_waits_until_the_delay_has_passed() -> None:
    policy = RestartPolicy()
    early = decided(2, T0, T0 + 9 * S, policy)
    assert early.hold_until == T0 + 10 * S
    assert early.holds(T0 + 9 * S)
    assert not early.holds(T0 + 10 * S)  # the end of the hold is exclusive
    assert early.stalled_reason is None
    due = decided(2, T0, T0 + 10 * S, policy)
    assert due == RestartDecision(hold_until=None, stalled_reason=None)


def test_stalled_from_the_failure_limit_on_even_after_the_wait() -> None:
    policy = RestartPolicy(failure_limit=5)
    below = decided(4, T0, T0 + 3600 * S, policy)
    assert below.stalled_reason is None
    at = decided(5, T0, T0 + S, policy)
    assert (at.hold_until, at.stalled_reason) == (T0 + 80 * S, CRASH_LOOP)
    later = decided(9, T0, T0 + 3600 * S, policy)
    assert (later.hold_until, later.stalled_reason) == (None, CRASH_LOOP)
    assert CRASH_LOOP == "CrashLoopBackOff"


def test_a_new_revision_starts_with_a_clean_slate() -> None:
    policy = RestartPolicy(failure_limit=5)
    old = decided(9, T0, T0 + S, policy, counted="b" * 64)
    assert old == RestartDecision(hold_until=None, stalled_reason=None)
    assert not old.holds(T0 + S)
    # The same count kept for the revision to run holds and stalls: the revision is the cause.
    same = decided(9, T0, T0 + S, policy)
    assert (same.hold_until, same.stalled_reason) == (T0 + 300 * S, CRASH_LOOP)
