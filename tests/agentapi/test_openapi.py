"""docs/agent-openapi.yaml says what the agent API serves, and the server agrees.

A client generated from the document, or an agent written from it, must meet the server it
describes: the same paths and methods (read from the aiohttp application itself), a document
that is valid OpenAPI 3.1, and real answers of a running `fogctl serve-agents` (conftest.py)
that match the response schemas, refusals included; stream messages too.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from conftest import AgentApi, Answer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import async_sessionmaker

from controller.agentapi import app
from controller.agentapi.events import Events
from controller.agentapi.metrics import AgentApiMetrics
from controller.agentapi.service import AgentService

DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "docs" / "agent-openapi.yaml"
DOCUMENT: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text())
# The name the document is known by to the validator, so that its "#/..." references resolve.
BASE = "urn:fog-controller:agent-openapi"
REGISTRY: Registry[Any] = Registry().with_resource(
    BASE, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# A stream message comes within milliseconds; this only bounds a test that would otherwise hang.
RECEIVE_SECONDS = 30.0


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _at(pointer: str) -> Any:
    node: Any = DOCUMENT
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def conforms(value: Any, pointer: str) -> None:
    """Fail unless `value` matches the schema at `pointer` in the document (formats too)."""
    validator = Draft202012Validator(
        {"$ref": f"{BASE}#{pointer}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert errors == [], f"{pointer}: {value!r:.300}"


def answers_as_documented(answer: Answer, method: str, path: str) -> None:
    """Fail unless the document lists this answer's status for the route, with its body."""
    responses = f"/paths/{_escape(path)}/{method.lower()}/responses"
    assert str(answer.status) in _at(responses), f"{method} {path}: {answer.status} undocumented"
    pointer = f"{responses}/{answer.status}"
    if "$ref" in _at(pointer):
        pointer = _at(pointer)["$ref"].removeprefix("#")
    spec = _at(pointer)
    sent = {name.lower() for name in answer.headers}
    for header in spec.get("headers", {}):
        assert header.lower() in sent, f"{method} {path} {answer.status}: no {header} header"
    if "content" not in spec:
        assert answer.body is None, f"{method} {path} {answer.status}: a body not documented"
        return
    conforms(answer.body, f"{pointer}/content/application~1json/schema")


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_the_document_lists_exactly_the_servers_routes() -> None:
    # Construction does no I/O: no session is opened, nobody listens, nothing connects.
    server = app.build(
        AgentService(async_sessionmaker()),
        Events(URL.create("postgresql+psycopg", host="unused.invalid")),
        AgentApiMetrics(),
    )
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in server.router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp answers HEAD for every GET by itself
    }
    documented = {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served


def report(node: str, replica: uuid.UUID, status: str) -> dict[str, object]:
    return {"node": node, "replicaId": str(replica), "status": status, "reason": "test"}


def sample(node: str, replica: uuid.UUID) -> dict[str, object]:
    return {"node": node, "replicaId": str(replica), "cpuCores": 0.25, "memoryMB": 300}


def test_real_answers_match_the_documented_responses(api: AgentApi) -> None:
    bootstrap = api.register("edge-a")
    exchanged = api.call("POST", "/v1/credentials/exchange", token=bootstrap)
    token = exchanged.body["token"]
    other = api.node_token("edge-b")
    mine, theirs = api.place("edge-a", name="web"), api.place("edge-b", name="db")

    def reports(*items: dict[str, object]) -> dict[str, Any]:
        return {"token": token, "body": {"reports": list(items)}}

    running = api.place("edge-a", name="svc", status="running")

    def usage(*items: dict[str, object]) -> dict[str, Any]:
        return {"token": token, "body": {"samples": list(items)}}

    # (method, path, query, call arguments, the status it must get)
    calls: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("POST", "/v1/credentials/exchange", "", {"token": bootstrap}, 401),  # used up
        ("POST", "/v1/heartbeat", "", {"token": token}, 204),
        ("GET", "/v1/assignments", "?wait=0", {"token": token}, 200),
        ("GET", "/v1/assignments", "?wait=soon", {"token": token}, 400),
        ("GET", "/v1/assignments", "", {}, 401),
        ("POST", "/v1/reports", "", reports(report("edge-a", mine, "starting")), 200),
        ("POST", "/v1/reports", "", reports(report("edge-b", theirs, "starting")), 403),
        ("POST", "/v1/reports", "", reports({"node": "edge-a"}), 400),
        ("POST", "/v1/reports", "", {"token": token, "raw": b" " * (5 * 1024 * 1024)}, 413),
        ("POST", "/v1/usage", "", usage(sample("edge-a", running)), 200),
        ("POST", "/v1/usage", "", usage(sample("edge-a", mine)), 403),  # not running
        ("POST", "/v1/usage", "", usage({**sample("edge-a", running), "cpuCores": -1}), 400),
        ("POST", "/v1/credentials/rotate", "", {"token": other}, 200),
    ]
    assert exchanged.status == 200
    answers_as_documented(exchanged, "POST", "/v1/credentials/exchange")
    for method, path, query, arguments, status in calls:
        answer = api.call(method, path + query, **arguments)
        assert answer.status == status, (method, path, query, answer.body)
        answers_as_documented(answer, method, path)
        if status == 200 and path == "/v1/assignments":
            listed = {item["replicaId"] for item in answer.body["assignments"]}
            assert listed == {str(mine), str(running)}
    # Rate limited: once the node's burst is spent, its next request is a documented 429.
    for _ in range(200):
        limited = api.call("POST", "/v1/heartbeat", token=token)
        if limited.status != 204:
            break
    assert limited.status == 429
    answers_as_documented(limited, "POST", "/v1/heartbeat")


