"""kopf handlers: thin translations from kopf's arguments to the work loop and back.

kopf does three things for us: it watches FogDeployments, it adds and removes our finalizer,
and it runs the startup, cleanup, login and probe hooks. Reconciling is ours: one spy handler
(`on.event`) records each watch event and queues a reconcile when the object is new or its
spec changed; the controller's workers run the one idempotent, level-triggered reconcile for
every cause (create, update, startup, agent reports, resync). The `on.delete` handler
soft-deletes through the same per-object lock, and kopf then removes the finalizer.

Why not kopf's create/update/resume handlers and a timer per object? They cost an API write
per object (kopf's diff-base annotation, a copy of the whole spec), a deep copy of every body
for every watch event, and a sleeping task per object; at thousands of objects that was most
of the operator's time during a burst and most of its memory at rest
(docs/design/performance.md). Errors are handled by the work queue: outages retry with
exponential backoff per object, an invalid spec is reported as Stalled and waits for an edit.

Everything with a life (the database store, the API client, the controller and its supervised
loops) is created at startup and kept in kopf's memo, and released at cleanup. Errors become
kopf's here and nowhere else: a retryable one from the finalizer is a TemporaryError.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kopf

from controller.db import notify
from controller.db.store import Store
from controller.db.urls import DatabaseUrl
from controller.errors import RetryableError
from controller.kube import client as kube_client
from controller.kube import quota as quota_resource
from controller.kube import resource
from controller.kube.election import ElectionSettings
from controller.model.addresses import Address
from controller.model.restarts import RestartPolicy
from controller.operator.controller import Controller
from controller.operator.history import HistoryPartitions
from controller.operator.leadership import Leadership
from controller.operator.metrics import METRICS
from controller.operator.nodelifecycle import NodeLifecycle
from controller.operator.objects import ObservedObjects
from controller.operator.quotas import QuotaSync
from controller.operator.reconciler import Reconciler
from controller.operator.recorder import EventRecorder
from controller.operator.serving import ListenError, Serving
from controller.operator.sources import Sources
from controller.operator.supervisor import Supervisor
from controller.operator.sync import Syncer
from controller.operator.workqueue import backoff

logger = logging.getLogger(__name__)

# Our own names for kopf's bookkeeping, so that nothing says zalando.org on our objects.
DOMAIN = "fogcompute.io"
FINALIZER = f"{DOMAIN}/finalizer"
# How often each FogQuota's limits are stored again and its status.used refreshed: watch events
# store a change at once, this repairs one an outage made us miss and keeps `kubectl describe
# fogquota` no staler than Kubernetes' own quota status is between its events. Quotas are few,
# so one timer each costs nothing (FogDeployments, thousands, have no timer: see above).
QUOTA_REFRESH_SECONDS = 10.0
# Reconciles take milliseconds; one waiting out a database connect timeout (10 s) still ends
# well inside this, and this plus the lease release fits Kubernetes' default 30 s grace period.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0
# How often the start asks whether our kinds are served yet: an API server loads its CRDs a
# second or two after it answers, and one discovery read a second costs it nothing.
SERVED_POLL_SECONDS = 1.0


@dataclass(slots=True)
class Shutdown:
    """How the runtime asks kopf to stop (its stop flag), and why, for the exit code."""

    flag: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def request(self, reason: str) -> None:
        """Stop the operator; `fogctl run` exits non-zero with `reason`."""
        logger.error("%s", reason)
        self.reason = reason
        self.flag.set()


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What `fogctl run` decides."""

    database_url: DatabaseUrl
    resync_seconds: float
    node_grace: timedelta
    restarts: RestartPolicy = field(default_factory=RestartPolicy)
    verbose: bool = False
    # `--namespace`: the namespaces kopf watches; empty, every namespace.
    namespaces: Sequence[str] = ()
    # Faults to inject into the loops (tests only; `FOG_FAILPOINTS`, see failpoints.py).
    failpoints: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    # `--leader-elect`: the Lease to campaign for; None runs the loops at once.
    election: ElectionSettings | None = None
    # `--metrics-bind-address` and `--health-probe-bind-address` (serving.py); None: off.
    metrics_address: Address | None = None
    probe_address: Address | None = None
    # On SIGTERM, how long the reconciles in flight may take to finish (controller.drain).
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    # `--history-retention`: whole months of history older than this are dropped; None keeps all.
    history_retention: timedelta | None = None
    shutdown: Shutdown = field(default_factory=lambda: Shutdown())


