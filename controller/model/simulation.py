"""The simulated agent's decisions: what a node would report next, with no I/O.

Real agents pull images and start containers; the simulated one moves each assigned replica
along the happy path (`pending -> starting -> running`, `stopping -> stopped`) after a
configurable start delay. Where its assignments come from and where its reports go (the agent
API for `fogctl agent simulate`, the protocol functions in-process for database tests) is the
caller's business, so the same decisions are tested once and run everywhere.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from controller.model.protocol import Assignment, HealthReport, Report, UsageSample
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.usage import simulated_usage

logger = logging.getLogger(__name__)

# The happy path's order: a list read before one of our own reports was accepted may show a
# replica one step behind what we know; that replica keeps the status we reported.
_PROGRESS = {ReplicaStatus.PENDING: 0, ReplicaStatus.STARTING: 1, ReplicaStatus.RUNNING: 2}
_FINISHED = frozenset({ReplicaStatus.STOPPED, ReplicaStatus.FAILED})
# How long an agent trusts its own accepted report over a list from the server: a list is read
# and pushed within milliseconds, so one arriving more than this after our report was read after
# it, and says what the database holds.
TRUST_OWN_REPORT_SECONDS = 2.0
# How often each running replica's usage is sampled: metrics-server's default resolution
# (`--metric-resolution=60s`), what `kubectl top` users are used to. The 5,000-node fleet of the
# benchmark (a few replicas a node) then costs one batch of a few thousand samples a minute, a
# few hundred rows a second for the database; the 50,000-object scale test (500,000 replicas)
# about 8,000. A replica is sampled as soon as it runs too, so `fogctl top` shows it at once.
DEFAULT_USAGE_SECONDS = 60.0


def container_id(replica_id: uuid.UUID) -> str:
    """A stable fake container id, shaped like a runtime's (64 hex digits)."""
    return hashlib.sha256(replica_id.bytes).hexdigest()


@dataclass
class Simulator:
    """The agent's memory between rounds: the replicas it runs and when each began starting.

    `fail_image` (a glob) makes replicas of matching images fail instead of running, for
    demos and tests of the restart backoff; `fail_health` (a glob) makes those of matching
    images run but fail every health check. Running replicas are sampled every
    `usage_seconds` (simulated_usage says what they use).
    """

    start_delay: float
    fail_image: str | None = None
    fail_health: str | None = None
    usage_seconds: float = DEFAULT_USAGE_SECONDS
    clock: Callable[[], float] = time.monotonic
    started: dict[uuid.UUID, float] = field(default_factory=dict)
    orphans_stopped: list[uuid.UUID] = field(default_factory=list)
    # When each running replica was last sampled, and how many times (the sample round).
    sampled: dict[uuid.UUID, tuple[float, int]] = field(default_factory=dict)
    # When each running replica's health was last checked, and its failures in a row since
    # its last success.
    checked: dict[uuid.UUID, tuple[float, int]] = field(default_factory=dict)

    def health(self, work: Sequence[Assignment]) -> list[HealthReport]:
        """Run the health checks due now, virtually, and report the verdicts that changed.

        A check is due every `periodSeconds` of the replica's healthCheck, the first at once
        when it runs. It passes unless the image matches `fail_health`; `failureThreshold`
        failures in a row make the replica unhealthy, one pass makes it healthy, as a
        Kubernetes probe decides. A verdict is reported when it differs from the health the
        server's list shows (an agent restarted mid-way reports again what still holds).
        """
        now = self.clock()
        due: list[HealthReport] = []
        running = set()
        for item in work:
            check = item.health_check
            if item.status is not ReplicaStatus.RUNNING or check is None:
                continue
            running.add(item.replica_id)
            last, failures = self.checked.get(item.replica_id, (None, 0))
            if last is not None and now - last < check.period_seconds:
                continue
            failing = bool(self.fail_health) and fnmatch.fnmatchcase(
                item.image, str(self.fail_health)
            )
            failures = failures + 1 if failing else 0
            self.checked[item.replica_id] = (now, failures)
            if not failing:
                verdict, reason = ReplicaHealth.HEALTHY, f"{check.kind} check passed"
            elif failures >= check.failure_threshold:
                verdict = ReplicaHealth.UNHEALTHY
                reason = f"{check.kind} check failed {failures} times in a row"
            else:
                continue  # failing, but not yet failureThreshold times: no verdict yet
            if verdict != item.health:
                due.append(HealthReport(item.node, item.replica_id, verdict, reason))
        for gone in self.checked.keys() - running:
            del self.checked[gone]
        return due

    def usage(self, work: Sequence[Assignment]) -> list[UsageSample]:
        """The usage samples due now: running replicas never sampled or sampled long enough ago.

        One list for every node played, so an agent sends it as one batch: the API load grows
        with the sampling rate, not with the number of nodes.
        """
        now = self.clock()
        due: list[UsageSample] = []
        running = set()
        for item in work:
            if item.status is not ReplicaStatus.RUNNING or item.request is None:
                continue
            running.add(item.replica_id)
            last, round_ = self.sampled.get(item.replica_id, (None, 0))
            if last is not None and now - last < self.usage_seconds:
                continue
            self.sampled[item.replica_id] = (now, round_ + 1)
            usage = simulated_usage(item.replica_id, item.request, round_)
            due.append(UsageSample(node=item.node, replica_id=item.replica_id, usage=usage))
        for gone in self.sampled.keys() - running:
            del self.sampled[gone]
        return due

    def _outcome(self, item: Assignment) -> Report:
        if self.fail_image and fnmatch.fnmatchcase(item.image, self.fail_image):
            return self._report(item, ReplicaStatus.FAILED, "Error: exit code 1")
        return self._report(item, ReplicaStatus.RUNNING, "Started")

    def decide(self, work: Sequence[Assignment], *, complete: bool = True) -> list[list[Report]]:
        """The reports due now, in rounds: a replica moves at most one step per round.

        With no start delay a placed replica goes pending -> starting -> running in one tick:
        two rounds, because a replica may change only once per batch of reports. Orphans are
        looked for only when `work` is the `complete` list, running replicas included.
        """
        now = self.clock()
        first: list[Report] = []
        second: list[Report] = []
        for item in work:
            if item.status is ReplicaStatus.PENDING:
                self.started[item.replica_id] = now
                first.append(self._report(item, ReplicaStatus.STARTING, "Starting"))
                if self.start_delay <= 0:
                    second.append(self._outcome(item))
            elif item.status is ReplicaStatus.STARTING:
                began = self.started.setdefault(item.replica_id, now)
                if now - began >= self.start_delay:
                    first.append(self._outcome(item))
            elif item.status is ReplicaStatus.RUNNING:
                # Adopt what runs here already (an agent restarted while replicas ran).
                self.started.setdefault(item.replica_id, now)
            elif item.status is ReplicaStatus.STOPPING:
                first.append(self._report(item, ReplicaStatus.STOPPED, "Stopped"))
        if complete:
            self._stop_orphans({item.replica_id for item in work})
        return [batch for batch in (first, second) if batch]

    def _stop_orphans(self, assigned: set[uuid.UUID]) -> None:
        """Stop what runs here but is no longer assigned here.

        That is a replica failed as NodeLost while this agent was silent (and replaced
        elsewhere) or one that stopped: running it on would run it twice.
        """
        for replica_id in self.started.keys() - assigned:
            del self.started[replica_id]
            self.orphans_stopped.append(replica_id)
            logger.info("stopped replica %s: no longer assigned to this agent", replica_id)

    @staticmethod
    def _report(item: Assignment, status: ReplicaStatus, reason: str) -> Report:
        return Report(
            node=item.node,
            replica_id=item.replica_id,
            status=status,
            reason=reason,
            container_id=container_id(item.replica_id),
        )


