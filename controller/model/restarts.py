"""When failed replicas may be replaced, and when a deployment has failed for good.

Replacing a crashing replica at once turns a bad image into a hot loop of placements, so the
replacement waits `base * 2^(failures-1)` after the last failure, capped at `max_delay`, like
Nomad's exponential reschedule policy (30 s up to 1 h there; shorter here so a demo shows
it). After `failure_limit` consecutive failures the deployment is Stalled (phase Failed) until a
replica runs again. A replica lost with its node is not counted: the node failed, not the
replica. A replica replaced because its health check failed (model/health.py) counts, as a
failed start does: a broken image that starts but never answers loops the same way.

The count belongs to one revision. A new revision (a fixed image, say) starts with a clean
slate: no inherited backoff and no inherited Stalled verdict, so its replicas are placed at once
and a GitOps tool that checks the fixing commit sees it progress, not fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Reasons written with failures, and read by the failure count (see migration 0002).
NODE_LOST = "NodeLost"
CRASH_LOOP = "CrashLoopBackOff"
# The operator stops a replica its agent reports unhealthy with this reason; the failure count
# counts that stop as a failure (migration 0012), as a failed start is one.
UNHEALTHY = "Unhealthy"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between replacements of failed replicas, and when to give up."""

    # 5 s first, doubling: a crash loop is visible within a minute of a demo.
    base_delay: timedelta = timedelta(seconds=5)
    # 5 min at most between attempts: a fix is picked up within minutes.
    max_delay: timedelta = timedelta(minutes=5)
    # Five failures in a row without the deployment becoming Ready: report Stalled.
    failure_limit: int = 5

    def delay(self, failures: int) -> timedelta:
        """The wait after the n-th consecutive failure (none before the first)."""
        if failures <= 0:
            return timedelta(0)
        exponent = min(failures - 1, 30)  # 2^30 x 5 s is past any cap; avoids huge numbers
        return min(self.max_delay, self.base_delay * (1 << exponent))


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Whether new replicas may be created now, and the stall reason if any."""

    hold_until: datetime | None
    stalled_reason: str | None

    def holds(self, now: datetime) -> bool:
        """Whether replacements must still wait."""
        return self.hold_until is not None and now < self.hold_until


def decide(
    *,
    failures: int,
    last_failure_at: datetime | None,
    counted_revision: str | None,
    revision: str,
    now: datetime,
    policy: RestartPolicy,
) -> RestartDecision:
    """Apply the policy to the failure count of `counted_revision`, for replicas of `revision`.

    A count kept for another revision than the one to run says nothing about it: no hold.
    """
    if counted_revision != revision or failures <= 0 or last_failure_at is None:
        return RestartDecision(hold_until=None, stalled_reason=None)
    until = last_failure_at + policy.delay(failures)
    return RestartDecision(
        hold_until=until if now < until else None,
        stalled_reason=CRASH_LOOP if failures >= policy.failure_limit else None,
    )