@dataclass(slots=True)
class Runtime:
    """What lives from startup to cleanup."""

    store: Store
    kube: kube_client.KubeClient
    controller: Controller
    events: EventRecorder
    sources: Sources
    supervisor: Supervisor
    task: asyncio.Task[None]
    quotas: QuotaSync
    leadership: Leadership | None = None
    serving: Serving | None = None


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
    # kopf's listing is never in pages: kopf asks for its next page only once the last has gone
    # through its per-object workers, a listing under load (a 50,000-object fill) outlived the
    # continue token (etcd compacts every 5 min), and kopf does not retry that 410: its watcher
    # failed and took the operator down. Where it can, kopf streams it (choose_first_view).
    settings.watching.chunk_size = None


async def choose_first_view(
    settings: kopf.OperatorSettings, kube: kube_client.KubeClient, namespaces: Sequence[str]
) -> None:
    """Let kopf stream its first view of the objects where the API server serves that.

    A streaming list (a watch that begins with every object as an event, Kubernetes 1.34 and
    later) is decoded one event at a time; kopf's listing in one response is read and decoded
    whole, which set a restart's peak RSS (761-775 MB against 577-591 streamed at 20,000
    objects; 1.63 GB against 742 MB at 50,000: performance.md). Asked for where it is not
    served, kopf's watch fails and stops the operator, so the API server is asked first; an
    API server that cannot say gets kopf's listing, which every version serves.
    """
    lists = "kopf lists FogDeployments in one response, which raises a restart's peak memory"
    try:
        streams = await kube.serves_streaming_lists(namespaces[0] if namespaces else None)
    except kube_client.KubeApiError as exc:
        logger.warning("could not ask whether the API server streams lists (%s): %s", exc, lists)
        streams = False
    else:
        if not streams:
            logger.warning(
                "the API server does not serve streaming lists (Kubernetes before 1.34, or its"
                " WatchList feature gate off): %s",
                lists,
            )
    settings.watching.initial_streaming = streams


def streaming_lists_withdrawn(error: BaseException) -> bool:
    """Whether kopf stopped because the API server refused a streaming list it had served.

    The question at start (`choose_first_view`) holds for that API server; one restarted
    without the WatchList gate (a downgrade, or the gate turned off) refuses kopf's next first
    view with 422, and kopf stops. kopf's API errors are private classes, so the error is known
    by its status and by the parameter the API server names.
    """
    status = getattr(error, "status", None)
    return status == kube_client.UNPROCESSABLE and "sendInitialEvents" in str(error)


async def wait_until_served(kube: kube_client.KubeClient) -> None:
    """Return once the API server serves our kinds: kopf's watches start after the startup hook.

    kopf reads the API server's discovery once when it starts; an operator started while the
    API server was restarting (up, but its CRDs not loaded again) never watched FogDeployments
    at all, and nothing it logged said so beyond one warning. Waiting here, with a log line
    saying why, lets kopf's one look find them.
    """
    plurals = (resource.PLURAL, quota_resource.PLURAL)
    waited = False
    while True:
        try:
            if await kube.served(plurals):
                break
            why = "not listed by its discovery (CRDs not installed, or not loaded yet)"
        except kube_client.KubeApiError as exc:
            why = str(exc)
        if not waited:
            logger.warning("waiting for the API server to serve %s: %s", "/".join(plurals), why)
            waited = True
        await asyncio.sleep(SERVED_POLL_SECONDS)
    if waited:
        logger.info("the API server serves %s now", "/".join(plurals))


