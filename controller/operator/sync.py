"""Sync one FogDeployment object: reconcile it and write its status, whoever asked.

kopf handlers (create, update, resume, resync) and database wakeups all end here, so there is
one place that turns reconciler results and errors into status, events and retry decisions.
Status is written through the `/status` subresource under the object's lock, only when it
changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from controller.db.errors import DatabaseUnavailableError
from controller.kube import resource
from controller.kube.client import KubeClient
from controller.model.conditions import ConditionType, condition_set
from controller.model.status import status_changed
from controller.operator.locks import KeyedLocks
from controller.operator.reconciler import Reconciler

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class InvalidSpecError(ValueError):
    """The spec breaks the seed's limits: retrying cannot help until it is edited."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """Reconcile `key` again after `delay` seconds."""

    key: Key
    delay: float


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
        requeue: Callable[[Requeue], None],
    ) -> None:
        self._reconciler = reconciler
        self._kube = kube
        self._requeue = requeue
        self._locks = KeyedLocks()
        # The status we last wrote per object. The body a kopf handler or a timer receives
        # may predate our own last patch; judging "what changed" (and "did Ready just turn
        # True") against it would repeat patches and events. One small dict per object.
        self._written: dict[Key, dict[str, Any]] = {}

    def forget(self, key: Key) -> None:
        """Drop what we remember of a deleted object."""
        self._written.pop(key, None)

    def _live(self, key: Key, server: Mapping[str, Any]) -> dict[str, Any]:
        """The newer of the server's status and the one we last wrote."""
        ours = self._written.get(key)
        if ours is None or int(server.get("observedGeneration") or 0) > int(
            ours.get("observedGeneration") or 0
        ):
            return dict(server)
        return ours

    async def _write(self, key: Key, live: Mapping[str, Any], body: dict[str, Any]) -> None:
        await self._kube.patch_status(*key, body)
        self._written[key] = {**live, **body}

    async def sync(self, obj: Mapping[str, Any], *, retry_delay: float = 0.0) -> None:
        """Reconcile `obj` (a FogDeployment as the API returns it) and publish the result.

        Raises InvalidSpecError or DatabaseUnavailableError after saying so in the status;
        `retry_delay` is what the caller will wait before retrying, for the message.
        """
        meta = obj["metadata"]
        ref = resource.object_ref(meta)
        key = (ref.namespace, ref.name)
        async with self._locks.hold(key):
            live = self._live(key, obj.get("status") or {})
            try:
                spec = resource.parse_spec(ref.name, obj.get("spec") or {})
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
            if status_changed(old=live, new=outcome.status):
                await self._write(key, live, outcome.status)
        for event in outcome.events:
            logger.info("%s/%s %s: %s", ref.namespace, ref.name, event.reason, event.message)
            await self._kube.post_event(dict(obj), event)
        if outcome.requeue_after is not None:
            self._requeue(Requeue(key=key, delay=outcome.requeue_after))
