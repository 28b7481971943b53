"""The controller's one outcome mapping, its workers' use of the queue, and the Syncer's status.

Fakes stand in for the reconciler and the API client: what is under test is the decision
logic between them (which queue action, which status, when a patch is sent), not their I/O,
which the db and kube suites test for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from controller.db.errors import DatabaseUnavailableError, WriteConflictError
from controller.errors import RetryableError
from controller.kube.client import KubeApiError
from controller.kube.resource import InvalidSpecError
from controller.model.events import Event, EventType
from controller.operator import logs
from controller.operator.controller import Action, Controller, Decision, decide
from controller.operator.metrics import CONTROLLER, Metrics
from controller.operator.objects import ObservedObjects
from controller.operator.reconciler import Outcome
from controller.operator.supervisor import Progress, Supervisor
from controller.operator.sync import FIRST_STATUS_HOLD_SECONDS, Syncer
from controller.operator.workqueue import WorkQueue

KEY = ("team-a", "web")
SPEC = {"image": "app:1", "replicas": 2, "resources": {"cpuCores": 1, "memoryMB": 512}}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({}, Decision(Action.DONE)),
        ({"requeue_after": 7.5}, Decision(Action.REQUEUE_AFTER, 7.5)),
        ({"error": InvalidSpecError("invalid spec: x")}, Decision(Action.WAIT_FOR_CHANGE)),
        ({"error": DatabaseUnavailableError("down")}, Decision(Action.RETRY)),
        ({"error": WriteConflictError("5 in a row")}, Decision(Action.RETRY)),
        ({"error": KubeApiError("throttled", delay=3.0)}, Decision(Action.RETRY, 3.0)),
        ({"error": KeyError("a bug")}, Decision(Action.RETRY)),
    ],
)
def test_decide_maps_each_result_to_one_queue_action(
    result: dict[str, Any], expected: Decision
) -> None:
    assert decide(**result) == expected


class FakeSyncer:
    """Returns or raises what the test says, and records what it was asked.

    `pause`: seconds a batch takes (its round trips); `bug`: raised by the whole batch.
    """

    def __init__(
        self, *results: float | Exception | None, pause: float = 0.0, bug: Exception | None = None
    ) -> None:
        self.results = list(results)
        self.pause, self.bug = pause, bug
        self.calls: list[tuple[tuple[str, str], float]] = []
        self.forgotten: list[tuple[str, str]] = []

    async def sync_many(
        self,
        keys: Sequence[tuple[str, str]],
        *,
        retry_delays: Sequence[float],
        on_result: Callable[[int, float | Exception | None], None],
    ) -> list[float | Exception | None]:
        self.calls += zip(keys, retry_delays, strict=True)
        await asyncio.sleep(self.pause)
        if self.bug is not None:
            raise self.bug
        results = [self.results.pop(0) for _ in keys]
        for index, result in enumerate(results):
            on_result(index, result)
        return results

    def forget(self, key: tuple[str, str]) -> None:
        self.forgotten.append(key)


async def test_retryable_failures_back_off_and_a_success_resets_the_count() -> None:
    syncer = FakeSyncer(
        DatabaseUnavailableError("down"), DatabaseUnavailableError("down"), None, None
    )
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(syncer=syncer, queue=queue)  # type: ignore[arg-type]
    assert (await controller.process(KEY)).action is Action.RETRY
    assert (await controller.process(KEY)).action is Action.RETRY
    assert queue.next_backoff(KEY) == 4.0  # two failures counted
    # The status message announces the delay the queue is about to choose.
    assert [delay for _, delay in syncer.calls] == [1.0, 2.0]
    assert (await controller.process(KEY)).action is Action.DONE
    assert queue.next_backoff(KEY) == 1.0
    queue.close()


async def test_each_key_of_a_batch_gets_its_own_decision() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    syncer = FakeSyncer(None, RetryableError("throttled"), 30.0)
    controller = Controller(syncer=syncer, queue=queue)  # type: ignore[arg-type]
    keys = [("team-a", "one"), ("team-a", "two"), ("team-b", "three")]
    for key in keys:
        queue.add(key)
    batch = await queue.get_batch(8)
    assert batch == keys
    assert [d.action for d in await controller.process_batch(batch)] == [
        Action.DONE,
        Action.RETRY,
        Action.REQUEUE_AFTER,
    ]
    assert syncer.calls == [(key, 1.0) for key in keys]  # each key's own next backoff


async def test_a_suggested_delay_is_used_for_the_retry() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(
        syncer=FakeSyncer(RetryableError("throttled", delay=0.01)),  # type: ignore[arg-type]
        queue=queue,
    )
    await controller.process(KEY)
    assert await asyncio.wait_for(queue.get(), timeout=2) == KEY


async def test_requeue_after_adds_the_key_back_later_and_counts_no_failure() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(syncer=FakeSyncer(0.01), queue=queue)  # type: ignore[arg-type]
    assert await controller.process(KEY) == Decision(Action.REQUEUE_AFTER, 0.01)
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), timeout=2) == KEY
    assert queue.next_backoff(KEY) == 1.0


async def test_an_invalid_spec_waits_for_a_change_and_a_bug_is_retried_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    syncer = FakeSyncer(InvalidSpecError("invalid spec: cpu"), ZeroDivisionError("bug"))
    controller = Controller(syncer=syncer, queue=queue)  # type: ignore[arg-type]
    assert (await controller.process(KEY)).action is Action.WAIT_FOR_CHANGE
    assert queue.next_backoff(KEY) == 1.0  # nothing scheduled, no failure counted
    assert (await controller.process(KEY)).action is Action.RETRY
    bug = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(bug) == 1
    assert bug[0].exc_info is not None
    assert any("waiting for a spec change" in r.getMessage() for r in caplog.records)
    queue.close()


async def test_a_worker_marks_the_key_done_even_when_the_sync_fails() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(
        syncer=FakeSyncer(DatabaseUnavailableError("down"), None),  # type: ignore[arg-type]
        queue=queue,
    )
    worker = asyncio.create_task(controller.work(Progress()))
    queue.add(KEY)
    for _ in range(20):
        await asyncio.sleep(0)
    queue.add(KEY)  # would never be handed out again if the failed key were not done
    for _ in range(20):
        await asyncio.sleep(0)
    worker.cancel()
    queue.close()
    assert len(controller.syncer.calls) == 2  # type: ignore[attr-defined]


async def test_the_workers_start_once_the_listener_is_listening() -> None:
    """A placement reconciled before LISTEN is in force may be reported unheard."""
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(syncer=FakeSyncer(None, None), queue=queue)  # type: ignore[arg-type]
    listening = asyncio.Event()
    controller.supervise(Supervisor(), workers=1, listening=listening)
    worker = asyncio.create_task(controller.work(Progress()))
    queue.add(KEY)
    for _ in range(20):
        await asyncio.sleep(0)
    assert controller.syncer.calls == []  # type: ignore[attr-defined]
    listening.set()
    for _ in range(20):
        await asyncio.sleep(0)
    worker.cancel()
    queue.close()
    assert len(controller.syncer.calls) == 1  # type: ignore[attr-defined]


# --- the Syncer: what reaches the status ----------------------------------------------------


class FakeKube:
    """Records status patches, and the events the Syncer hands to its recorder."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.patched: list[tuple[str, str]] = []
        self.events: list[str] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patches.append(status)
        self.patched.append((namespace, name))

    def record(self, ref: Any, event: Event) -> None:
        self.events.append(event.reason)