@dataclass
class NodeView:
    """What an agent knows a node should run: the last list the server sent, and our reports since.

    The server sends a node's complete list whenever someone else changes it (a placement, a
    stop, a lost node) and never echoes our own reports, so an accepted report is applied here.
    A list read just before one of our reports was committed may arrive just after it: for
    TRUST_OWN_REPORT_SECONDS after a report, a replica such a list shows one step behind keeps
    the status we reported, and one we finished stays gone. After that the server's list wins:
    an accepted report can still be lost (a database crash with asynchronous commit), and the
    agent must then report again rather than believe itself for ever.
    """

    clock: Callable[[], float] = time.monotonic
    items: dict[uuid.UUID, Assignment] = field(default_factory=dict)
    # Our accepted reports still trusted over the server's lists: status and when reported.
    reported: dict[uuid.UUID, tuple[ReplicaStatus, float]] = field(default_factory=dict)

    def receive(self, items: Iterable[Assignment]) -> bool:
        """Replace the list with one the server sent; whether what the node runs changed.

        Many lists change nothing: every list comes again after a refusal's refresh, and a
        node's after our own reports, which are already applied here.
        """
        now = self.clock()
        self.reported = {
            key: (status, at)
            for key, (status, at) in self.reported.items()
            if now - at < TRUST_OWN_REPORT_SECONDS
        }
        fresh: dict[uuid.UUID, Assignment] = {}
        for item in items:
            ours = self.reported.get(item.replica_id)
            if ours is not None:
                if ours[0] in _FINISHED:
                    continue
                if _PROGRESS.get(ours[0], -1) > _PROGRESS.get(item.status, 3):
                    item = replace(item, status=ours[0])
            fresh[item.replica_id] = item
        changed = fresh != self.items
        self.items = fresh
        return changed

    def health_accepted(self, reports: Iterable[HealthReport]) -> None:
        """Apply our health reports the server accepted to the replicas of this node.

        The server pushes no list for a health change, so without this the agent would report
        the same verdict again at every check until the next refresh.
        """
        for report in reports:
            item = self.items.get(report.replica_id)
            if item is not None:
                self.items[report.replica_id] = replace(item, health=report.health)

    def accepted(self, reports: Iterable[Report]) -> None:
        """Apply our reports the server accepted."""
        now = self.clock()
        for report in reports:
            self.reported[report.replica_id] = (report.status, now)
            if report.status in _FINISHED:
                self.items.pop(report.replica_id, None)
                continue
            item = self.items.get(report.replica_id)
            if item is not None:
                self.items[report.replica_id] = replace(item, status=report.status)
