"""kopf handlers: thin translations from kopf's arguments to the syncer and back.

Create, update, resume and a periodic timer all sync through the same reconcile, because kopf's
create/update handlers are edge-triggered while correctness needs a level-triggered loop: the
timer is the safety net that repairs whatever an event missed. Errors are classified here and
nowhere else: a spec that can never work is permanent, a database or API outage is temporary
with exponential backoff; the syncer has already said which in the status conditions.

Everything with a life (engine, API client, the wakeups task) is created at startup and kept in
kopf's memo, and released at cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.db import engine as db_engine
from controller.db.errors import DatabaseUnavailableError
from controller.kube import client as kube_client
from controller.kube import resource
from controller.model.restarts import RestartPolicy
from controller.operator.reconciler import ConflictRetryError, Reconciler
from controller.operator.sync import InvalidSpecError
from controller.operator.wakeups import Wakeups

# Our own names for kopf's bookkeeping, so that nothing says zalando.org on our objects.
DOMAIN = "fogcompute.io"
FINALIZER = f"{DOMAIN}/finalizer"
# Outages: retry after 1, 2, 4 ... seconds, never more than a minute apart, so that recovery
# is noticed quickly but a long outage does not flood the logs.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# After conflicting writes, one quick retry usually wins.
CONFLICT_RETRY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What `fogctl run` decides."""

    database_url: URL
    resync_seconds: float
    node_grace: timedelta
    restarts: RestartPolicy = field(default_factory=RestartPolicy)
    verbose: bool = False


@dataclass(slots=True)
class Runtime:
    """What lives from startup to cleanup."""

    engine: AsyncEngine
    reconciler: Reconciler
    kube: kube_client.KubeClient
    wakeups: Wakeups
    task: asyncio.Task[None]


def backoff(retry: int) -> float:
    """Exponential backoff for the n-th retry of a handler."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retry))


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


async def start_runtime(config: OperatorConfig) -> Runtime:
    """Connect to the database and the API server and start the wakeups loops."""
    engine = db_engine.make_engine(config.database_url)
    sessions = db_engine.make_sessions(engine)
    reconciler = Reconciler(sessions, restarts=config.restarts)
    kube = kube_client.KubeClient(await kube_client.connect())
    wakeups = Wakeups(
        url=config.database_url,
        sessions=sessions,
        kube=kube,
        reconciler=reconciler,
        node_grace=config.node_grace,
    )
    task = asyncio.create_task(wakeups.run(), name="fog-wakeups")
    return Runtime(engine=engine, reconciler=reconciler, kube=kube, wakeups=wakeups, task=task)


async def _sync(runtime: Runtime, body: kopf.Body, retry: int) -> None:
    delay = backoff(retry)
    try:
        await runtime.wakeups.syncer.sync(body, retry_delay=delay)
    except InvalidSpecError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    except (DatabaseUnavailableError, kube_client.KubeApiError) as exc:
        raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except ConflictRetryError as exc:
        raise kopf.TemporaryError(str(exc), delay=CONFLICT_RETRY_SECONDS) from exc


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """The operator's handlers, bound to one configuration (no module-level state)."""
    registry = kopf.OperatorRegistry()
    target = (resource.GROUP, resource.VERSION, resource.PLURAL)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        apply_settings(settings, verbose=config.verbose)
        memo.runtime = await start_runtime(config)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        runtime: Runtime = memo.runtime
        runtime.task.cancel()
        await asyncio.gather(runtime.task, return_exceptions=True)
        await runtime.kube.close()
        await runtime.engine.dispose()

    @kopf.on.probe(id="database", registry=registry)
    async def database_answers(memo: kopf.Memo, **_: Any) -> bool:
        async with memo.runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True

    async def reconcile(
        body: kopf.Body,
        memo: kopf.Memo,
        retry: int = 0,  # timers are not retried, so kopf passes no retry count to them
        **_: Any,
    ) -> None:
        await _sync(memo.runtime, body, retry)

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
    async def finalize(meta: kopf.Meta, memo: kopf.Memo, retry: int, **_: Any) -> None:
        ref = resource.object_ref(meta)
        memo.runtime.wakeups.syncer.forget((ref.namespace, ref.name))
        try:
            await memo.runtime.reconciler.finalize(ref=ref)
        except DatabaseUnavailableError as exc:
            raise kopf.TemporaryError(f"database unavailable: {exc}", delay=backoff(retry)) from exc

    return registry
