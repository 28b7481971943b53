"""Status conditions in the shape of Kubernetes' metav1.Condition.

Tools such as `kubectl wait` and kstatus-based deployers read conditions, and they expect
metav1's rules: reasons are CamelCase tokens, lastTransitionTime changes only when the
status flips. Honouring the second rule also makes an unchanged status patch a no-op.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# The validation pattern of metav1.Condition.reason in the Kubernetes API.
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
REASON_MAX = 1024  # metav1.Condition.reason maxLength; the API server rejects longer ones
MESSAGE_MAX = 32768  # metav1.Condition.message maxLength


class ConditionType(StrEnum):
    """The condition types a FogDeployment reports (kstatus vocabulary, Ready, Progressing)."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    # A Deployment's: whether a rollout moves (model/progress.py), outside condition_set.
    PROGRESSING = "Progressing"


# The three of which exactly one is True, as kstatus reads them.
KSTATUS_TYPES = (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED)


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition; as_dict() gives the metav1.Condition JSON shape.

    status None is Unknown. last_update_time is a Deployment condition's field, set only on
    Progressing (the time of the last progress, model/progress.py).
    """

    type: ConditionType
    status: bool | None
    reason: str
    message: str
    observed_generation: int
    last_transition_time: str
    last_update_time: str | None = None

    def __post_init__(self) -> None:
        if len(self.reason) > REASON_MAX or not REASON_PATTERN.fullmatch(self.reason):
            raise ValueError(f"condition reason {self.reason!r} is not a CamelCase token")
        if len(self.message.splitlines()) > 1 or len(self.message) > MESSAGE_MAX:
            raise ValueError(f"condition message must be one line of <= {MESSAGE_MAX} characters")

    def as_dict(self) -> dict[str, Any]:
        """The condition as it appears in .status.conditions."""
        shown = {
            "type": str(self.type),
            "status": _wire_status(self.status),
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": self.last_transition_time,
        }
        if self.last_update_time is not None:
            shown["lastUpdateTime"] = self.last_update_time
        return shown


def _wire_status(status: bool | None) -> str:
    if status is None:
        return "Unknown"
    return "True" if status else "False"


def rfc3339(*, moment: datetime) -> str:
    """Format an aware datetime as metav1.Time does: UTC, whole seconds, `Z` suffix."""
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str) -> str:
    """Collapse all whitespace runs (newlines included) into single spaces."""
    return " ".join(text.split())


def make_condition(
    *,
    type_: ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> Condition:
    """Build a condition, keeping the previous lastTransitionTime if its status is unchanged."""
    prior = next((c for c in previous if c.get("type") == type_), None)
    since = None
    if prior is not None and prior.get("status") == _wire_status(status):
        since = prior.get("lastTransitionTime")
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=_one_line(message)[:MESSAGE_MAX],
        observed_generation=generation,
        last_transition_time=since if isinstance(since, str) else rfc3339(moment=now),
    )


def condition_set(
    *,
    verdict: ConditionType,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> tuple[Condition, ...]:
    """Ready, Reconciling and Stalled with exactly one True (`verdict`), sharing one reason.

    kstatus reads the one True condition; the other two say False with the same reason so
    that `kubectl describe` tells one story.
    """
    return tuple(
        make_condition(
            type_=type_,
            status=verdict is type_,
            reason=reason,
            message=message,
            generation=generation,
            previous=previous,
            now=now,
        )
        for type_ in KSTATUS_TYPES
    )
