"""One run of a scenario: fresh state, the product's processes, and a watch that times them.

The servers, the databases and the processes come from the shared harness
(controller/sandbox/harness.py), as in the end-to-end tests; what is here is what only a
benchmark needs: nodes registered by the hundred straight into the database, objects created
as fast as the API server takes them, and a watch that notes when each object turns Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from controller.agent.wire import assignment_in, report_out
from controller.db import credentials
from controller.db import engine as db_engine
from controller.db import nodes as db_nodes
from controller.kube.resource import GROUP, PLURAL, VERSION
from controller.model.protocol import Assignment, Report
from controller.model.resources import Resources
from controller.model.states import ReplicaStatus
from controller.sandbox.harness import FogctlProcess, Kubectl, Servers, Stack

# A run starts its clock once the operator and the agents have started, so that start-up is not
# counted in what is measured. The operator's loops run once it logs this (it leads and listens,
# controller/db/notify.py); kopf's watches begin just before, after its startup handler.
OPERATOR_STARTED = "listening on fog_deployment_changed"
# Each simulated agent logs this once the agent API has taken its tokens (agent/simulate.py).
AGENT_STARTED = "playing "
# The operator and the agents import, connect and list in seconds (a fixed 3 s wait was too short
# for the operator on a slow day: its first object was created before it ran). The agents
# scenario's one agent presents 5,000 node tokens before it says it plays them, so two minutes
# means something is broken, and the run stops there with the process's log named.
PROCESS_START_SECONDS = 120.0
# How often a starting process's log is read: a few times a second costs nothing.
LOG_POLL_SECONDS = 0.1
# The server ends a watch after this; the watch is then opened again.
WATCH_SECONDS = 300
# A watch the API server refuses (429 "storage is (re)initializing" for a namespace's new
# resources, 5xx under load) is opened again after this: the server's Retry-After is 1 s.
WATCH_RETRY_SECONDS = 1.0
# A scrape of a process's /metrics takes milliseconds; seconds means it is stuck.
METRICS_TIMEOUT_SECONDS = 5.0
# Creates the API server refuses under load (429, 5xx) are retried this many times.
CREATE_ATTEMPTS = 5
# The agent API imports, connects and listens in about 2 s; a minute means it is broken.
AGENT_API_START_SECONDS = 60.0
# The probe's heartbeat period: that of the simulated fleet, well inside the 40 s grace.
PROBE_HEARTBEAT_SECONDS = 10.0


def manifest(name: str, replicas: int, selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "bench:1",
        "replicas": replicas,
        "resources": {"cpuCores": 0.5, "memoryMB": 512, "storageGB": 1},
    }
    if selector:
        spec["nodeSelector"] = selector
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FogDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(
                condition.get("status") == "True"
                and condition.get("observedGeneration") == generation
            )
    return False


class ReadyWatch:
    """Records when each object of a namespace turns Ready or not (a watch, not polling)."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}  # the first time each was seen Ready
        self.changes: dict[str, list[tuple[float, bool]]] = {}  # (when, Ready) on each change
        self.seen: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def _record(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        self.seen[name] = obj
        ready = is_ready(obj)
        if ready and name not in self.ready_at:
            self.ready_at[name] = now
        changes = self.changes.setdefault(name, [])
        if not changes or changes[-1][1] != ready:
            changes.append((now, ready))
        self.changed.set()

    async def _run(self) -> None:
        """Watch until stopped; a refused watch is opened again rather than ending the task.

        Ended, the task would leave every later `until` waiting out its limit for changes that
        happened: a single run failed so at its first object after the server's 429.
        """
        since: str | None = None  # where the last watch ended; None: every object again
        while True:
            stream = watch.Watch()
            resume = {"resource_version": since} if since else {}
            try:
                async for item in stream.stream(
                    self.api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    **resume,
                ):
                    if item["type"] != "BOOKMARK":
                        self._record(item["object"])
                # Ended by the server (its timeout, or it closed a watcher that fell behind):
                # go on from the last event. Opened afresh, the watch sent every object of the
                # namespace again, 50,000 at full size, each time the server closed it.
                since = stream.resource_version or since
            except ApiException as exc:
                if exc.status == 410:  # that point has left the server's watch cache
                    since = None
                    continue
                if exc.status != 429 and (exc.status or 0) < 500:
                    raise
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    def ready_again_after(self, name: str, since: float) -> float | None:
        """When `name` was Ready again after having been not Ready since `since`, if it was."""
        lost = False
        for when, ready in self.changes.get(name, []):
            if when >= since and not ready:
                lost = True
            elif lost and ready:
                return when
        return None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def until(self, predicate: Callable[[], bool], limit: float) -> None:
        """Wait for `predicate`, looking again on each change; TimeoutError after `limit`."""
        deadline = time.monotonic() + limit
        while not predicate():
            if self.task is not None and self.task.done():
                # A watch that ended on an error raises it here, not a TimeoutError much later.
                self.task.result()
                raise RuntimeError("the Ready watch ended")
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue


async def create_all(
    api: client.CustomObjectsApi, namespace: str, bodies: list[dict[str, Any]], concurrency: int
) -> dict[str, float]:
    """Create FogDeployments as fast as the API server takes them; return each create time."""

    async def create(body: dict[str, Any]) -> object:
        return await api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    return await create_each(create, bodies, concurrency)


async def create_each(
    create: Callable[[dict[str, Any]], Awaitable[object]],
    bodies: list[dict[str, Any]],
    concurrency: int,
) -> dict[str, float]:
    """Create objects of any kind with `concurrency` clients; return each create time.

    One client code for our objects and for the Kubernetes baseline's Deployments, so that
    both bursts arrive at the API server the same way.
    """
    created: dict[str, float] = {}
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    await create(body)
                    break
                except ApiException as exc:  # 429/5xx under load: back off and retry
                    if attempt == CREATE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1) + (exc.status == 429))
            created[body["metadata"]["name"]] = time.monotonic()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return created