async def start_runtime(config: OperatorConfig) -> Runtime:
    """Connect to the database and the API server; start the supervised loops."""
    store = Store.connect(config.database_url)
    kube = kube_client.KubeClient(await kube_client.connect())
    await wait_until_served(kube)
    objects = ObservedObjects()
    events = EventRecorder(kube.post_event)
    controller = Controller(
        syncer=Syncer(
            reconciler=Reconciler(store, restarts=config.restarts, metrics=METRICS),
            kube=kube,
            objects=objects,
            events=events,
        ),
        metrics=METRICS,
    )
    sources = Sources(
        objects=objects,
        enqueue=controller.enqueue,
        forget=controller.forget,
        listen=functools.partial(notify.listen, config.database_url),
        keys_of=store.deployment_keys,
        resync_seconds=config.resync_seconds,
        reported=controller.reported,
    )
    await _list_first(kube, sources, config.namespaces)
    supervisor = Supervisor(failpoints=config.failpoints)
    controller.supervise(supervisor, listening=sources.listening)
    events.supervise(supervisor)
    supervisor.add("notifications", sources.listen)
    supervisor.add("notified-keys", sources.resolve)
    supervisor.add("resync", sources.resync)
    supervisor.add("node-lifecycle", NodeLifecycle(store=store, grace=config.node_grace).run)
    history = HistoryPartitions(store=store, retention=config.history_retention, metrics=METRICS)
    supervisor.add("history-partitions", history.run)
    leadership = None
    if config.election is None:
        task = asyncio.create_task(supervisor.run(), name="fog-controller")
    else:
        leadership = Leadership(
            settings=config.election,
            store=store,
            supervisor=supervisor,
            requeue_all=sources.requeue_all,
            stop=config.shutdown.request,
        )
        task = asyncio.create_task(leadership.run(), name="fog-controller-election")
        task.add_done_callback(functools.partial(_ended, shutdown=config.shutdown))
    return Runtime(
        store=store,
        kube=kube,
        controller=controller,
        events=events,
        sources=sources,
        supervisor=supervisor,
        task=task,
        quotas=QuotaSync(store=store, kube=kube),
        leadership=leadership,
        serving=await _serve(config, supervisor),
    )


async def _list_first(
    kube: kube_client.KubeClient, sources: Sources, namespaces: Sequence[str]
) -> None:
    """Queue every object in kopf's scope before the workers start (Sources.take_listing).

    A listing that fails loses nothing: kopf's own listing queues every object, one by one.
    """
    scopes: Sequence[str | None] = namespaces or [None]
    queued = 0
    try:
        for namespace in scopes:
            queued += await sources.take_listing(
                kube.list_deployments(namespace), finalizer=FINALIZER
            )
    except kube_client.KubeApiError as exc:
        logger.warning("listing FogDeployments at start failed (%s); kopf's watch lists them", exc)
        return
    logger.info("queued %d FogDeployments for a first pass before the workers start", queued)


async def _serve(config: OperatorConfig, supervisor: Supervisor) -> Serving | None:
    """Metrics and probes; an address that cannot be listened on stops the operator."""
    try:
        return await Serving.start(
            database_url=config.database_url,
            supervisor=supervisor,
            metrics=METRICS,
            metrics_address=config.metrics_address,
            probe_address=config.probe_address,
        )
    except ListenError as exc:
        # Not kopf's retry of the startup hook: a port in use stays in use. One line, exit 1.
        config.shutdown.request(str(exc))
        return None


