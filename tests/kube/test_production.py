"""Run it in production (#13): metrics, probes, graceful shutdown, JSON logs, no leaked secrets.

Each test runs the real operator process (`fogctl run`) with the production flags against the
session's kube-apiserver and a database of its own, and reads its endpoints over HTTP as
Prometheus and the kubelet would.
"""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Kubectl, Stack, wait_for
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL, make_url
from test_operator import database_outage, manifest, ready, start

from controller.sandbox import ports

# An HTTP answer from a local endpoint takes milliseconds; this long means it hangs.
HTTP_TIMEOUT_SECONDS = 10


def serve(stack: Stack, *extra: str) -> str:
    """Make the stack's operator serve metrics and probes on one free port; its base URL."""
    port = ports.free_port()
    address = f"127.0.0.1:{port}"
    stack.operator.args += [
        "--metrics-bind-address",
        address,
        "--health-probe-bind-address",
        address,
        *extra,
    ]
    return f"http://{address}"


def http(url: str) -> tuple[int, str]:
    """Status and body of a GET; (0, reason) when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """Every sample of one scrape of /metrics, by name and sorted labels."""
    status, body = http(f"{base}/metrics")
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, /, **labels: str) -> float:
    """One sample's value, 0 if the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


CTL = {"controller": "fogdeployment"}
QUEUE = {"name": "fogdeployment"}


def test_metrics_move_with_the_work(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    base = serve(stack)
    start(stack, nodes=2)  # 4 CPUs each: 8 replicas of 1 CPU fit, 9 do not
    wait_for("/metrics answering", lambda: http(f"{base}/metrics")[0] == 200)
    before = scrape(base)
    assert metric(before, "leader_election_master_status", name="fog-controller") == 1
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=3, cpu=1))
    wait_for("Ready", lambda: ready(kubectl, namespace, "web", 3))

    def settled() -> Samples | None:
        samples = scrape(base)
        counted = metric(samples, "fog_replicas", status="running") == 3
        reported = metric(samples, "fog_report_to_status_seconds_count") >= 1
        return samples if counted and reported else None

    after = wait_for("3 running replicas counted and a report timed", settled)
    success = metric(after, "controller_runtime_reconcile_total", result="success", **CTL)
    assert success > metric(before, "controller_runtime_reconcile_total", result="success", **CTL)
    assert metric(after, "controller_runtime_reconcile_time_seconds_count", **CTL) >= success
    assert metric(after, "workqueue_adds_total", **QUEUE) >= success
    assert metric(after, "workqueue_queue_duration_seconds_count", **QUEUE) >= success
    assert metric(after, "workqueue_work_duration_seconds_count", **QUEUE) >= success
    assert metric(after, "fog_nodes", status="online") == 2
    assert metric(after, "fog_nodes", status="offline") == 0
    assert metric(after, "fog_database_round_trip_seconds_count") >= 1
    assert metric(after, "fog_placement_failures_total", reason="InsufficientCapacity") == 0
    # The collector was tuned at start (operator/garbage.py): reconciles, watch events and
    # scrapes brought at most a young collection or two, not one every 700 allocations.
    young = {"generation": "0"}
    collections = metric(after, "python_gc_collections_total", **young)
    assert collections - metric(before, "python_gc_collections_total", **young) <= 2

    # One replica more than the nodes hold: placement fails, by reason, and is counted.
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=9")
    failed = wait_for(
        "a placement failure counted",
        lambda: metric(scrape(base), "fog_placement_failures_total", reason="InsufficientCapacity"),
    )
    assert failed >= 1
    wait_for(
        "8 running replicas counted",
        lambda: metric(scrape(base), "fog_replicas", status="running") == 8,
    )