class FakeReconciler:
    """Gives the results the test says, in order; None from the batch sends a key alone."""

    def __init__(self, *results: Outcome | Exception | None) -> None:
        self.results = list(results)
        self.calls = 0

    async def reconcile_batch(self, requests: Sequence[Any]) -> list[Outcome | Exception | None]:
        self.calls += len(requests)
        return [self.results.pop(0) for _ in requests]

    async def reconcile_alone(self, request: Any) -> Outcome | Exception:
        result = self.results.pop(0)
        assert result is not None
        return result


def observed(spec: dict[str, Any], generation: int = 1) -> ObservedObjects:
    objects = ObservedObjects()
    body = {
        "metadata": {"namespace": KEY[0], "name": KEY[1], "uid": "u-1", "generation": generation},
        "spec": spec,
    }
    objects.observe(body, deleted=False)
    return objects


def syncer(objects: ObservedObjects, reconciler: FakeReconciler, kube: FakeKube) -> Syncer:
    return Syncer(
        reconciler=reconciler,  # type: ignore[arg-type]
        kube=kube,  # type: ignore[arg-type]
        objects=objects,
        events=kube,  # type: ignore[arg-type]
    )


def conditions(patch: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in patch["conditions"]}


async def test_an_invalid_spec_is_reported_stalled_and_never_reconciled() -> None:
    # Past the API server only (an object stored before a stricter CRD): the seed's limit.
    kube, reconciler = FakeKube(), FakeReconciler()
    bad = {**SPEC, "resources": {"cpuCores": 64, "memoryMB": 512}}
    sync = syncer(observed(bad, generation=3), reconciler, kube)
    with pytest.raises(InvalidSpecError, match="cpuCores"):
        await sync.sync(KEY)
    assert reconciler.calls == 0
    [patch] = kube.patches
    assert conditions(patch)["Stalled"] == ("True", "InvalidSpec")
    assert conditions(patch)["Ready"] == ("False", "InvalidSpec")
    stalled = next(c for c in patch["conditions"] if c["type"] == "Stalled")
    assert stalled["message"] == "spec.resources.cpuCores: must be at most 32"
    assert stalled["observedGeneration"] == 3
    # The spec was judged at this generation: the Ready and Phase columns say so.
    assert (patch["observedGeneration"], patch["phase"], patch["ready"]) == (3, "Failed", "0/2")
    # A warning for `kubectl describe`, once: the resync that finds it still broken is quiet.
    assert kube.events == ["InvalidSpec"]
    with pytest.raises(InvalidSpecError):
        await sync.sync(KEY)
    assert kube.events == ["InvalidSpec"]


