"""How a FogDeployment rolls to a new revision: its rollout spec, read and resolved here alone.

`spec.strategy`, `spec.paused` and `spec.progressDeadlineSeconds` mean what they mean on a
Kubernetes Deployment, so that platform engineers' habits carry over: RollingUpdate with
maxSurge and maxUnavailable (integers or percentages of spec.replicas, 25% each when absent,
maxSurge rounded up and maxUnavailable down), or Recreate; a paused rollout; a deadline after
which a rollout that stopped moving is reported. The CRD sets no defaults (see its design
notes), so what "absent" means is decided here, in one place; canaries and the automatic
revert (issue 16 item 5, `spec.strategy.canary` and `spec.strategy.autoRevert`) are read here
too. The API server already refuses a bad rollout spec; `parse_rollout` checks again for
objects stored before the CRD knew these fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Kubernetes' Deployment defaults, so that a FogDeployment rolls as its users expect.
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
# An absolute maxSurge/maxUnavailable above spec.replicas' own maximum (100) means nothing more.
MAX_ABSOLUTE = 100
PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")
FIELD = "spec.strategy"


class RolloutType(StrEnum):
    """How replicas of an old revision are replaced; values are spelled as in the CRD."""

    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class RolloutSpecError(ValueError):
    """The rollout spec breaks a rule; the message names the field as the manifest does."""


IntOrPercent = int | str


def resolve(value: IntOrPercent, *, total: int, round_up: bool) -> int:
    """An integer, or a percentage of total rounded as Kubernetes rounds it."""
    if isinstance(value, int):
        return value
    percent = int(value.removesuffix("%"))
    scaled, remainder = divmod(percent * total, 100)
    return scaled + 1 if round_up and remainder else scaled


@dataclass(frozen=True, slots=True)
class Budget:
    """What a rolling step may do, resolved for one desired count.

    surge: how many replicas beyond the desired count may exist (active) at once;
    unavailable: how many of the desired count may be out of service at once.
    """

    surge: int
    unavailable: int

    def floor(self, desired: int) -> int:
        """The fewest available replicas a rolling step may leave."""
        return max(0, desired - self.unavailable)


@dataclass(frozen=True, slots=True)
class Rollout:
    """A FogDeployment's rollout spec with every absent field filled in."""

    type: RolloutType = RolloutType.ROLLING_UPDATE
    max_surge: IntOrPercent = DEFAULT_MAX_SURGE
    max_unavailable: IntOrPercent = DEFAULT_MAX_UNAVAILABLE
    paused: bool = False
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE_SECONDS
    # spec.strategy.canary.replicas (None: no canary), canary.autoPromote and autoRevert:
    # Nomad's canaries and auto_revert (model/canary.py decides what they do).
    canary_replicas: int | None = None
    auto_promote: bool = False
    auto_revert: bool = False

    @property
    def recreate(self) -> bool:
        """Whether every old-revision replica goes before any new one is created."""
        return self.type is RolloutType.RECREATE

    def budget(self, desired: int) -> Budget:
        """MaxSurge and maxUnavailable resolved against `desired`.

        When both resolve to 0 (percentages of a small count: 10% of 3) nothing could ever be
        replaced, so maxUnavailable becomes 1, as Kubernetes does. Recreate has no such
        fields: its budget (the defaults) only moves replicas off a drained node.
        """
        surge = resolve(self.max_surge, total=desired, round_up=True)
        unavailable = resolve(self.max_unavailable, total=desired, round_up=False)
        return Budget(surge=surge, unavailable=1 if surge == unavailable == 0 else unavailable)


DEFAULT_ROLLOUT = Rollout()
"""A spec that says nothing about its rollout: RollingUpdate, 25%/25%, not paused, 600 s."""


def _int_or_percent(value: Any, *, field: str) -> IntOrPercent:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RolloutSpecError(f"{field}: must be an integer or a percentage such as 25%")
    if isinstance(value, int) and not 0 <= value <= MAX_ABSOLUTE:
        raise RolloutSpecError(f"{field}: must be 0 to {MAX_ABSOLUTE}")
    if isinstance(value, str) and not PERCENT.fullmatch(value):
        raise RolloutSpecError(f"{field}: must be a percentage of 0% to 100%, such as 25%")
    return value


def _is_zero(value: IntOrPercent) -> bool:
    return value in (0, "0%")


def _canary(canary: Any, *, type_: RolloutType) -> tuple[int | None, bool]:
    """(canary.replicas or None, canary.autoPromote) of spec.strategy.canary."""
    if canary is None:
        return None, False
    field = f"{FIELD}.canary"
    if not isinstance(canary, Mapping):
        raise RolloutSpecError(f"{field}: must be an object")
    if type_ is RolloutType.RECREATE:
        raise RolloutSpecError(f"{field}: may be set only with type RollingUpdate")
    replicas = canary.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise RolloutSpecError(f"{field}.replicas: must be an integer of at least 1")
    auto_promote = canary.get("autoPromote", False)
    if not isinstance(auto_promote, bool):
        raise RolloutSpecError(f"{field}.autoPromote: must be true or false")
    return replicas, auto_promote


def parse_rollout(spec: Mapping[str, Any]) -> Rollout:
    """The rollout fields of a FogDeployment spec; RolloutSpecError naming the field if bad."""
    strategy = spec.get("strategy") or {}
    if not isinstance(strategy, Mapping):
        raise RolloutSpecError(f"{FIELD}: must be an object")
    try:
        type_ = RolloutType(strategy.get("type", RolloutType.ROLLING_UPDATE))
    except ValueError:
        raise RolloutSpecError(f"{FIELD}.type: must be RollingUpdate or Recreate") from None
    rolling = strategy.get("rollingUpdate")
    if rolling is not None and type_ is RolloutType.RECREATE:
        raise RolloutSpecError(f"{FIELD}.rollingUpdate: may be set only with type RollingUpdate")
    rolling = rolling or {}
    surge = _int_or_percent(
        rolling.get("maxSurge", DEFAULT_MAX_SURGE), field=f"{FIELD}.rollingUpdate.maxSurge"
    )
    unavailable = _int_or_percent(
        rolling.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE),
        field=f"{FIELD}.rollingUpdate.maxUnavailable",
    )
    if _is_zero(surge) and _is_zero(unavailable):
        raise RolloutSpecError(
            f"{FIELD}.rollingUpdate.maxUnavailable: must not be 0 when maxSurge is 0"
        )
    canary, auto_promote = _canary(strategy.get("canary"), type_=type_)
    auto_revert = strategy.get("autoRevert", False)
    if not isinstance(auto_revert, bool):
        raise RolloutSpecError(f"{FIELD}.autoRevert: must be true or false")
    paused = spec.get("paused", False)
    if not isinstance(paused, bool):
        raise RolloutSpecError("spec.paused: must be true or false")
    deadline = spec.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    if isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 1:
        raise RolloutSpecError("spec.progressDeadlineSeconds: must be an integer of at least 1")
    return Rollout(
        type=type_,
        max_surge=surge,
        max_unavailable=unavailable,
        paused=paused,
        progress_deadline_seconds=deadline,
        canary_replicas=canary,
        auto_promote=auto_promote,
        auto_revert=auto_revert,
    )
