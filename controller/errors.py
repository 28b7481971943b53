"""What a failure means, in one place: retry it later, or wait until the input changes.

Every error the project raises on purpose is one of two kinds, and its kind is all the
controller needs to decide what to do with the work that failed (controller.operator.controller
maps it to a queue action):

* `RetryableError`: the world may fix it (a database outage, an API server restart, a write
  that lost a race). The work is retried with backoff; an adapter may suggest a delay.
* `TerminalError`: retrying the same input gives the same answer (a spec that breaks the seed's
  limits, a database at an unknown schema revision, a bad URL). The work waits until its input
  changes; a person is told in one line.

Adapters translate their own library's errors into these at their edge: the db layer its
driver's, the kube layer the API client's, so no caller above them imports a driver to find
out whether a failure is worth retrying (kopf's TemporaryError(delay) / PermanentError and
controller-runtime's TerminalError draw the same line). Anything else that escapes is a bug.
"""

from __future__ import annotations


class FogError(RuntimeError):
    """Base of every error we raise on purpose; the message is one line a person can act on."""


class RetryableError(FogError):
    """Trying again later may succeed; `delay` is the raiser's suggestion, if it has one."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class TerminalError(FogError):
    """Trying the same input again cannot succeed: wait until the input changes."""