async def test_an_outage_is_reported_with_the_retry_delay() -> None:
    kube = FakeKube()
    reconciler = FakeReconciler(DatabaseUnavailableError("connection refused"))
    with pytest.raises(DatabaseUnavailableError):
        await syncer(observed(SPEC), reconciler, kube).sync(KEY, retry_delay=8)
    [patch] = kube.patches
    assert conditions(patch)["Reconciling"] == ("True", "DatabaseUnavailable")
    assert kube.events == []  # an outage is retried, not a verdict: conditions only
    # The spec was not looked at: nothing claims this generation was observed.
    assert "observedGeneration" not in patch
    assert "phase" not in patch
    reconciling = next(c for c in patch["conditions"] if c["type"] == "Reconciling")
    assert reconciling["message"] == "connection refused; retrying in 8 s"


async def test_status_is_patched_only_when_it_changed() -> None:
    body = {"observedGeneration": 1, "phase": "Running", "ready": "2/2"}
    kube = FakeKube()
    reconciler = FakeReconciler(
        Outcome(status=body, events=(Event(EventType.NORMAL, "Ready", "2 of 2 running"),)),
        Outcome(status=dict(body), events=()),
        Outcome(status={**body, "phase": "Pending", "ready": "1/2"}, events=()),
    )
    sync = syncer(observed(SPEC), reconciler, kube)
    await sync.sync(KEY)
    await sync.sync(KEY)  # the same status again: no patch
    assert kube.patches == [body]
    assert kube.events == ["Ready"]
    await sync.sync(KEY)
    assert [p["phase"] for p in kube.patches] == ["Running", "Pending"]