async def register_nodes(
    url: URL, count: int, *, cpu: float, memory: int, prefix: str
) -> dict[str, str]:
    """Register `count` nodes and issue their node tokens in one transaction; return the tokens.

    `fogctl node register` 5,000 times takes many minutes, and 5,000 bootstrap exchanges would
    cost the agent as many requests at start: node tokens are issued in bulk instead.
    """
    engine = db_engine.make_engine(url)
    sessions = db_engine.make_sessions(engine)
    names = [node_name(prefix, index) for index in range(count)]
    try:
        async with sessions() as session, session.begin():
            for name in names:
                await db_nodes.register(
                    session,
                    name=name,
                    capacity=Resources.from_cores(
                        cpu_cores=cpu, memory_mb=memory, gpu_units=0, storage_gb=1000
                    ),
                    labels={"pool": prefix},
                )
            return await credentials.issue_node_tokens(session, nodes=names)
    finally:
        await engine.dispose()


# The API writes an object costs: the object (create, finalizer), its status, its events.
WRITE_VERBS = {"PATCH", "PUT", "POST", "UPDATE", "CREATE", "DELETE"}
WRITTEN = {"fogdeployments", "events"}


def scrape_metrics(url: str) -> str:
    """A process's /metrics page as text (the operator's: its queue, batches, reconciles)."""
    with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_SECONDS) as page:
        return str(page.read().decode())


def metric_samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """The samples of one metric in a Prometheus text page: labels and value.

    Only the metric's own lines are parsed: the API server's page has some 17,000 lines (2 MB)
    and parsing them all took 0.58 s a read on this machine, against 0.02 s for its own.
    """
    own = "\n".join(
        line for line in text.splitlines() if line.startswith((f"{name}{{", f"{name} "))
    )
    for family in text_string_to_metric_families(own):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def api_writes(kubectl: Kubectl) -> float:
    """Writes the API server has served on FogDeployments (any subresource) and Events."""
    text = kubectl("get", "--raw", "/metrics").stdout
    return sum(
        value
        for labels, value in metric_samples(text, "apiserver_request_total")
        if labels.get("resource") in WRITTEN and labels.get("verb") in WRITE_VERBS
    )


def node_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:04d}"


def scalar(url: URL, query: str) -> float:
    """The one number a query returns (0 for no row or NULL): a count, a time."""
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as connection:
        row = connection.execute(query.encode()).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0


@dataclass
class Run:
    """One run of a scenario: its database, namespace, processes and Ready watch."""

    url: URL
    namespace: str
    prefix: str  # of its node names
    watcher: ReadyWatch
    stack: Stack
    tokens: dict[str, str]  # node -> node token, of the nodes registered at the start


