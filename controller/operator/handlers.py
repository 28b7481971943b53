"""kopf handlers: thin translations from kopf's arguments to the work loop and back.

kopf does three things for us: it watches FogDeployments, it adds and removes our finalizer,
and it runs the startup, cleanup, login and probe hooks. Reconciling is ours: one spy handler
(`on.event`) records each watch event and queues a reconcile when the object is new or its
spec changed; the work loop's workers run the one idempotent, level-triggered reconcile for
every cause (create, update, startup, agent reports, resync). The `on.delete` handler
soft-deletes through the same per-object lock, and kopf then removes the finalizer.

Why not kopf's create/update/resume handlers and a timer per object? They cost an API write
per object (kopf's diff-base annotation, a copy of the whole spec), a deep copy of every body
for every watch event, and a sleeping task per object; at thousands of objects that was most
of the operator's time during a burst and most of its memory at rest
(docs/design/performance.md). Errors are handled by the work queue: outages retry with
exponential backoff per object, an invalid spec is reported as Stalled and waits for an edit.

Everything with a life (engine, API client, the work loop) is created at startup and kept in
kopf's memo, and released at cleanup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
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
from controller.operator.reconciler import Reconciler
from controller.operator.wakeups import Wakeups
from controller.operator.workqueue import backoff

# Our own names for kopf's bookkeeping, so that nothing says zalando.org on our objects.
DOMAIN = "fogcompute.io"
FINALIZER = f"{DOMAIN}/finalizer"


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
    kube: kube_client.KubeClient
    wakeups: Wakeups
    task: asyncio.Task[None]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base, switched off: we have no create/update handlers that would use it.

    kopf would otherwise deep-copy every object on every watch event to compute an essence,
    and patch a copy of the spec into an annotation on every change: an API write per object
    and a GitOps-visible annotation as large as the spec.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        """Nothing: every change looks the same to kopf, and no handler asks."""
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """No stored essence."""
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Store nothing (no patch)."""


def apply_settings(settings: kopf.OperatorSettings, *, verbose: bool) -> None:
    """Our names for kopf's bookkeeping, quieter posting and logging, watch timeouts."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=DOMAIN)
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf's own "handler succeeded" events would drown ours; keep its warnings.
    settings.posting.level = logging.WARNING
    # Likewise its per-object log lines (one per watch event). Our own log says what a
    # reconcile changed.
    if not verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # A watch that sees nothing for 5 min is re-established: silent freezes end there.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330  # a little longer than the server's own


async def start_runtime(config: OperatorConfig) -> Runtime:
    """Connect to the database and the API server and start the wakeups loops."""
    engine = db_engine.make_engine(config.database_url)
    sessions = db_engine.make_sessions(engine)
    kube = kube_client.KubeClient(await kube_client.connect())
    wakeups = Wakeups(
        url=config.database_url,
        sessions=sessions,
        kube=kube,
        reconciler=Reconciler(sessions, restarts=config.restarts),
        node_grace=config.node_grace,
        resync_seconds=config.resync_seconds,
    )
    task = asyncio.create_task(wakeups.run(), name="fog-wakeups")
    return Runtime(engine=engine, kube=kube, wakeups=wakeups, task=task)


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

    # async, though it never awaits: kopf runs plain functions in a thread pool.
    @kopf.on.event(*target, id="observe", registry=registry)
    async def observe(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        memo.runtime.wakeups.observe(body, deleted=event.get("type") == "DELETED")

    @kopf.on.delete(*target, id="finalize", registry=registry)
    async def finalize(meta: kopf.Meta, memo: kopf.Memo, retry: int, **_: Any) -> None:
        try:
            await memo.runtime.wakeups.syncer.finalize(resource.object_ref(meta))
        except DatabaseUnavailableError as exc:
            delay = backoff(retry + 1)
            raise kopf.TemporaryError(f"database unavailable: {exc}", delay=delay) from exc

    return registry
