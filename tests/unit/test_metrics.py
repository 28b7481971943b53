"""The metrics as Prometheus reads them: names, labels and values after known work.

A real registry and prometheus-client's own parser read back what a scrape would see, so the
names that dashboards depend on (controller-runtime's and client-go's) are checked as text.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from controller.operator.metrics import CONTROLLER, ELECTION, METRICS, Metrics, set_leader
from controller.operator.workqueue import WorkQueue


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """One sample's value."""
    return samples[(metric, tuple(sorted(labels.items())))]


async def test_the_work_queue_reports_client_go_metrics() -> None:
    metrics, clock = Metrics(), Clock()
    queue: WorkQueue[str] = WorkQueue(metrics.queue(clock))
    queue.add("a")
    queue.add("a")  # de-duplicated: one add, as client-go counts
    queue.add("b")
    clock.now += 2.0
    assert await queue.get() == "a"
    clock.now += 0.5
    samples = scrape(metrics)
    name = {"name": CONTROLLER}
    assert value(samples, "workqueue_adds_total", **name) == 2
    assert value(samples, "workqueue_depth", **name) == 1  # "b" waits
    assert value(samples, "workqueue_queue_duration_seconds_count", **name) == 1
    assert value(samples, "workqueue_queue_duration_seconds_sum", **name) == 2.0
    assert value(samples, "workqueue_longest_running_processor_seconds", **name) == 0.5
    queue.done("a")
    queue.retry("a", delay=0)
    samples = scrape(metrics)
    assert value(samples, "workqueue_work_duration_seconds_sum", **name) == 0.5
    assert value(samples, "workqueue_longest_running_processor_seconds", **name) == 0
    assert value(samples, "workqueue_retries_total", **name) == 1
    assert value(samples, "workqueue_adds_total", **name) == 3


def test_watch_events_are_counted_by_type_and_a_listed_object_is_listed() -> None:
    metrics = Metrics()
    for event_type in (None, None, "ADDED", "MODIFIED", "DELETED", None):
        metrics.watched(event_type)
    samples = scrape(metrics)
    assert value(samples, "fog_watch_events_total", type="listed") == 3
    for kind in ("added", "modified", "deleted"):
        assert value(samples, "fog_watch_events_total", type=kind) == 1


def test_reconciles_are_counted_by_result_and_timed() -> None:
    metrics = Metrics()
    metrics.reconciled("success", 0.01)
    metrics.reconciled("error", 0.2)
    metrics.reconciled("success", 0.03)
    samples = scrape(metrics)
    ctl = {"controller": CONTROLLER}
    assert value(samples, "controller_runtime_reconcile_total", result="success", **ctl) == 2
    assert value(samples, "controller_runtime_reconcile_total", result="error", **ctl) == 1
    assert value(samples, "controller_runtime_reconcile_errors_total", **ctl) == 1
    assert value(samples, "controller_runtime_reconcile_time_seconds_count", **ctl) == 3


def test_counts_give_every_status_a_series_and_an_emptied_one_reads_zero() -> None:
    metrics = Metrics()
    metrics.counted(replicas={"running": 3, "pending": 1}, nodes={"online": 2})
    metrics.counted(replicas={"running": 4}, nodes={"online": 1, "offline": 1})
    samples = scrape(metrics)
    assert value(samples, "fog_replicas", status="running") == 4
    assert value(samples, "fog_replicas", status="pending") == 0
    assert value(samples, "fog_replicas", status="failed") == 0
    assert value(samples, "fog_nodes", status="offline") == 1


def test_without_an_election_this_process_leads() -> None:
    samples = scrape(Metrics())
    assert value(samples, "leader_election_master_status", name=ELECTION) == 1
    assert not any(name.endswith("_created") for name, _ in samples)


def test_an_election_keeps_one_series_its_own_and_says_who_leads() -> None:
    try:
        set_leader(False, name="my-lease")
        assert scrape(METRICS)[("leader_election_master_status", (("name", "my-lease"),))] == 0
        set_leader(True, name="my-lease")
        samples = scrape(METRICS)
        assert value(samples, "leader_election_master_status", name="my-lease") == 1
        assert [key for key in samples if key[0] == "leader_election_master_status"] == [
            ("leader_election_master_status", (("name", "my-lease"),))
        ]
    finally:
        set_leader(True)  # the process-wide default again: no election, leading