async def until_serving(server: str, limit: float = AGENT_API_START_SECONDS) -> None:
    """Wait until the agent API answers /readyz (it listens for the database's notifications).

    Agents started before would back off for up to their tick (10 s in the fleet scenario).
    """
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{server}/readyz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent API at {server} never became ready")
            await asyncio.sleep(0.1)


async def until_logged(process: FogctlProcess, text: str, limit: float) -> None:
    """Wait until `process` has logged `text`; TimeoutError naming its log after `limit`."""
    deadline = time.monotonic() + limit
    while text not in process.log.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} within {limit:g} s: {process.log}")
        await asyncio.sleep(LOG_POLL_SECONDS)


class ProbeAgent:
    """The benchmark as one node's agent, over the agent API's HTTP routes with a node token.

    What it times (a report until the status counts it) must go the way agents' reports go,
    through the API, not straight into the database; it heartbeats so that its node stays
    online however long a scenario runs.
    """

    def __init__(self, http: aiohttp.ClientSession, server: str, node: str, token: str) -> None:
        self.http = http
        self.server = server
        self.node = node
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, f"{self.server}{path}", json=body, headers=self.headers
        ) as response:
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            return None if response.status == 204 else await response.json()

    async def assignments(self) -> list[Assignment]:
        body = await self._call("GET", "/v1/assignments")
        return [assignment_in(self.node, item) for item in body["assignments"]]

    async def report(self, items: Sequence[Assignment], status: ReplicaStatus) -> None:
        """One batch: each of `items` moved to `status`."""
        batch = [
            Report(node=item.node, replica_id=item.replica_id, status=status, reason="bench")
            for item in items
        ]
        await self._call("POST", "/v1/reports", {"reports": [report_out(r) for r in batch]})

    async def heartbeats(self) -> None:
        while True:
            await self._call("POST", "/v1/heartbeat")
            await asyncio.sleep(PROBE_HEARTBEAT_SECONDS)


@asynccontextmanager
async def probe_agent(server: str, node: str, token: str) -> AsyncIterator[ProbeAgent]:
    """A ProbeAgent heartbeating in the background for the duration of the block."""
    async with aiohttp.ClientSession() as http:
        agent = ProbeAgent(http, server, node, token)
        beating = asyncio.create_task(agent.heartbeats())
        try:
            yield agent
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)


@asynccontextmanager
async def fresh_run(
    servers: Servers,
    api_client: client.ApiClient,
    label: str,
    *,
    nodes: int,
    cpu: float,
    memory: int,
    agents: Mapping[str, Sequence[str]],
    operator_args: Sequence[str] = (),
    agent_args: Sequence[str] = (),
) -> AsyncIterator[Run]:
    """A new database, namespace, registered nodes, agents and operator, and a Ready watch.

    `agents` names each simulated agent with the nodes it plays (none: every registered node);
    it is empty when the scenario plays the agent itself. `agent_args` are added to each
    agent's command line (the harness's fast defaults otherwise). The agent API always runs.
    """
    url = servers.fresh_database("fog_bench")
    namespace = f"{label}-{uuid.uuid4().hex[:6]}"
    await client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    prefix = label.split("-")[0]
    tokens = await register_nodes(url, nodes, cpu=cpu, memory=memory, prefix=prefix)
    stack = Stack(
        folder=servers.folder,
        env=servers.env(url),
        namespaces=[namespace],
        operator_args=operator_args,
        label=label,
    )
    watcher = ReadyWatch(client.CustomObjectsApi(api_client), namespace)
    try:
        # The operator first: it is the slowest to start (kopf imports both Kubernetes
        # clients) and needs nothing of the agent API, so the two start side by side rather
        # than one after the other. A node whose short grace runs out before its agent is
        # heard from comes back online with the agent's first heartbeat.
        stack.operator.start()
        stack.add_tokens(tokens)  # starts the agent API too
        await until_serving(stack.agent_server)
        started = [stack.agent_for(name, played, agent_args) for name, played in agents.items()]
        for process, text in [
            (stack.operator, OPERATOR_STARTED),
            *((a, AGENT_STARTED) for a in started),
        ]:
            await until_logged(process, text, PROCESS_START_SECONDS)
        watcher.start()
        yield Run(
            url=url, namespace=namespace, prefix=prefix, watcher=watcher, stack=stack, tokens=tokens
        )
    finally:
        await watcher.stop()
        # Nothing is measured after the run: a graceful stop would only cost time (seconds).
        stack.kill()
