"""Prometheus metrics of the agent API (`fogctl serve-agents --metrics-bind-address`).

* `fog_agent_api_requests_total{route,code}`: every answered request and stream op;
* `fog_agent_api_refused_total{reason}`: what was refused and why: `unauthenticated` (no or
  unknown token, 401), `forbidden` (another node's replica, a move off the state machine,
  403), `rate_limited` (429), `too_large` (413), `invalid` (400). A climbing `forbidden` is an
  agent bug or an intruder; alert on it (deploy/monitoring);
* `fog_agent_api_stream_nodes`: nodes currently connected over streams;
* `fog_agent_api_request_seconds{route}`: time to answer, long-polls excluded.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Reasons of `fog_agent_api_refused_total`.
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
INVALID = "invalid"
# A request is a lookup and one short transaction: milliseconds; a second is an outage.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AgentApiMetrics:
    """Every metric of the agent API, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `_created` series, as for the operator's metrics.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self.requests = Counter(
            "fog_agent_api_requests_total",
            "Requests and stream ops answered",
            ["route", "code"],
            registry=r,
        )
        self.refused = Counter(
            "fog_agent_api_refused_total",
            "Requests and stream ops refused, by reason",
            ["reason"],
            registry=r,
        )
        self.stream_nodes = Gauge(
            "fog_agent_api_stream_nodes", "Nodes connected over streams", registry=r
        )
        self.request_seconds = Histogram(
            "fog_agent_api_request_seconds",
            "Time to answer a request or stream op (long-polls excluded)",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return prometheus_client.generate_latest(self.registry)