async def test_a_deleted_object_is_not_synced() -> None:
    objects = observed(SPEC)
    objects.forget(KEY)
    kube, reconciler = FakeKube(), FakeReconciler()
    assert await syncer(objects, reconciler, kube).sync(KEY) is None
    assert (reconciler.calls, kube.patches) == (0, [])


SCHEDULED = {"observedGeneration": 1, "phase": "Scheduled", "ready": "0/2"}
RUNNING = {"observedGeneration": 1, "phase": "Running", "ready": "2/2"}


async def test_a_new_objects_first_status_waits_once_for_its_agents() -> None:
    """Issue 15: one status patch per new object where the agents report quickly."""
    kube = FakeKube()
    reconciler = FakeReconciler(
        Outcome(status=dict(SCHEDULED), events=()), Outcome(status=dict(RUNNING), events=())
    )
    sync = syncer(observed(SPEC), reconciler, kube)
    assert await sync.sync(KEY) == FIRST_STATUS_HOLD_SECONDS  # placed, waiting for agents
    assert kube.patches == []
    assert await sync.sync(KEY) is None  # the agents' report: one patch says it all
    assert kube.patches == [RUNNING]


async def test_a_held_first_status_is_written_by_the_next_reconcile_whatever_it_says() -> None:
    kube = FakeKube()
    reconciler = FakeReconciler(
        Outcome(status=dict(SCHEDULED), events=()), Outcome(status=dict(SCHEDULED), events=())
    )
    sync = syncer(observed(SPEC), reconciler, kube)
    assert await sync.sync(KEY) == FIRST_STATUS_HOLD_SECONDS
    assert await sync.sync(KEY) is None  # slow agents: the hold's requeue writes it
    assert kube.patches == [SCHEDULED]


@pytest.mark.parametrize("phase", ["Pending", "Running", "Failed", "Stopped"])
async def test_a_first_status_that_is_not_merely_scheduled_is_written_at_once(phase: str) -> None:
    kube = FakeKube()
    status = {**SCHEDULED, "phase": phase}
    sync = syncer(observed(SPEC), FakeReconciler(Outcome(status=status, events=())), kube)
    assert await sync.sync(KEY) is None
    assert kube.patches == [status]


async def test_an_object_that_has_a_status_is_never_held() -> None:
    kube = FakeKube()
    objects = ObservedObjects()
    body = {
        "metadata": {"namespace": KEY[0], "name": KEY[1], "uid": "u-1", "generation": 2},
        "spec": SPEC,
        "status": RUNNING,
    }
    objects.observe(body, deleted=False)
    scaled = {**SCHEDULED, "observedGeneration": 2}
    sync = syncer(objects, FakeReconciler(Outcome(status=scaled, events=())), kube)
    assert await sync.sync(KEY) is None
    assert kube.patches == [scaled]


async def test_a_reconcile_with_nothing_pending_cancels_an_earlier_delayed_add() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(syncer=FakeSyncer(30.0, None), queue=queue)  # type: ignore[arg-type]
    await controller.process(KEY)
    assert queue.pending_timers() == 1
    await controller.process(KEY)  # e.g. the agents' report came before the hold ended
    assert queue.pending_timers() == 0


