"""kopf handlers: thin translations from kopf's arguments to the reconciler and back.

Create, update, resume and a periodic timer all call the same reconcile, because kopf's
create/update handlers are edge-triggered while correctness needs a level-triggered loop: the
timer is the safety net that repairs whatever an event missed. Errors are classified here and
nowhere else: a spec that can never work is permanent, a database outage is temporary with
exponential backoff, and both say so in the status conditions.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db.errors import DatabaseUnavailableError
from controller.kube import resource
from controller.kube import status as kube_status
from controller.model.conditions import ConditionType, make_condition
from controller.operator.reconciler import ConflictRetryError, Reconciler

logger = logging.getLogger(__name__)

# Our own names for kopf's bookkeeping, so that nothing says zalando.org on our objects.
DOMAIN = "fogcompute.io"
FINALIZER = f"{DOMAIN}/finalizer"
# Database outages: retry after 1, 2, 4 ... seconds, never more than a minute apart, so that
# recovery is noticed quickly but a long outage does not flood the logs.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# After conflicting writes, one quick retry usually wins.
CONFLICT_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What `fogctl run` decides; handlers read it from the registry closure."""

    reconciler: Reconciler
    engine: AsyncEngine
    resync_seconds: float
    verbose: bool = False


def backoff(retry: int) -> float:
    """Exponential backoff for the n-th retry of a handler."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retry))


def _failure_status(
    *, reason: str, message: str, stalled: bool, generation: int, live: Mapping[str, Any]
) -> dict[str, Any]:
    """Conditions that say why we could not reconcile (Stalled for permanent causes)."""
    previous = list(live.get("conditions") or [])
    now = datetime.now(UTC)
    verdicts = {
        ConditionType.READY: False,
        ConditionType.RECONCILING: not stalled,
        ConditionType.STALLED: stalled,
    }
    return {
        "conditions": [
            make_condition(
                type_=type_,
                status=value,
                reason=reason,
                message=message,
                generation=generation,
                previous=previous,
                now=now,
            ).as_dict()
            for type_, value in verdicts.items()
        ]
    }


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


async def _reconcile(
    config: OperatorConfig,
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    retry: int,
) -> None:
    ref = resource.object_ref(meta)
    try:
        parsed = resource.parse_spec(ref.name, spec)
    except ValidationError as exc:
        message = f"invalid spec: {_one_line(exc)}"
        patch.status.update(
            _failure_status(
                reason="InvalidSpec",
                message=message,
                stalled=True,
                generation=ref.generation,
                live=status,
            )
        )
        raise kopf.PermanentError(message) from exc
    try:
        outcome = await config.reconciler.reconcile(ref=ref, spec=parsed, live_status=status)
    except DatabaseUnavailableError as exc:
        delay = backoff(retry)
        patch.status.update(
            _failure_status(
                reason="DatabaseUnavailable",
                message=f"{_one_line(exc)}; retrying in {delay:.0f} s",
                stalled=False,
                generation=ref.generation,
                live=status,
            )
        )
        raise kopf.TemporaryError(f"database unavailable: {exc}", delay=delay) from exc
    except ConflictRetryError as exc:
        raise kopf.TemporaryError(str(exc), delay=CONFLICT_RETRY_SECONDS) from exc
    if kube_status.changed(live=dict(status), body=outcome.status):
        patch.status.update(outcome.status)
    for event in outcome.events:
        kopf.event(body, type=str(event.type), reason=event.reason, message=event.message)
        logger.info("%s/%s %s: %s", ref.namespace, ref.name, event.reason, event.message)


def apply_settings(settings: kopf.OperatorSettings, *, verbose: bool) -> None:
    """Our names for kopf's bookkeeping, quieter posting and logging, watch timeouts."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=DOMAIN, key="last-handled-configuration"
    )
    # kopf's own "handler succeeded" events would drown ours; keep its warnings.
    settings.posting.level = logging.WARNING
    # Likewise its per-object log lines: a resync of every object every interval would be
    # thousands of lines a minute. Our own log says what a reconcile changed.
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # A watch that sees nothing for 5 min is re-established: silent freezes end there.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330  # a little longer than the server's own


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """The operator's handlers, bound to one configuration (no module-level state)."""
    registry = kopf.OperatorRegistry()
    target = (resource.GROUP, resource.VERSION, resource.PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        apply_settings(settings, verbose=config.verbose)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def dispose(**_: Any) -> None:
        await config.engine.dispose()

    @kopf.on.probe(id="database", registry=registry)
    async def database_answers(**_: Any) -> bool:
        async with config.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True

    async def reconcile(
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        patch: kopf.Patch,
        retry: int = 0,  # timers are not retried, so kopf passes no retry count to them
        **_: Any,
    ) -> None:
        await _reconcile(
            config, body=body, meta=meta, spec=spec, status=status, patch=patch, retry=retry
        )

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*target, id="reconcile", registry=registry)(reconcile)

    def jittered_start(**_: Any) -> float:
        # Spread the first resync of each object over one interval, so that thousands of
        # objects found at startup do not all resync in the same second, forever after.
        return random.uniform(0, config.resync_seconds)  # noqa: S311 - not for security

    kopf.timer(
        *target,
        id="resync",
        interval=config.resync_seconds,
        initial_delay=jittered_start,
        registry=registry,
    )(reconcile)

    @kopf.on.delete(*target, id="finalize", registry=registry)
    async def finalize(meta: kopf.Meta, retry: int, **_: Any) -> None:
        try:
            await config.reconciler.finalize(ref=resource.object_ref(meta))
        except DatabaseUnavailableError as exc:
            raise kopf.TemporaryError(f"database unavailable: {exc}", delay=backoff(retry)) from exc

    return registry
