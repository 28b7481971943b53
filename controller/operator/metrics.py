"""Prometheus metrics of the operator, named as controller-runtime and client-go name theirs.

Dashboards and alerts written for controller-runtime operators (reconcile rate and errors,
work-queue depth and latency, leader status) work unchanged on ours, because where a metric
means the same thing it has the same name, labels and unit:

* `controller_runtime_reconcile_total{controller,result}` (result: success, error,
  requeue_after), `controller_runtime_reconcile_errors_total{controller}`,
  `controller_runtime_reconcile_time_seconds{controller}` (a batch's keys share one transaction:
  each key observes the batch's time divided among its keys, so that the sum is the workers'
  busy time, not up to 32 times it);
* client-go's work-queue metrics, `workqueue_*{name}`: depth, adds, queue and work duration,
  retries, longest running processor, unfinished work;
* `leader_election_master_status{name}`: 1 while this process leads (always 1 without election).

Ours, prefixed `fog_`: replicas and nodes by status (`fog_replicas`, `fog_nodes`, refreshed by
the health loop, see health.py), placement failures by reason, the database round trip, and the
time from an agent's report reaching the operator to the object's status saying so, the keys
a worker took in one batch (`fog_reconcile_batch_keys`: how much batching shares), the
history partitions a retention dropped (`fog_history_partitions_dropped_total{table}`), and the
FogDeployment events kopf's watch handed over by type (`fog_watch_events_total{type}`; `listed`
for its listing, which at a restart goes on after the first pass: the start is over when it
reaches the object count).

prometheus-client's `python_gc_*{generation}`: the cycle collector's runs and what they found,
as controller-runtime operators export Go's `go_gc_*` (garbage.py says why the operator tunes
it, and these show whether full collections come back).

One process-wide instance (`METRICS`), as prometheus-client's own default registry is, so that
code without a handle on the runtime (leader election) can set its gauge; tests make their own
`Metrics()` with a registry of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.model.nodes import NodeStatus
from controller.model.states import ReplicaStatus

K = TypeVar("K", bound=Hashable)

# The controller label of the reconcile metrics and the name label of the work queue's.
CONTROLLER = "fogdeployment"
# The Lease name of leader election (the lead's --leader-election-id default).
ELECTION = "fog-controller"
# controller-runtime's reconcile-time buckets: 5 ms to 60 s, finer where reconciles fall.
RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
    15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
)  # fmt: skip
# client-go's work-queue buckets: 10 ns to 10 s in powers of ten (exponential(1e-8, 10, 10)).
QUEUE_BUCKETS = tuple(1e-8 * 10**power for power in range(10))
# A database round trip on a healthy network is 0.1-10 ms; beyond a second it is an outage.
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# An agent's report reaches status in well under a second (README); the long tail is a
# reconcile that waited for a database retry or a busy queue.
REPORT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Keys per batch, 1 to controller.BATCH (32): every size up to 4, where a batch saves little
# and where the burst's batches were thought to be (docs/design/performance.md), then halfway
# steps between powers of two.
BATCH_KEY_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

# Reconcile results, controller-runtime's label values.
SUCCESS = "success"
ERROR = "error"
REQUEUE_AFTER = "requeue_after"


class QueueMetrics(Generic[K]):
    """client-go's queue metrics for one queue: the work queue calls these as it moves keys.

    Like client-go's defaultQueueMetrics, it remembers when each key was added (for the
    queue duration) and when each started processing (for the work duration and the longest
    running processor).
    """

    def __init__(self, metrics: Metrics, name: str, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._depth = metrics.workqueue_depth.labels(name=name)
        self._adds = metrics.workqueue_adds.labels(name=name)
        self._queue_duration = metrics.workqueue_queue_duration.labels(name=name)
        self._work_duration = metrics.workqueue_work_duration.labels(name=name)
        self._retries = metrics.workqueue_retries.labels(name=name)
        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}
        metrics.workqueue_longest_running.labels(name=name).set_function(self._longest_running)
        metrics.workqueue_unfinished_work.labels(name=name).set_function(self._unfinished_work)

    def add(self, key: K) -> None:
        """`key` became dirty (queued, or to be queued once its worker is done)."""
        self._adds.inc()
        self._depth.inc()
        self._added_at.setdefault(key, self._clock())

    def get(self, key: K) -> None:
        """A worker took `key`."""
        now = self._clock()
        self._depth.dec()
        added = self._added_at.pop(key, None)
        if added is not None:
            self._queue_duration.observe(now - added)
        self._started_at[key] = now

    def done(self, key: K) -> None:
        """The worker is done with `key`."""
        started = self._started_at.pop(key, None)
        if started is not None:
            self._work_duration.observe(self._clock() - started)

    def retry(self) -> None:
        """A key was added again after a failure."""
        self._retries.inc()

    def _longest_running(self) -> float:
        if not self._started_at:
            return 0.0
        return self._clock() - min(self._started_at.values())

    def _unfinished_work(self) -> float:
        now = self._clock()
        return sum(now - started for started in self._started_at.values())


class Metrics:
    """Every metric of the operator, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series beside every counter and histogram: controller-runtime exports
        # none, and they double the scrape for nothing a dashboard uses.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r
        )
        self.workqueue_adds = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=r,
        )
        self.workqueue_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            ["name"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue", ["name"],
            registry=r,
        )  # fmt: skip
        self.workqueue_longest_running = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            ["name"],
            registry=r,
        )
        self.workqueue_unfinished_work = Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress",
            ["name"],
            registry=r,
        )
        self.leader = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
            "backup, 1 indicates master",
            ["name"],
            registry=r,
        )
        # No election running means this process is the only one, so it leads.
        self.leader.labels(name=ELECTION).set(1)
        self.replicas = Gauge(
            "fog_replicas",
            "Replicas of live FogDeployments by status (stopped ones of deleted objects excluded)",
            ["status"],
            registry=r,
        )
        self.nodes = Gauge("fog_nodes", "Fog nodes by status", ["status"], registry=r)
        self.placement_failures = Counter(
            "fog_placement_failures_total",
            "Replicas a reconcile could not place, by the condition reason it reported",
            ["reason"],
            registry=r,
        )
        self.database_round_trip = Histogram(
            "fog_database_round_trip_seconds",
            "Round trip of a trivial query to PostgreSQL (the health loop's)",
            buckets=ROUND_TRIP_BUCKETS,
            registry=r,
        )
        self.report_to_status = Histogram(
            "fog_report_to_status_seconds",
            "From an agent's report reaching the operator (its notification) to the object's "
            "status reflecting it",
            buckets=REPORT_BUCKETS,
            registry=r,
        )
        self.batch_keys = Histogram(
            "fog_reconcile_batch_keys",
            "Keys a worker took from the work queue at once and reconciled as one batch",
            buckets=BATCH_KEY_BUCKETS,
            registry=r,
        )
        self.history_partitions_dropped = Counter(
            "fog_history_partitions_dropped_total",
            "Monthly history partitions dropped whole because every row was older than "
            "--history-retention",
            ["table"],
            registry=r,
        )
        self.watch_events = Counter(
            "fog_watch_events_total",
            "FogDeployment events kopf's watch handed to the operator, by type (listed: its "
            "listing, at start or after a watch it could not resume)",
            ["type"],
            registry=r,
        )
        prometheus_client.GCCollector(registry=r)

    def queue(self, clock: Callable[[], float] = time.monotonic) -> QueueMetrics[K]:
        """The work-queue metrics of the controller's queue."""
        return QueueMetrics(self, CONTROLLER, clock)

    def reconciled(self, result: str, seconds: float) -> None:
        """One reconcile ended with `result` after `seconds`."""
        self.reconcile_total.labels(controller=CONTROLLER, result=result).inc()
        if result == ERROR:
            self.reconcile_errors.labels(controller=CONTROLLER).inc()
        self.reconcile_time.labels(controller=CONTROLLER).observe(seconds)

    def watched(self, event_type: str | None) -> None:
        """Count one event kopf's watch handed over; its type None is a listed object."""
        self.watch_events.labels(type=(event_type or "listed").lower()).inc()

    def batched(self, keys: int) -> None:
        """A worker took `keys` keys from the queue as one batch."""
        self.batch_keys.observe(keys)

    def counted(self, *, replicas: Mapping[str, int], nodes: Mapping[str, int]) -> None:
        """Set the replica and node gauges from one count.

        Every status has a series, 0 when none is counted, so that a status that emptied
        reads 0 rather than keeping its last value, and `absent()` alerts are not needed.
        """
        for status in ReplicaStatus:
            self.replicas.labels(status=status.value).set(replicas.get(status.value, 0))
        for node_status in NodeStatus:
            self.nodes.labels(status=node_status.value).set(nodes.get(node_status.value, 0))

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return prometheus_client.generate_latest(self.registry)


METRICS = Metrics()


def set_leader(is_leader: bool, *, name: str = ELECTION) -> None:
    """Leader election says whether this process now holds the Lease `name`.

    The gauge keeps one series, this election's: the default one (1, no election) goes.
    """
    METRICS.leader.clear()
    METRICS.leader.labels(name=name).set(1 if is_leader else 0)
