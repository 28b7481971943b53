"""Failpoints: make a supervised loop of a running operator raise, to prove supervision works.

The fault suite (RELIABILITY.md) must show that an unexpected exception in any loop is survived
and that the operator still does its work afterwards (a node still goes offline on time). An
exception is injected where every loop reports progress (`Progress.beat`), that is, in the
middle of the loop, after a unit of work: the hardest moment to recover from, since the loop
holds state (a notification connection, a batch of ids). Like etcd's gofail or CockroachDB's
testing knobs, it is off unless asked for:

    FOG_FAILPOINTS="node-lifecycle=2@5,worker-*=1"

arms the node check to fail at its first two progress reports 5 s after start, and each worker
at its first. Names are the supervised tasks' names (shell-style patterns allowed); `=N` is how
many times (default 1), `@S` the seconds after start before it is armed (default 0).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from controller.errors import TerminalError

ENV_VAR = "FOG_FAILPOINTS"


class InjectedFaultError(RuntimeError):
    """Raised by an armed failpoint: an 'unexpected' error, on purpose."""


class FailpointSpecError(TerminalError):
    """The FOG_FAILPOINTS value does not parse."""


@dataclass(slots=True)
class Failpoint:
    """One task's armed fault: how many times more, and from when (supervisor clock)."""

    name: str
    remaining: int
    armed_at: float

    def hit(self, now: float) -> None:
        """Raise InjectedFaultError if armed and not used up."""
        if self.remaining > 0 and now >= self.armed_at:
            self.remaining -= 1
            raise InjectedFaultError(f"failpoint {self.name}: injected fault")


def parse(text: str) -> dict[str, tuple[int, float]]:
    """`pattern=N@S,...` -> {pattern: (N, S)}; FailpointSpecError naming the bad part."""
    found: dict[str, tuple[int, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        pattern, _, rest = part.partition("=")
        count_text, _, after_text = (rest or "1").partition("@")
        try:
            count, after = int(count_text), float(after_text or 0)
        except ValueError:
            raise FailpointSpecError(f"{ENV_VAR}: {part!r} is not NAME[=COUNT][@SECONDS]") from None
        if not pattern or count < 0 or after < 0:
            raise FailpointSpecError(f"{ENV_VAR}: {part!r} is not NAME[=COUNT][@SECONDS]")
        found[pattern] = (count, after)
    return found


def for_task(
    specs: Mapping[str, tuple[int, float]], name: str, *, started: float
) -> Failpoint | None:
    """The failpoint of task `name` (the first pattern that matches), if any."""
    for pattern, (count, after) in specs.items():
        if fnmatch.fnmatchcase(name, pattern):
            return Failpoint(name=name, remaining=count, armed_at=started + after)
    return None