def test_readyz_fails_while_the_database_is_cut_off_and_recovers(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    base = serve(stack)
    start(stack, nodes=1)
    wait_for("/readyz ready", lambda: http(f"{base}/readyz")[0] == 200)
    with database_outage(stack):
        _, body = wait_for(
            "/readyz failing", lambda: (answer := http(f"{base}/readyz"))[0] == 500 and answer
        )
        assert body.startswith("database: ")
        # Alive all the same: restarting the pod would not bring the database back.
        assert http(f"{base}/healthz")[0] == 200
    wait_for("/readyz ready again", lambda: http(f"{base}/readyz") == (200, "ok\n"))
    assert stack.operator.running()


def test_healthz_fails_when_a_loop_crash_loops(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    kopf_liveness = f"http://127.0.0.1:{ports.free_port()}/healthz"
    # The node check runs every second; kopf's own endpoint (--liveness) is kept, and agrees.
    base = serve(stack, "--node-grace-seconds", "4", "--liveness", kopf_liveness)
    # The node check fails at each of its first 9 progress reports: a crash loop, since the
    # supervisor calls 5 failures in a row without progress one.
    stack.operator.env["FOG_FAILPOINTS"] = "node-lifecycle=9"
    start(stack, nodes=1)
    wait_for("/healthz alive", lambda: http(f"{base}/healthz")[0] == 200)
    wait_for("kopf's --liveness alive", lambda: http(kopf_liveness)[0] == 200)
    _, body = wait_for(
        "/healthz failing", lambda: (answer := http(f"{base}/healthz"))[0] == 500 and answer
    )
    assert "node-lifecycle: failed 5 times in a row" in body
    assert "InjectedFaultError" in body
    wait_for("kopf's --liveness failing too", lambda: http(kopf_liveness)[0] == 500)
    assert http(f"{base}/readyz")[0] == 200  # its dependencies are fine: only a restart helps


def test_sigterm_during_work_finishes_what_runs_and_exits_0(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=3)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("first", replicas=2))
    wait_for("Ready", lambda: ready(kubectl, namespace, "first", 2))
    burst = "---\n".join(manifest(f"app-{index}", replicas=3, cpu=0.5) for index in range(30))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=burst)
    # Work is in flight: the reconciles of the burst have begun (a row exists) ...
    wait_for("the burst being reconciled", lambda: _rows(stack) > 1)
    stack.operator.signal(signal.SIGTERM)
    code = wait_for(
        "the operator to exit", lambda: (c := stack.operator.exit_code()) is not None and (c,)
    )
    assert code == (0,)
    log = stack.operator.log.read_text()
    assert "Signal SIGTERM is received" in log
    assert "Traceback" not in log
    # Nothing of ours outlived the cleanup for kopf to wait 5 s on (its own debug line).
    assert "Hung tasks stopping is skipped" in log
    stack.agent.stop()
    check = stack.fogctl("check", "--kube", "-n", namespace)
    assert check.returncode == 0, check.stdout + check.stderr


