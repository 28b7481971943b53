"""The agent API's HTTP routes (`/v1/...`), one node per request, bearer-token authenticated.

Each handler parses, asks the service (service.py), and answers; `docs/agent-openapi.yaml`
describes them and tests/agentapi checks the two agree. Refusals carry a JSON body
`{"error": ..., "message": ...}`, are counted by reason, and leave nothing in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from controller.agent.wire import HealthBatchIn, ReportsIn, UsageBatchIn, assignment_out, problem
from controller.agentapi import metrics as m
from controller.agentapi.events import Events, Watcher
from controller.agentapi.limits import RateLimiter
from controller.agentapi.metrics import AgentApiMetrics
from controller.agentapi.service import (
    AgentService,
    Item,
    ReportRefusedError,
    UnauthenticatedError,
    needs_action,
    refused_items,
)
from controller.db.credentials import Issued
from controller.db.errors import DatabaseUnavailableError
from controller.model.credentials import TokenKind, digest, kind_of

# A request body is a report batch at most: 10,000 reports of ~300 bytes fit in 4 MiB, and
# nothing larger is read into memory (aiohttp answers 413 beyond it).
MAX_BODY_BYTES = 4 * 1024 * 1024
# The longest long-poll: short enough for load balancers' idle timeouts (60 s is common), long
# enough that an idle node costs one request a minute.
MAX_WAIT_SECONDS = 55.0

SERVICE: web.AppKey[AgentService] = web.AppKey("service", AgentService)
EVENTS: web.AppKey[Events] = web.AppKey("events", Events)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)
# Failed authentications per client address (limits.py says why).
FAILURES: web.AppKey[RateLimiter] = web.AppKey("failures", RateLimiter)
METRICS: web.AppKey[AgentApiMetrics] = web.AppKey("metrics", AgentApiMetrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = TypeVar("Body", bound=BaseModel)


def refusal(status: int, error: str, message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error with a JSON body, ready to raise."""
    body = json.dumps({"error": error, "message": message, **extra})
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        413: web.HTTPRequestEntityTooLarge,
        429: web.HTTPTooManyRequests,
        503: web.HTTPServiceUnavailable,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="fog-agents"'} if status == 401 else None
    if status == 413:
        return web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY_BYTES, actual_size=0, text=body, content_type="application/json"
        )
    return kinds[status](text=body, content_type="application/json", headers=headers)


_REASONS = {
    400: m.INVALID,
    401: m.UNAUTHENTICATED,
    403: m.FORBIDDEN,
    413: m.TOO_LARGE,
    429: m.RATE_LIMITED,
}


@web.middleware
async def measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route and code, refusals by reason; time the short ones."""
    metrics = request.app[METRICS]
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "other"
    )
    started = time.perf_counter()
    code = 500
    failures, client = request.app[FAILURES], client_key(request)
    try:
        if failures.exhausted(client):
            raise refusal(429, "rate_limited", "too many failed authentications from this address")
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPRequestEntityTooLarge as exc:
        code = exc.status
        if exc.content_type == "application/json":
            raise
        # aiohttp's own answer when reading a body beyond client_max_size is plain text.
        raise refusal(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes") from None
    except web.HTTPException as exc:
        code = exc.status
        raise
    except UnauthenticatedError:
        code = 401
        raise refusal(401, "unauthenticated", "unknown or revoked node token") from None
    except DatabaseUnavailableError as exc:
        code = 503
        raise refusal(503, "unavailable", f"database unavailable, retry: {exc}") from None
    finally:
        if code == 401:
            failures.allow(client)
        metrics.requests.labels(route, str(code)).inc()
        if code in _REASONS:
            metrics.refused.labels(_REASONS[code]).inc()
        if route != "/v1/stream" and "wait" not in request.query:
            metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


def client_key(request: web.Request) -> bytes:
    """Whom failed authentications are charged to: the peer address.

    Not X-Forwarded-For, which any client can write.
    """
    return (request.remote or "unknown").encode()


def bearer(request: web.Request, kind: TokenKind) -> str:
    """The request's token of `kind`, rate-limited; 401 or 429 otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or kind_of(token) is not kind:
        raise refusal(
            401,
            "unauthenticated",
            f"an Authorization: Bearer header with a {kind} token is required",
        )
    wait = request.app[LIMITER].allow(digest(token))
    if wait:
        error = refusal(
            429, "rate_limited", f"too many requests for this node: retry in {wait:.1f} s"
        )
        error.headers["Retry-After"] = str(max(1, round(wait)))
        raise error
    return token


