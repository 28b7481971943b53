"""Sync one FogDeployment object: reconcile it and write its status, whoever asked.

Watch events, agent reports, requeues and the resync all end here (through the work queue), so
there is one place that turns reconciler results and errors into status, events and retry
decisions. Status is written through the `/status` subresource under the object's lock, only
when it changed. Finalizing a deletion takes the same lock, so a reconcile already running
finishes first and one that comes later finds the object gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controller.db.errors import DatabaseUnavailableError
from controller.kube import resource
from controller.kube.client import KubeClient
from controller.kube.resource import ObjectRef
from controller.model.conditions import ConditionType, condition_set
from controller.model.status import status_changed
from controller.operator.locks import KeyedLocks
from controller.operator.objects import Key, ObservedObjects
from controller.operator.reconciler import Reconciler

logger = logging.getLogger(__name__)


class InvalidSpecError(ValueError):
    """The spec breaks the seed's limits: retrying cannot help until it is edited."""


def failure_status(
    *, reason: str, message: str, stalled: bool, generation: int, live: Mapping[str, Any]
) -> dict[str, Any]:
    """Conditions that say why we could not reconcile (Stalled for permanent causes)."""
    conditions = condition_set(
        verdict=ConditionType.STALLED if stalled else ConditionType.RECONCILING,
        reason=reason,
        message=message,
        generation=generation,
        previous=list(live.get("conditions") or []),
        now=datetime.now(UTC),
    )
    return {"conditions": [condition.as_dict() for condition in conditions]}


def one_line(error: Exception) -> str:
    """An error as one line, for conditions and logs."""
    return " ".join(str(error).split())


class Syncer:
    """Reconcile + status + events for one object at a time per key."""

    def __init__(
        self,
        *,
        reconciler: Reconciler,
        kube: KubeClient,
        objects: ObservedObjects,
        requeue: Callable[[Key, float], None],
    ) -> None:
        self._reconciler = reconciler
        self._objects = objects
        self._kube = kube
        self._requeue = requeue
        self._locks = KeyedLocks()
        # The status we last wrote per object. The status last seen on the watch may predate
        # our own last patch; judging "what changed" (and "did Ready just turn True") against
        # it would repeat patches and events. One small dict per object.
        self._written: dict[Key, dict[str, Any]] = {}

    def forget(self, key: Key) -> None:
        """Drop what we remember of an object that is gone (its finalizer removed by hand)."""
        self._written.pop(key, None)

    async def finalize(self, ref: ObjectRef) -> None:
        """Soft-delete the object's deployment once no reconcile of it is running."""
        key = (ref.namespace, ref.name)
        self._objects.forget(key)
        async with self._locks.hold(key):
            self._written.pop(key, None)
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

    async def sync(self, key: Key, *, retry_delay: float = 0.0) -> None:
        """Reconcile the object of `key` as last observed, and publish the result.

        Does nothing if the object is gone or being deleted. Raises InvalidSpecError or
        DatabaseUnavailableError after saying so in the status; `retry_delay` is what the
        caller will wait before retrying, for the message.
        """
        async with self._locks.hold(key):
            observed = self._objects.get(key)
            if observed is None:
                return
            ref = observed.ref
            live = self._live(key, observed.status)
            try:
                spec = resource.parse_spec(ref.name, observed.spec)
            except ValidationError as exc:
                message = f"invalid spec: {one_line(exc)}"
                await self._write(
                    key,
                    live,
                    failure_status(
                        reason="InvalidSpec",
                        message=message,
                        stalled=True,
                        generation=ref.generation,
                        live=live,
                    ),
                )
                raise InvalidSpecError(message) from exc
            try:
                outcome = await self._reconciler.reconcile(ref=ref, spec=spec, live_status=live)
            except DatabaseUnavailableError as exc:
                await self._write(
                    key,
                    live,
                    failure_status(
                        reason="DatabaseUnavailable",
                        message=f"{one_line(exc)}; retrying in {retry_delay:.0f} s",
                        stalled=False,
                        generation=ref.generation,
                        live=live,
                    ),
                )
                raise
            await self._write(key, live, outcome.status)
        for event in outcome.events:
            logger.info("%s/%s %s: %s", ref.namespace, ref.name, event.reason, event.message)
            await self._kube.post_event(ref, event)
        if outcome.requeue_after is not None:
            self._requeue(key, outcome.requeue_after)
