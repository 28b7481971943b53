"""The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`, as controller-runtime's.

`--metrics-bind-address` serves `/metrics` (Prometheus text format); `--health-probe-bind-address`
serves `/healthz` (liveness: 500 while a control loop is stuck or crash-looping) and `/readyz`
(readiness: 500 while the database or the API server does not answer). One aiohttp server
when both addresses are the same, two otherwise; aiohttp comes with kopf and the API client.
A failing probe's body names every problem, one per line, so `kubectl describe pod` (which
shows the body) says why.

Nothing here does I/O beyond answering: the probes and the gauges read what the health loop
last found (health.py), so a scrape or a probe costs the same at any scale of the database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from controller.model.addresses import Address
from controller.operator.health import Health
from controller.operator.metrics import Metrics

logger = logging.getLogger(__name__)

# Prometheus's text exposition format, version 0.0.4 (what prometheus-client writes).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _probe(problems: Callable[[], list[str]]) -> Handler:
    """A probe handler: 200 `ok`, or 500 with one line per problem."""

    async def answer(_: web.Request) -> web.Response:
        found = problems()
        if found:
            return web.Response(status=500, text="".join(f"{line}\n" for line in found))
        return web.Response(text="ok\n")

    return answer


class Endpoints:
    """The HTTP servers; `start` listens, `stop` closes."""

    def __init__(self, *, metrics: Metrics, health: Health) -> None:
        self._metrics = metrics
        self._health = health
        self._runners: list[web.AppRunner] = []

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    def _routes(self, *, metrics: bool, probes: bool) -> list[web.RouteDef]:
        routes = []
        if metrics:
            routes.append(web.get("/metrics", self._serve_metrics))
        if probes:
            routes.append(web.get("/healthz", _probe(self._health.not_live)))
            routes.append(web.get("/readyz", _probe(self._health.not_ready)))
        return routes

    async def start(self, *, metrics: Address | None, probes: Address | None) -> None:
        """Listen on each address given (once, if they are the same)."""
        if metrics is not None and metrics == probes:
            await self._listen(metrics, self._routes(metrics=True, probes=True))
            return
        if metrics is not None:
            await self._listen(metrics, self._routes(metrics=True, probes=False))
        if probes is not None:
            await self._listen(probes, self._routes(metrics=False, probes=True))

    async def _listen(self, address: Address, routes: list[web.RouteDef]) -> None:
        app = web.Application()
        app.add_routes(routes)
        # No access log: a probe every few seconds would drown the operator's own lines.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, address.host or None, address.port).start()
        logger.info("serving %s on %s", ", ".join(str(r.path) for r in routes), address)

    async def stop(self) -> None:
        """Stop listening."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
