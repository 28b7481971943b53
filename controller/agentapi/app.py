"""The agent API server: routes, stream, probes and metrics, and how it starts and stops.

Stateless: every request is decided against the database, so any number of replicas can run
behind a Service (deploy/agent-api.yaml). Each process holds one small connection pool and one
LISTEN connection, however many agents it serves; agents hold no database credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from sqlalchemy.engine import URL

from controller.agentapi.events import Events
from controller.agentapi.limits import (
    FAILED_AUTH_BURST,
    FAILED_AUTH_RATE_PER_SECOND,
    RateLimiter,
)
from controller.agentapi.metrics import AgentApiMetrics
from controller.agentapi.routes import (
    EVENTS,
    FAILURES,
    LIMITER,
    MAX_BODY_BYTES,
    METRICS,
    SERVICE,
    assignments,
    exchange,
    health,
    heartbeat,
    measured,
    reports,
    rotate,
    usage,
)
from controller.agentapi.service import AgentService
from controller.agentapi.stream import stream
from controller.db import engine as db_engine
from controller.model.addresses import Address

logger = logging.getLogger(__name__)

# Prometheus's text exposition format, version 0.0.4 (what prometheus-client writes).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Requests in flight finish within this on SIGTERM before the server closes: a report is one
# short transaction; long-polls and streams are cut and their agents reconnect elsewhere.
SHUTDOWN_GRACE_SECONDS = 5.0


def build(service: AgentService, events: Events, metrics: AgentApiMetrics) -> web.Application:
    """The application with every `/v1` route and the probes."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[measured])
    app[SERVICE] = service
    app[EVENTS] = events
    app[LIMITER] = RateLimiter()
    app[FAILURES] = RateLimiter(rate=FAILED_AUTH_RATE_PER_SECOND, burst=FAILED_AUTH_BURST)
    app[METRICS] = metrics

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        # Not ready while the LISTEN connection is down: streams would miss placements.
        if not events.listening:
            return web.Response(status=500, text="not listening for database notifications\n")
        return web.Response(text="ok\n")

    app.add_routes(
        [
            web.post("/v1/credentials/exchange", exchange),
            web.post("/v1/credentials/rotate", rotate),
            web.post("/v1/heartbeat", heartbeat),
            web.get("/v1/assignments", assignments),
            web.post("/v1/reports", reports),
            web.post("/v1/usage", usage),
            web.post("/v1/health", health),
            web.get("/v1/stream", stream),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    return app


async def _listen(app: web.Application, address: Address) -> web.AppRunner:
    # No access log: thousands of heartbeats a second would drown every other line.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, address.host or None, address.port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def _metrics_app(metrics: AgentApiMetrics) -> web.Application:
    async def serve_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    app = web.Application()
    app.add_routes([web.get("/metrics", serve_metrics)])
    return app


async def serve(
    url: URL, *, listen: Address, metrics_address: Address | None, stop: asyncio.Event
) -> None:
    """Serve agents on `listen` (and metrics) until `stop` is set.

    OSError if an address cannot be listened on.
    """
    engine = db_engine.make_engine(url, application_name="fog-agent-api")
    events = Events(url)
    metrics = AgentApiMetrics()
    listening = asyncio.create_task(events.run(), name="agent-api-listen")
    runners: list[web.AppRunner] = []
    try:
        runners.append(
            await _listen(
                build(AgentService(db_engine.make_sessions(engine)), events, metrics), listen
            )
        )
        logger.info("serving agents on %s", listen)
        if metrics_address is not None:
            runners.append(await _listen(_metrics_app(metrics), metrics_address))
            logger.info("serving /metrics on %s", metrics_address)
        await stop.wait()
        logger.info("stopping: finishing requests in flight")
    finally:
        for runner in runners:
            await runner.cleanup()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await engine.dispose()