async def test_a_batch_keeps_statuses_events_and_errors_per_object() -> None:
    objects = ObservedObjects()
    for name, spec in (
        ("good", SPEC),
        ("bad", {**SPEC, "resources": {"cpuCores": 64, "memoryMB": 512}}),
        ("down", SPEC),
    ):
        body = {
            "metadata": {"namespace": "team-a", "name": name, "uid": name, "generation": 1},
            "spec": spec,
        }
        objects.observe(body, deleted=False)
    kube = FakeKube()
    ready = {"observedGeneration": 1, "phase": "Running", "ready": "2/2"}
    reconciler = FakeReconciler(
        Outcome(status=ready, events=(Event(EventType.NORMAL, "Ready", "2 of 2"),)),
        DatabaseUnavailableError("connection refused"),
    )
    keys = [("team-a", "good"), ("team-a", "bad"), ("team-a", "gone"), ("team-a", "down")]
    results = await syncer(objects, reconciler, kube).sync_many(keys, retry_delays=[1, 2, 3, 4])

    assert results[0] is None
    assert isinstance(results[1], InvalidSpecError)
    assert results[2] is None  # no such object: nothing to do
    assert isinstance(results[3], DatabaseUnavailableError)
    assert reconciler.calls == 2  # the invalid one never reached the reconciler
    assert kube.patched == [keys[1], keys[0], keys[3]]
    assert kube.patches[1] == ready
    assert conditions(kube.patches[2])["Reconciling"] == ("True", "DatabaseUnavailable")
    down = next(c for c in kube.patches[2]["conditions"] if c["type"] == "Reconciling")
    assert down["message"] == "connection refused; retrying in 4 s"  # its own delay
    assert kube.events == ["InvalidSpec", "Ready"]


class RefusingKube(FakeKube):
    """The API server refuses the status patch of one object (a 429, a 500, a timeout)."""

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if name == "bad":
            raise KubeApiError(f"patching {namespace}/{name}: 429 Too Many Requests", delay=1.0)
        await super().patch_status(namespace, name, status)


async def test_an_invalid_spec_whose_status_patch_fails_is_that_keys_error_alone() -> None:
    objects = ObservedObjects()
    for name, spec in (("bad", {**SPEC, "resources": {"cpuCores": 64}}), ("good", SPEC)):
        body = {
            "metadata": {"namespace": "team-a", "name": name, "uid": name, "generation": 1},
            "spec": spec,
        }
        objects.observe(body, deleted=False)
    kube = RefusingKube()
    reconciler = FakeReconciler(Outcome(status={"phase": "Running"}, events=()))
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(syncer=syncer(objects, reconciler, kube), queue=queue)
    decisions = await controller.process_batch([("team-a", "bad"), ("team-a", "good")])
    # The refused patch is retried as the API server asked; the valid key is reconciled.
    assert decisions == [Decision(Action.RETRY, 1.0), Decision(Action.DONE)]
    assert (reconciler.calls, kube.patched) == (1, [("team-a", "good")])
    queue.close()


async def test_a_bug_that_escapes_the_batch_is_every_keys_error_and_retried() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(
        syncer=FakeSyncer(bug=ZeroDivisionError("a bug in the batch")), queue=queue
    )  # type: ignore[arg-type]
    keys = [("team-a", "one"), ("team-a", "two")]
    assert await controller.process_batch(keys) == [Decision(Action.RETRY)] * 2
    assert queue.pending_timers() == 2  # each key's retry is scheduled: none is lost
    queue.close()


def observed_many(*names: str) -> ObservedObjects:
    objects = ObservedObjects()
    for name in names:
        body = {
            "metadata": {"namespace": "team-a", "name": name, "uid": name, "generation": 1},
            "spec": SPEC,
        }
        objects.observe(body, deleted=False)
    return objects


class WatchedReconciler(FakeReconciler):
    """Notes what was already patched and decided when a lone reconcile starts."""

    def __init__(self, queue: WorkQueue[tuple[str, str]], kube: FakeKube) -> None:
        running = {"observedGeneration": 1, "phase": "Running", "ready": "2/2"}
        super().__init__(Outcome(status=running, events=()), None, Outcome(status={}, events=()))
        self.queue, self.kube = queue, kube
        self.seen: list[tuple[list[tuple[str, str]], int]] = []

    async def reconcile_alone(self, request: Any) -> Outcome | Exception:
        self.seen.append((list(self.kube.patched), self.queue.pending_timers()))
        return await super().reconcile_alone(request)