def _rows(stack: Stack) -> int:
    """Deployments recorded so far."""
    url = stack.env["FOG_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(url) as connection:
        row = connection.execute(b"SELECT count(*) FROM deployments").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def secret_url(stack: Stack) -> Iterator[URL]:
    """The stack's database through a role of its own with a password (the secret to hunt)."""
    password = f"pw-{uuid.uuid4().hex}"
    role = f"fog_{uuid.uuid4().hex[:8]}"
    plain = make_url(stack.env["FOG_DATABASE_URL"])
    admin = plain.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        # A superuser so that it owns nothing yet may do all the operator does.
        connection.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'".encode())
    try:
        yield plain.set(username=role, password=password)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            connection.execute(f"DROP ROLE IF EXISTS {role}".encode())


def test_the_database_password_appears_in_no_log_event_metric_or_command_line(
    stack: Stack, kubectl: Kubectl, namespace: str, secret_url: URL
) -> None:
    password = str(secret_url.password)
    base = serve(stack, "--log-format", "json")
    stack.operator.env["FOG_DATABASE_URL"] = secret_url.render_as_string(hide_password=False)
    start(stack, nodes=1)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=1))
    wait_for("Ready", lambda: ready(kubectl, namespace, "web", 1))
    # Errors are where secrets leak: the database refuses and drops connections for a while.
    with database_outage(stack):
        kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=2")
        wait_for("/readyz failing", lambda: http(f"{base}/readyz")[0] == 500)
        wait_for(
            "the outage in the log", lambda: "DatabaseUnavailable" in stack.operator.log.read_text()
        )
    wait_for("Ready with 2", lambda: ready(kubectl, namespace, "web", 2), 120)
    places: dict[str, str] = {
        "log": stack.operator.log.read_text(),
        "events": kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "object": kubectl("get", "fogdeploy", "-n", namespace, "-o", "json").stdout,
        "metrics": http(f"{base}/metrics")[1],
        "probes": http(f"{base}/readyz")[1] + http(f"{base}/healthz")[1],
        "command line": Path(f"/proc/{stack.operator.pid}/cmdline").read_bytes().decode(),
    }
    assert {where: password in text for where, text in places.items()} == dict.fromkeys(
        places, False
    )
    # The JSON log is one object per line; reconcile lines name their object and reconcile.
    lines = [json.loads(line) for line in places["log"].splitlines() if line.startswith("{")]
    assert len(lines) == len(places["log"].splitlines())
    about_web: list[dict[str, Any]] = [
        line for line in lines if line.get("object") == f"{namespace}/web"
    ]
    assert any("reconcileID" in line and line.get("reason") for line in about_web)


def test_a_taken_port_stops_the_operator_with_one_line(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack.operator.args += ["--metrics-bind-address", f"127.0.0.1:{port}"]
        stack.operator.start()
        code = wait_for(
            "the operator to exit", lambda: (c := stack.operator.exit_code()) is not None and (c,)
        )
    assert code == (1,)
    last = stack.operator.log.read_text().splitlines()[-1]
    assert last.startswith("fogctl: error: cannot serve metrics and probes: ")
    assert str(port) in last


def test_a_restart_reconciles_every_object_in_full_batches(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    """The operator lists every object before its workers start (issue 15 item 5).

    kopf's watch hands its listing over one object at a time, and a restart's first pass used
    to go in batches of the few keys queued when a worker came back: 6.4 keys a batch over
    3,000 objects. Listed in one piece first, 40 objects go in ceil(40 / 32) = 2 batches.
    """
    objects = 40
    base = serve(stack)
    start(stack, nodes=1)
    names = [f"app-{index:02d}" for index in range(objects)]
    stream = "---\n".join(manifest(name, replicas=0) for name in names)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=stream)
    for name in names:
        wait_for(f"{name} Ready", lambda name=name: ready(kubectl, namespace, name, 0))
    stack.operator.stop()
    stack.operator.start()

    def first_pass() -> Samples | None:
        status, _ = http(f"{base}/metrics")
        if status != 200:
            return None
        samples = scrape(base)
        reconciled = sum(
            value
            for (name, _), value in samples.items()
            if name == "controller_runtime_reconcile_total"
        )
        queued = metric(samples, "workqueue_depth", **QUEUE)
        return samples if reconciled >= objects and queued == 0 else None

    after = wait_for("every object reconciled once after the restart", first_pass)
    keys = metric(after, "fog_reconcile_batch_keys_sum")
    assert keys >= objects
    # Two full batches; a third for a key that an agent's heartbeat queued meanwhile.
    assert metric(after, "fog_reconcile_batch_keys_count") <= 3
    log = stack.operator.log.read_text()
    assert f"queued {objects} FogDeployments for a first pass before the workers start" in log
    # kopf's watch lists them too, on its own schedule: the metric says when that is over.
    wait_for(
        "kopf's listing handed over",
        lambda: metric(scrape(base), "fog_watch_events_total", type="listed") >= objects,
    )