def _ended(task: asyncio.Task[None], *, shutdown: Shutdown) -> None:
    """The election task must run as long as the operator: if it fails, stop the process."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("leader election failed", exc_info=error)
        shutdown.request(f"leader election failed: {type(error).__name__}: {error}")


async def stop_runtime(runtime: Runtime, *, grace: float) -> None:
    """Let the reconciles in flight finish (up to `grace` s), then stop and release it all.

    kopf calls the cleanup hook once its watches have stopped, so no reconcile starts now.
    """
    await runtime.controller.drain(grace)
    runtime.task.cancel()
    await asyncio.gather(runtime.task, return_exceptions=True)
    if runtime.serving is not None:
        await runtime.serving.stop()
    if runtime.leadership is not None:
        await runtime.leadership.release()  # the standby takes over at its next retry
    runtime.controller.queue.close()
    runtime.events.close()
    await runtime.kube.close()
    await runtime.store.close()


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """The operator's handlers, bound to one configuration (no module-level state)."""
    registry = kopf.OperatorRegistry()
    target = (resource.GROUP, resource.VERSION, resource.PLURAL)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        apply_settings(settings, verbose=config.verbose)
        memo.runtime = await start_runtime(config)
        await choose_first_view(settings, memo.runtime.kube, config.namespaces)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await stop_runtime(memo.runtime, grace=config.shutdown_grace)
        # Stopped by a signal, kopf (1.45) leaves its task that waits on our stop flag pending,
        # then waits 5 s for it as a hung task before it exits. Raising the flag now (with no
        # reason: the exit code stays 0) ends that task, and a graceful stop takes 5 s less.
        config.shutdown.flag.set()

    # Probes fail at once (PERMANENT): kopf retries a failed handler after its backoff by
    # default, and the health request would hang for a minute instead of answering 500.
    @kopf.on.probe(id="database", errors=kopf.ErrorsMode.PERMANENT, registry=registry)
    async def database_answers(memo: kopf.Memo, **_: Any) -> bool:
        await memo.runtime.store.ping()
        return True

    # Fails (and with it kopf's liveness endpoint) while a loop is stuck or crash-looping.
    @kopf.on.probe(id="loops", errors=kopf.ErrorsMode.PERMANENT, registry=registry)
    async def loops(memo: kopf.Memo, **_: Any) -> dict[str, dict[str, Any]]:
        runtime: Runtime = memo.runtime
        return runtime.supervisor.check()

    # async, though it never awaits: kopf runs plain functions in a thread pool.
    @kopf.on.event(*target, id="observe", registry=registry)
    async def observe(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        METRICS.watched(event.get("type"))
        memo.runtime.sources.observe(body, deleted=event.get("type") == "DELETED")

    @kopf.on.delete(*target, id="finalize", registry=registry)
    async def finalize(meta: kopf.Meta, memo: kopf.Memo, retry: int, **_: Any) -> None:
        try:
            await memo.runtime.controller.syncer.finalize(resource.object_ref(meta))
        except RetryableError as exc:
            raise _temporary(exc, retry) from exc

    _quota_handlers(registry)
    return registry


def _temporary(error: RetryableError, retry: int) -> kopf.TemporaryError:
    """A retryable error as kopf's: its own delay, or our backoff for this attempt."""
    delay = backoff(retry + 1) if error.delay is None else error.delay
    return kopf.TemporaryError(f"{error}", delay=delay)


def _quota_handlers(registry: kopf.OperatorRegistry) -> None:
    """FogQuotas: stored on each change, refreshed on a timer, forgotten on delete (quotas.py)."""
    quotas = (resource.GROUP, resource.VERSION, quota_resource.PLURAL)

    @kopf.on.event(*quotas, id="quota", registry=registry)
    async def quota_changed(
        body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any
    ) -> None:
        if event.get("type") == "DELETED" or body.meta.get("deletionTimestamp"):
            return
        try:
            await memo.runtime.quotas.sync(meta=body.meta, spec=body.spec, status=body.status)
        except RetryableError as exc:
            # kopf does not retry event handlers; the refresh below does, within its interval.
            logger.warning(
                "FogQuota %s/%s not stored yet: %s", body.meta.namespace, body.meta.name, exc
            )

    @kopf.timer(*quotas, id="quota-refresh", interval=QUOTA_REFRESH_SECONDS, registry=registry)
    async def quota_refresh(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        try:
            await memo.runtime.quotas.sync(meta=body.meta, spec=body.spec, status=body.status)
        except RetryableError as exc:
            # The next tick is the retry.
            raise kopf.TemporaryError(f"{exc}", delay=QUOTA_REFRESH_SECONDS) from exc

    @kopf.on.delete(*quotas, id="quota-finalize", registry=registry)
    async def quota_finalize(meta: kopf.Meta, memo: kopf.Memo, retry: int, **_: Any) -> None:
        try:
            await memo.runtime.quotas.forget(meta)
        except RetryableError as exc:
            raise _temporary(exc, retry) from exc