async def test_a_batch_publishes_and_decides_its_keys_before_the_lone_ones_run() -> None:
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    kube = FakeKube()
    reconciler = WatchedReconciler(queue, kube)
    sync = syncer(observed_many("placed", "alone"), reconciler, kube)
    controller = Controller(syncer=sync, queue=queue)
    queue.add_after(("team-a", "placed"), 30.0)  # an earlier delayed add its DONE cancels
    decisions = await controller.process_batch([("team-a", "placed"), ("team-a", "alone")])
    assert decisions == [Decision(Action.DONE)] * 2
    # When the lone reconcile began, the batch's key was patched and decided (timer gone).
    assert reconciler.seen == [([("team-a", "placed")], 0)]
    queue.close()


class ContextKube(FakeKube):
    """Notes the log context (logs.reconciling) of each status patch and event."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[tuple[str, tuple[str, str] | None]] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.contexts.append(("patch", logs._context.get()))

    def record(self, ref: Any, event: Event) -> None:
        self.contexts.append(("event", logs._context.get()))


async def test_a_keys_patch_event_and_decision_log_under_its_object_and_one_reconcile_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = ContextKube()
    ready = {"observedGeneration": 1, "phase": "Running", "ready": "2/2"}
    reconciler = FakeReconciler(
        Outcome(status=ready, events=(Event(EventType.NORMAL, "Ready", "2 of 2"),)),
        RetryableError("throttled"),
    )
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(
        syncer=syncer(observed_many("web", "api"), reconciler, kube), queue=queue
    )
    caplog.handler.addFilter(logs.ContextFilter())
    await controller.process_batch([("team-a", "web"), ("team-a", "api")])
    [(_, patched), (_, evented)] = kube.contexts
    assert patched is not None
    assert patched == evented
    assert patched[0] == "team-a/web"
    [line] = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert getattr(line, "object", None) == "team-a/api"
    queue.close()


async def test_a_batchs_reconcile_time_is_divided_among_its_keys() -> None:
    metrics = Metrics()
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    controller = Controller(
        syncer=FakeSyncer(None, None, None, None, pause=0.05), queue=queue, metrics=metrics
    )  # type: ignore[arg-type]
    keys = [("team-a", f"d-{index}") for index in range(4)]
    began = time.monotonic()
    await controller.process_batch(keys)
    took = time.monotonic() - began
    labels = {"controller": CONTROLLER}
    count = metrics.registry.get_sample_value(
        "controller_runtime_reconcile_time_seconds_count", labels
    )
    total = metrics.registry.get_sample_value(
        "controller_runtime_reconcile_time_seconds_sum", labels
    )
    assert count == 4
    # Summed, the keys' figures are the batch's time once, not four times.
    assert total is not None
    assert 0 < total <= took
    queue.close()


async def test_each_batch_a_worker_takes_observes_its_number_of_keys_once() -> None:
    metrics = Metrics()
    queue: WorkQueue[tuple[str, str]] = WorkQueue()
    syncer = FakeSyncer(None, None, None, None)
    controller = Controller(syncer=syncer, queue=queue, metrics=metrics)  # type: ignore[arg-type]
    for name in ("one", "two", "three"):
        queue.add(("team-a", name))
    worker = asyncio.create_task(controller.work(Progress()))
    for _ in range(20):
        await asyncio.sleep(0)
    queue.add(("team-a", "four"))  # after the first batch was taken: a batch of its own
    for _ in range(20):
        await asyncio.sleep(0)
    worker.cancel()
    queue.close()
    sample = metrics.registry.get_sample_value
    assert sample("fog_reconcile_batch_keys_count") == 2
    assert sample("fog_reconcile_batch_keys_sum") == 4
    assert sample("fog_reconcile_batch_keys_bucket", {"le": "1.0"}) == 1
    assert sample("fog_reconcile_batch_keys_bucket", {"le": "3.0"}) == 2
