"""Sync FogDeployment objects: reconcile them and write their statuses, whoever asked.

Watch events, agent reports, requeues and the resync all end here (through the controller's
work queue), so there is one place that turns reconciler results and errors into status and
events (recorder.py posts the events, with retries); what the queue then does with the key is
the controller's decision (controller.py). Status is written through the `/status` subresource
under the object's lock, only when it changed. Finalizing a deletion takes the same lock, so a
reconcile already running finishes first and one that comes later finds the object gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.db.errors import DatabaseUnavailableError
from controller.kube import resource
from controller.kube.client import KubeClient
from controller.kube.resource import InvalidSpecError, ObjectRef
from controller.model.events import failure_events
from controller.model.status import Phase, failure_status, status_changed
from controller.operator import logs
from controller.operator.locks import KeyedLocks
from controller.operator.objects import Key, Observed, ObservedObjects
from controller.operator.reconciler import Outcome, Reconciler, Request
from controller.operator.recorder import EventRecorder

# How long a new object's first status waits for its agents' first reports (see
# `first_status_hold`): about 40 times their report-to-status p99 at rest (0.024 s,
# BENCHMARKS.md), and short enough that nobody watching `kubectl get` notices it.
FIRST_STATUS_HOLD_SECONDS = 1.0


def first_status_hold(*, first: bool, status: Mapping[str, Any]) -> float | None:
    """Seconds to hold back a new object's first status, or None to write it now.

    A new object's first reconcile places its replicas; a moment later its agents report them
    running, and that reconcile writes the status again. Written both times, that is two status
    patches (and two watch events back to us) per object where the second says it all; at a
    thousand objects a second the first is a fifth of the API server's writes
    (docs/design/performance.md, issue 15). So when every replica of a new object is placed
    and waits only for its agents (phase Scheduled), its first status is held back: the agents'
    report or, if they are slow, this hold's requeue writes it. Anything else (waiting for
    room, stalled, invalid, stopped) is written at once: it is what the person is waiting for.
    """
    if first and status.get("phase") == Phase.SCHEDULED:
        return FIRST_STATUS_HOLD_SECONDS
    return None


def _sooner(*delays: float | None) -> float | None:
    chosen = [delay for delay in delays if delay is not None]
    return min(chosen) if chosen else None


class Syncer:
    """Reconcile + status + events, one sync at a time per key, a worker's keys in one batch."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        kube: KubeClient,
        objects: ObservedObjects,
        events: EventRecorder,
    ) -> None:
        self._reconciler = reconciler
        self._objects = objects
        self._kube = kube
        self._events = events
        self._locks = KeyedLocks()
        # The status we last wrote per object. The status last seen on the watch may predate
        # our own last patch; judging "what changed" (and "did Ready just turn True") against
        # it would repeat patches and events. One small dict per object.
        self._written: dict[Key, dict[str, Any]] = {}
        # New objects whose first status was held back once (`first_status_hold`): the next
        # reconcile writes it, whatever it says.
        self._held: set[Key] = set()

    def forget(self, key: Key) -> None:
        """Drop what we remember of an object that is gone (its finalizer removed by hand)."""
        self._written.pop(key, None)
        self._held.discard(key)

    async def finalize(self, ref: ObjectRef) -> None:
        """Soft-delete the object's deployment once no reconcile of it is running."""
        key = (ref.namespace, ref.name)
        self._objects.forget(key)
        async with self._locks.hold(key):
            self._written.pop(key, None)
            self._held.discard(key)
            await self._reconciler.finalize(ref=ref)

    def _live(self, key: Key, server: Mapping[str, Any]) -> dict[str, Any]:
        """The newer of the server's status and the one we last wrote."""
        ours = self._written.get(key)
        if ours is None or int(server.get("observedGeneration") or 0) > int(
            ours.get("observedGeneration") or 0
        ):
            return dict(server)
        return ours

    async def _write(self, key: Key, live: Mapping[str, Any], body: dict[str, Any]) -> None:
        """Patch `body` into the status unless the live status already says all of it."""
        if not status_changed(old=live, new=body):
            return
        await self._kube.patch_status(*key, body)
        self._written[key] = {**live, **body}

    async def _fail(
        self,
        key: Key,
        live: Mapping[str, Any],
        ref: ObjectRef,
        *,
        reason: str,
        message: str,
        stalled: bool,
        desired_replicas: int | None = None,
    ) -> None:
        """Say in the status, and in an event when it newly stalls, why the reconcile failed."""
        previous = list(live.get("conditions") or [])
        await self._write(
            key,
            live,
            failure_status(
                reason=reason,
                message=message,
                stalled=stalled,
                generation=ref.generation,
                previous_conditions=previous,
                now=datetime.now(UTC),
                ready_replicas=int(live.get("readyReplicas") or 0),
                desired_replicas=desired_replicas,
            ),
        )
        for event in failure_events(
            reason=reason, message=message, stalled=stalled, previous_conditions=previous
        ):
            self._events.record(ref, event)

    async def sync(self, key: Key, *, retry_delay: float = 0.0) -> float | None:
        """Reconcile the object of `key` as last observed, and publish the result.

        Returns the seconds after which to reconcile it again (a restart backoff ends), if
        any. Does nothing if the object is gone or being deleted. Raises InvalidSpecError or
        DatabaseUnavailableError after saying so in the status; `retry_delay` is what the
        caller will wait before retrying, for the message.
        """
        (result,) = await self.sync_many([key], retry_delays=[retry_delay])
        if isinstance(result, Exception):
            raise result
        return result

    async def sync_many(
        self,
        keys: Sequence[Key],
        *,
        retry_delays: Sequence[float],
        on_result: Callable[[int, float | Exception | None], None] = lambda index, result: None,
    ) -> list[float | Exception | None]:
        """`sync` of every key, reconciled in one batch (Reconciler.reconcile_batch).

        Each key's result is what `sync` would return or raise for it alone: statuses, events
        and errors stay per object. `on_result(index, result)` hears each key's result as soon
        as it is published, once, inside the key's log context (logs.reconciling): the keys
        the batch's transaction decided are published before the keys that go alone run, so
        they do not wait for them (a batch's lone reconciles are one transaction each). The
        keys' locks are held for the whole batch, taken in one order.
        """
        ids = [str(uuid.uuid4()) for _ in keys]
        results: list[float | Exception | None] = [None] * len(keys)

        def report(index: int, result: float | Exception | None) -> None:
            results[index] = result
            on_result(index, result)

        async with contextlib.AsyncExitStack() as held:
            for key in sorted(keys):
                await held.enter_async_context(self._locks.hold(key))
            ready: list[tuple[int, Observed, dict[str, Any], Request]] = []
            for index, key in enumerate(keys):
                with logs.reconciling(*key, ids[index]):
                    try:
                        prepared = await self._prepare(key)
                    except Exception as exc:  # this key's alone (its invalid spec's patch refused)
                        prepared = exc
                    if isinstance(prepared, Exception) or prepared is None:
                        report(index, prepared)
                        continue
                ready.append((index, *prepared))
            batched = await self._reconciler.reconcile_batch([item[3] for item in ready])
            await asyncio.gather(
                *(
                    self._settle(item, ids[item[0]], outcome, retry_delays[item[0]], report)
                    for item, outcome in zip(ready, batched, strict=True)
                    if outcome is not None
                )
            )
            for item, outcome in zip(ready, batched, strict=True):
                if outcome is None:
                    with logs.reconciling(*keys[item[0]], ids[item[0]]):
                        alone = await self._reconciler.reconcile_alone(item[3])
                    await self._settle(item, ids[item[0]], alone, retry_delays[item[0]], report)
        return results

    async def _settle(
        self,
        item: tuple[int, Observed, dict[str, Any], Request],
        reconcile_id: str,
        outcome: Outcome | Exception,
        retry_delay: float,
        report: Callable[[int, float | Exception | None], None],
    ) -> None:
        """Publish one key's outcome and report its result, in the key's log context."""
        index, observed, live, _ = item
        key = (observed.ref.namespace, observed.ref.name)
        with logs.reconciling(*key, reconcile_id):
            try:
                result: float | Exception | None = await self._publish(
                    key, observed, live, outcome, retry_delay
                )
            except Exception as exc:  # this key's: a refused patch, or its reconcile's error
                result = exc
            report(index, result)

    async def _prepare(
        self, key: Key
    ) -> tuple[Observed, dict[str, Any], Request] | Exception | None:
        """What to reconcile for `key`: None if gone, its InvalidSpecError once said in status."""
        observed = self._objects.get(key)
        if observed is None:
            return None
        live = self._live(key, observed.status)
        try:
            spec = resource.read_spec(observed.ref.name, observed.spec)
        except InvalidSpecError as exc:
            return await self._failed(key, observed, live, exc, 0.0)
        return observed, live, Request(observed.ref, spec, live)

    async def _publish(
        self,
        key: Key,
        observed: Observed,
        live: dict[str, Any],
        outcome: Outcome | Exception,
        retry_delay: float,
    ) -> float | None:
        """Write one object's status and events, or say why its reconcile failed (and raise)."""
        if isinstance(outcome, Exception):
            raise await self._failed(key, observed, live, outcome, retry_delay)
        first = not observed.status and key not in self._written and key not in self._held
        hold = first_status_hold(first=first, status=outcome.status)
        if hold is None:
            self._held.discard(key)
            await self._write(key, live, outcome.status)
        else:
            self._held.add(key)
        for event in outcome.events:
            self._events.record(observed.ref, event)
        self._objects.settle(key, settled=outcome.settled and hold is None)
        return _sooner(outcome.requeue_after, hold)

    async def _failed(
        self,
        key: Key,
        observed: Observed,
        live: dict[str, Any],
        error: Exception,
        retry_delay: float,
    ) -> Exception:
        """Say in the status why the reconcile failed, where a person can act on it; `error`."""
        self._objects.settle(key, settled=False)
        ref = observed.ref
        if isinstance(error, InvalidSpecError):
            await self._fail(
                key,
                live,
                ref,
                reason="InvalidSpec",
                message=str(error),
                stalled=True,
                desired_replicas=resource.declared_replicas(observed.spec),
            )
        elif isinstance(error, DatabaseUnavailableError):
            await self._fail(
                key,
                live,
                ref,
                reason="DatabaseUnavailable",
                message=f"{error}; retrying in {retry_delay:.0f} s",
                stalled=False,
            )
        return error