def test_probes_answer_as_documented(api: AgentApi) -> None:
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"{api.url}{path}", timeout=10) as response:
            status, kind = response.status, response.headers["Content-Type"]
        media = _at(f"/paths/{_escape(path)}/get/responses/{status}/content")
        assert kind.split(";")[0] in media


async def _next(socket: aiohttp.ClientWebSocketResponse, op: str) -> dict[str, Any]:
    """The next message with this `op`, each one received checked against the document."""
    while True:
        message = await socket.receive_json(timeout=RECEIVE_SECONDS)
        conforms(message, "/components/schemas/StreamMessage")
        if message["op"] == op:
            return message  # type: ignore[no-any-return]


async def test_stream_ops_and_messages_match_the_document(api: AgentApi) -> None:
    token = api.node_token("edge-a")
    replica = api.place("edge-a", name="web")
    ops = [
        {"op": "hello", "tokens": [token, "fogn_" + "x" * 43]},
        {"op": "report", "id": 1, "reports": [report("edge-a", replica, "starting")]},
        {"op": "report", "id": 2, "reports": [report("edge-a", replica, "stopped")]},
        {"op": "heartbeat"},
        {"op": "report", "id": 3, "reports": [report("edge-a", replica, "running")]},
        {"op": "usage", "id": 4, "samples": [sample("edge-a", replica)]},
        {"op": "refresh", "scope": "reported"},
    ]
    for op in ops:
        conforms(op, "/components/schemas/StreamOp")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{api.url}/v1/stream") as socket,
    ):
        await socket.send_str(json.dumps(ops[0]))
        welcome = await _next(socket, "welcome")
        assert (welcome["nodes"], welcome["refused"]) == (["edge-a"], 1)
        pushed = await _next(socket, "assignments")
        assert [item["replicaId"] for item in pushed["assignments"]] == [str(replica)]
        await socket.send_str(json.dumps(ops[1]))
        assert (await _next(socket, "reported"))["accepted"] == 1
        await socket.send_str(json.dumps(ops[2]))
        refused = await _next(socket, "refused")
        assert (refused["id"], refused["error"]) == (2, "forbidden")
        await socket.send_str(json.dumps(ops[3]))
        assert (await _next(socket, "heartbeat"))["renewed"] == 1
        await socket.send_str(json.dumps(ops[4]))
        assert (await _next(socket, "reported"))["accepted"] == 1
        await socket.send_str(json.dumps(ops[5]))
        assert (await _next(socket, "recorded"))["accepted"] == 1
        await socket.send_str(json.dumps(ops[6]))  # edge-a's reports since its list was read
        refreshed = await _next(socket, "assignments")
        assert [item["status"] for item in refreshed["assignments"]] == ["running"]
        await socket.send_str("not json")
        assert (await _next(socket, "refused"))["error"] == "invalid"
        api.fogctl("node", "revoke", "edge-a")
        assert (await _next(socket, "revoked"))["nodes"] == ["edge-a"]