def _issued(issued: Issued | None, kind: TokenKind) -> web.Response:
    if issued is None:
        raise refusal(401, "unauthenticated", f"unknown, used or expired {kind} token")
    return web.json_response({"node": issued.identity.node, "token": issued.token})


async def exchange(request: web.Request) -> web.Response:
    """`POST /v1/credentials/exchange`: a bootstrap token for the node's own token (once)."""
    token = bearer(request, TokenKind.BOOTSTRAP)
    return _issued(await request.app[SERVICE].exchange(token), TokenKind.BOOTSTRAP)


async def rotate(request: web.Request) -> web.Response:
    """`POST /v1/credentials/rotate`: a new node token; the one presented stops working."""
    token = bearer(request, TokenKind.NODE)
    return _issued(await request.app[SERVICE].rotate(token), TokenKind.NODE)


async def heartbeat(request: web.Request) -> web.Response:
    """`POST /v1/heartbeat`: the node is alive (its lease is renewed)."""
    token = bearer(request, TokenKind.NODE)
    await request.app[SERVICE].heartbeat([digest(token)])
    return web.Response(status=204)


def _wait_seconds(request: web.Request) -> float:
    text = request.query.get("wait", "0")
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise refusal(
            400, "invalid", f"wait: seconds from 0 to {MAX_WAIT_SECONDS:g}, got {text!r:.20}"
        )
    return wait


async def assignments(request: web.Request) -> web.Response:
    """`GET /v1/assignments[?wait=S]`: the node's complete list.

    With `wait`, a long-poll: answered at once if a replica waits for the agent (to start or to
    stop), else when the node's list changes or after `wait` seconds, whichever comes first.
    """
    token = bearer(request, TokenKind.NODE)
    wait = _wait_seconds(request)
    service, events, key = request.app[SERVICE], request.app[EVENTS], digest(token)
    watcher = Watcher()
    watcher.take()  # only what happens from now on wakes this poll
    # The node of a token seen before is watched before the first read, so that a change
    # committed between that read and the wait still wakes it.
    known = events.node_of(key)
    with events.watching(watcher, [known] if known else [], [key]):
        lists = await service.assignments([key])
        if not lists.identities:
            raise UnauthenticatedError
        node_id = lists.identities[key].node_id
        events.remember(key, node_id)
        if wait and not needs_action(lists.by_node):
            events.add(watcher, [node_id], [])
            # asyncio.timeout, not wait_for, which in Python 3.11 can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await watcher.wake.wait()
            events.forget(watcher, [node_id], [])
            lists = await service.assignments([key])
            if not lists.identities:
                raise UnauthenticatedError
    ((node, items),) = lists.by_node.items()
    return web.json_response(
        {"node": node, "assignments": [assignment_out(item) for item in items]}
    )


async def reports(request: web.Request) -> web.Response:
    """`POST /v1/reports`: a batch of status changes, written all or none."""
    body = await _body(request, ReportsIn)
    items = [item.to_report() for item in body.reports]
    return await _write(request, items, "reports", request.app[SERVICE].report)


async def usage(request: web.Request) -> web.Response:
    """`POST /v1/usage`: a batch of usage samples of running replicas, recorded all or none."""
    body = await _body(request, UsageBatchIn)
    items = [item.to_sample() for item in body.samples]
    return await _write(request, items, "samples", request.app[SERVICE].usage)


async def health(request: web.Request) -> web.Response:
    """`POST /v1/health`: a batch of health changes of running replicas, recorded all or none."""
    body = await _body(request, HealthBatchIn)
    items = [item.to_health() for item in body.reports]
    return await _write(request, items, "health reports", request.app[SERVICE].health)


async def _body(request: web.Request, model: type[Body]) -> Body:
    """The request body as `model`, after the token is checked; 400 naming the bad field."""
    request["token"] = bearer(request, TokenKind.NODE)
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise refusal(400, "invalid", problem(exc)) from None


async def _write(
    request: web.Request,
    items: list[Item],
    noun: str,
    write: Callable[[list[bytes], list[Item]], Awaitable[int]],
) -> web.Response:
    """Write a batch for the token's node; 403 listing every refused item, nothing written."""
    try:
        accepted = await write([digest(request["token"])], items)
    except ReportRefusedError as exc:
        raise refusal(
            403,
            "forbidden",
            f"{len(exc.refused)} of {len(items)} {noun} refused; nothing was written",
            refused=refused_items(exc.refused),
        ) from None
    return web.json_response({"accepted": accepted})
