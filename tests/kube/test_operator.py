"""End to end: kubectl -> real kube-apiserver -> the operator (kopf) -> real Postgres -> agent.

Nothing is mocked: each test has its own namespace, its own database, its own `fogctl run`
watching that namespace and a simulated agent, and looks at the results the way a user does
(kubectl, fogctl) plus straight at the database.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml
from conftest import Kubectl, Stack, wait_for

from controller.sandbox import harness

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def manifest(
    name: str,
    replicas: int = 3,
    image: str = "app:1",
    cpu: float = 0.5,
    *,
    namespace: str | None = None,
    memory_mb: int = 512,
    storage_gb: int | None = 1,
    **spec: Any,
) -> str:
    """A FogDeployment as the end-to-end tests apply it; `spec` adds fields (healthCheck, ...).

    Without `namespace` it lands in the namespace `kubectl apply -n` names.
    """
    resources: dict[str, Any] = {"cpuCores": cpu, "memoryMB": memory_mb}
    if storage_gb is not None:
        resources["storageGB"] = storage_gb
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return yaml.safe_dump(
        {
            "apiVersion": "fogcompute.io/v1alpha1",
            "kind": "FogDeployment",
            "metadata": metadata,
            "spec": {"image": image, "replicas": replicas, "resources": resources, **spec},
        }
    )


def get(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", "-n", namespace, f"fogdeploy/{name}", "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def ready(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
    """The object once Ready=True for its current generation with `replicas` running."""
    obj = get(kubectl, namespace, name)
    if obj is None:
        return None
    status = obj.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    ready_condition = conditions.get("Ready", {})
    if (
        ready_condition.get("status") == "True"
        and ready_condition.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("readyReplicas") == replicas
    ):
        return obj
    return None


def sql(stack: Stack, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.env["FOG_DATABASE_URL"].replace("+psycopg", "")) as connection:
        return connection.execute(query.encode(), params).fetchall()


def replica_counts(stack: Stack, name: str) -> dict[str, int]:
    rows = sql(
        stack,
        "SELECT r.status::text, count(*) FROM deployment_replicas r"
        " JOIN deployments d ON d.id = r.deployment_id"
        " WHERE d.name = %s AND d.deleted_at IS NULL GROUP BY r.status",
        name,
    )
    return dict(rows)  # type: ignore[arg-type]


def replicas_of_deployment(stack: Stack, deployment_id: Any) -> dict[str, int]:
    """Replica counts by status of one deployment row, deleted or not."""
    rows = sql(
        stack,
        "SELECT status::text, count(*) FROM deployment_replicas WHERE deployment_id = %s"
        " GROUP BY status",
        deployment_id,
    )
    return dict(rows)  # type: ignore[arg-type]


def most_out_of_service(stack: Stack, desired: int) -> int | None:
    """The most replicas of the desired count not running at once, once all had run.

    Replays the replica history in the order it was written (clock_timestamp at the insert, so
    a reconcile that acted on an agent's report is written after it); the count starts when
    `desired` replicas first ran, so the ramp-up of the first apply is not counted. None if
    that never happened.
    """
    running: set[Any] = set()
    worst: int | None = None
    for replica, status in sql(
        stack,
        "SELECT replica_id, new_status::text FROM replica_status_history ORDER BY changed_at, id",
    ):
        if status == "running":
            running.add(replica)
        else:
            running.discard(replica)
        if worst is not None or len(running) >= desired:
            worst = max(worst or 0, desired - min(desired, len(running)))
    return worst


def start(stack: Stack, nodes: int = 3) -> None:
    for index in range(nodes):
        stack.register_node(f"edge-{index + 1}")
    stack.operator.start()
    stack.agent.start()


def test_apply_to_ready_scale_up_down_and_to_zero(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=3))
    kubectl("wait", "-n", namespace, "fogdeploy/web", "--for=condition=Ready", "--timeout=60s")
    obj = wait_for("web Ready with 3", lambda: ready(kubectl, namespace, "web", 3))
    assert obj["status"]["phase"] == "Running"
    assert obj["status"]["ready"] == "3/3"
    assert replica_counts(stack, "web") == {"running": 3}
    # Our finalizer guards the soft delete; no kopf diff-base or progress annotation is written.
    assert obj["metadata"]["finalizers"] == ["fogcompute.io/finalizer"]
    assert not [key for key in obj["metadata"].get("annotations", {}) if "fogcompute.io" in key]

    printed = kubectl("get", "-n", namespace, "fogdeploy", "web").stdout.split()
    assert printed[:7] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "PHASE", "IMAGE", "AGE"]
    assert printed[7:13] == ["web", "3/3", "3", "3", "Running", "app:1"]

    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=5")
    wait_for("scale up to 5", lambda: ready(kubectl, namespace, "web", 5))
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=2")
    wait_for("scale down to 2", lambda: ready(kubectl, namespace, "web", 2))
    assert replica_counts(stack, "web") == {"running": 2, "stopped": 3}

    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=0")
    stopped = wait_for(
        "Stopped",
        lambda: (
            (obj := get(kubectl, namespace, "web"))
            and obj["status"].get("phase") == "Stopped"
            and obj
        ),
    )
    assert stopped["status"]["replicas"] == 0
    wait_for("replicas stopped", lambda: replica_counts(stack, "web") == {"stopped": 5})
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = {item["reason"] for item in json.loads(events)["items"]}
    assert {"ScaledUp", "ScaledDown", "Ready"} <= reasons


def test_image_change_rolls(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    start(stack)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=4, image="app:1"))
    first = wait_for("v1 Ready", lambda: ready(kubectl, namespace, "web", 4))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=4, image="app:2"))
    second = wait_for(
        "v2 Ready",
        lambda: (
            (obj := ready(kubectl, namespace, "web", 4))
            and obj["status"]["revision"] != first["status"]["revision"]
            and obj
        ),
    )
    assert second["status"]["updatedReplicas"] == 4
    rows = sql(
        stack,
        "SELECT r.status::text, d.container_image FROM deployment_replicas r"
        " JOIN deployments d ON d.id = r.deployment_id WHERE r.status = 'running'",
    )
    assert len(rows) == 4
    # Never more than max(1, 25% of 4) = 1 replica unavailable during the rollout ...
    worst = most_out_of_service(stack, desired=4)
    assert worst is not None
    assert worst <= 1
    # ... and each of the 4 old replicas was replaced by the rollout.
    in_service = sql(
        stack,
        "SELECT count(*) FROM replica_status_history WHERE new_status = 'stopping'"
        " AND reason = 'RollingUpdate'",
    )
    assert in_service == [(4,)]


def test_delete_soft_deletes_keeps_history_and_name_is_reusable(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=2))
    wait_for("Ready", lambda: ready(kubectl, namespace, "web", 2))
    kubectl("delete", "-n", namespace, "fogdeploy/web", "--timeout=60s")
    assert get(kubectl, namespace, "web") is None
    rows = sql(stack, "SELECT id, status::text, deleted_at IS NOT NULL FROM deployments")
    assert [row[1:] for row in rows] == [("deleted", True)]
    # The soft delete asks the agent to stop them; the agent reports them stopped.
    deleted = rows[0][0]
    wait_for("replicas stopped", lambda: replicas_of_deployment(stack, deleted) == {"stopped": 2})
    history = stack.fogctl("history", f"{namespace}/web", "-o", "json")
    assert history.returncode == 0, history.stderr
    steps = [(e["replica"], e["new_status"]) for e in json.loads(history.stdout)["history"]]
    assert (None, "deleted") in steps
    assert steps.count(("web-0", "stopped")) == 1

    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=1))
    wait_for("re-created Ready", lambda: ready(kubectl, namespace, "web", 1))
    assert sorted(sql(stack, "SELECT status::text FROM deployments")) == [
        ("deleted",),
        ("running",),
    ]


def test_same_name_in_two_namespaces_gives_two_deployments(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    other = f"{namespace}-b"
    kubectl("create", "namespace", other)
    try:
        stack.operator.args += ["-n", other]
        start(stack)
        for ns in (namespace, other):
            kubectl("apply", "-n", ns, "-f", "-", stdin=manifest("web", replicas=1))
        for ns in (namespace, other):
            wait_for(f"web in {ns}", lambda ns=ns: ready(kubectl, ns, "web", 1))
        rows = sql(
            stack,
            "SELECT u.name, d.name FROM deployments d JOIN users u ON u.id = d.user_id ORDER BY 1",
        )
        assert rows == [(namespace, "web"), (other, "web")]
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_insufficient_capacity_then_recovery(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=1)  # 4 CPU: room for 2 replicas of 2 CPU
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("big", replicas=3, cpu=2))

    def stalled() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "big")
        conditions = {c["type"]: c for c in (obj or {}).get("status", {}).get("conditions", [])}
        stall = conditions.get("Stalled", {})
        return stall if stall.get("reason") == "InsufficientCapacity" else None

    condition = wait_for("InsufficientCapacity", stalled)
    assert condition["status"] == "True"
    assert "2 of 3 replicas placed" in condition["message"]
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    warnings = [e for e in events["items"] if e["reason"] == "InsufficientCapacity"]
    assert warnings
    assert warnings[0]["type"] == "Warning"

    stack.register_node("edge-2")
    wait_for("recovered", lambda: ready(kubectl, namespace, "big", 3))


def test_two_deployments_racing_for_one_node_never_overcommit(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=1)  # 4 CPU
    both = manifest("a", replicas=3, cpu=1) + "---\n" + manifest("b", replicas=3, cpu=1)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=both)
    wait_for(
        "4 replicas placed",
        lambda: (
            sql(stack, "SELECT count(*) FROM deployment_replicas WHERE node_id IS NOT NULL")
            == [(4,)]
        ),
    )
    wait_for(
        "2 unplaced",
        lambda: (
            sum(
                (get(kubectl, namespace, n) or {}).get("status", {}).get("unplacedReplicas", 0)
                for n in ("a", "b")
            )
            == 2
        ),
    )
    assert sql(stack, "SELECT allocated_cpu_millicores, cpu_cores FROM nodes") == [(4000, 4.0)]


def test_operator_restarted_mid_way_converges_without_duplicates(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=3))
    wait_for(
        "first replicas", lambda: sql(stack, "SELECT count(*) FROM deployment_replicas") != [(0,)]
    )
    stack.operator.stop()
    kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=6")
    stack.operator.start()
    wait_for("Ready with 6 after restart", lambda: ready(kubectl, namespace, "web", 6))
    assert replica_counts(stack, "web") == {"running": 6}
    assert sql(stack, "SELECT count(*) FROM deployment_replicas") == [(6,)]


def test_invalid_manifests_never_reach_the_database(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    start(stack, nodes=1)
    for path in sorted((MANIFESTS / "invalid").glob("*.yaml")):
        result = kubectl("apply", "-n", namespace, "-f", str(path), check=False)
        assert result.returncode != 0, path.name
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("canary", replicas=1))
    wait_for("canary Ready", lambda: ready(kubectl, namespace, "canary", 1))
    assert sql(stack, "SELECT name FROM deployments") == [("canary",)]


@contextlib.contextmanager
def database_outage(stack: Stack) -> Iterator[None]:
    """The test's database refuses and drops connections for the block, then takes them."""
    harness.allow_connections(stack.env["FOG_DATABASE_URL"], False)
    try:
        yield
    finally:
        harness.allow_connections(stack.env["FOG_DATABASE_URL"], True)


def web_ready_on_one_node(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    start(stack, nodes=1)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=1))
    wait_for("Ready", lambda: ready(kubectl, namespace, "web", 1))


def test_database_outage_is_reported_then_recovered(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    # At the production resync (600 s) on purpose: the outage also drops the operator's LISTEN
    # connection, and an agent report sent before it listens again is lost; only the requeue
    # after a reconnect, not a resync, can bring the status back within the wait below.
    web_ready_on_one_node(stack, kubectl, namespace)
    with database_outage(stack):
        kubectl("scale", "-n", namespace, "fogdeploy/web", "--replicas=2")

        def unavailable() -> dict[str, Any] | None:
            obj = get(kubectl, namespace, "web") or {}
            conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            reconciling = conditions.get("Reconciling", {})
            return reconciling if reconciling.get("reason") == "DatabaseUnavailable" else None

        condition = wait_for("DatabaseUnavailable condition", unavailable)
        assert condition["status"] == "True"
        assert "retrying in" in condition["message"]
        assert stack.operator.running()
    wait_for("Ready with 2 after the outage", lambda: ready(kubectl, namespace, "web", 2), 120)
    assert stack.agent.running()


def test_delete_during_a_database_outage_completes_when_it_is_back(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    web_ready_on_one_node(stack, kubectl, namespace)
    with database_outage(stack):
        kubectl("delete", "-n", namespace, "fogdeploy/web", "--wait=false")
        # kopf records a failed attempt of the delete handler in its progress annotation: the
        # operator tried the soft delete, could not write it, and so kept the finalizer.
        held = wait_for(
            "a failed soft delete",
            lambda: (
                (obj := get(kubectl, namespace, "web"))
                and "fogcompute.io/finalize" in obj["metadata"].get("annotations", {})
                and obj
            ),
        )
        assert held["metadata"]["deletionTimestamp"]
        assert held["metadata"]["finalizers"] == ["fogcompute.io/finalizer"]
        assert stack.operator.running()
    wait_for("the object gone", lambda: get(kubectl, namespace, "web") is None, 120)
    rows = sql(stack, "SELECT id, status::text, deleted_at IS NOT NULL FROM deployments")
    assert [row[1:] for row in rows] == [("deleted", True)]
    wait_for("replica stopped", lambda: replicas_of_deployment(stack, rows[0][0]) == {"stopped": 1})
    history = stack.fogctl("history", f"{namespace}/web", "-o", "json")
    assert history.returncode == 0, history.stderr
    steps = [(e["replica"], e["new_status"]) for e in json.loads(history.stdout)["history"]]
    assert (None, "deleted") in steps
    assert ("web-0", "running") in steps  # the history from before the outage is kept


def test_node_loss_replaces_replicas_and_the_returning_node_runs_nothing_twice(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    for name in ("edge-1", "edge-2", "edge-3"):
        stack.register_node(name)
    # A short grace so that the test takes seconds; how long recovery takes is measured by
    # the benchmark (bench/scenarios.py, node-loss), not asserted here.
    stack.operator.args += ["--node-grace-seconds", "3"]
    stack.operator.start()
    stack.agent_for("steady", ["edge-1", "edge-3"])
    flaky = stack.agent_for("edge-2", ["edge-2"])
    # Registration counts as a heartbeat; the agents start later than that, so a node may
    # go offline before its agent first speaks. Start once all three are heard from.
    wait_for(
        "three nodes heartbeating",
        lambda: (
            sql(
                stack,
                "SELECT count(*) FROM nodes JOIN node_leases ON node_id = id"
                " WHERE status = 'online' AND renewed_at > now() - interval '1 second'",
            )
            == [(3,)]
        ),
    )
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=3))
    wait_for("Ready on three nodes", lambda: ready(kubectl, namespace, "web", 3))
    assert sql(
        stack,
        "SELECT count(DISTINCT node_id) FROM deployment_replicas WHERE status = 'running'",
    ) == [(3,)]
    flaky.signal(signal.SIGUSR1)  # cut edge-2's link
    wait_for(
        "NodeLost",
        lambda: (
            sql(
                stack,
                "SELECT count(*) FROM replica_status_history"
                " WHERE reason = 'NodeLost' AND new_status = 'failed'",
            )
            == [(1,)]
        ),
    )
    wait_for(
        "replacement running elsewhere",
        lambda: (
            sql(
                stack,
                "SELECT n.name FROM deployment_replicas r JOIN nodes n ON n.id = r.node_id"
                " WHERE r.status = 'running' ORDER BY 1",
            )
            in (
                [("edge-1",), ("edge-1",), ("edge-3",)],
                [("edge-1",), ("edge-3",), ("edge-3",)],
            )
        ),
    )
    wait_for("Ready again", lambda: ready(kubectl, namespace, "web", 3))

    flaky.signal(signal.SIGUSR2)  # edge-2 speaks again
    wait_for(
        "edge-2 online",
        lambda: sql(stack, "SELECT status::text FROM nodes WHERE name = 'edge-2'") == [("online",)],
    )
    wait_for("orphan stopped", lambda: "no longer assigned" in flaky.log.read_text())
    assert replica_counts(stack, "web") == {"running": 3, "failed": 1}
    assert sql(
        stack,
        "SELECT count(*) FROM replica_status_history WHERE old_status = 'failed'",
    ) == [(0,)]
    history = json.loads(stack.fogctl("history", f"{namespace}/web", "-o", "json").stdout)
    assert any(e["reason"] == "NodeLost" for e in history["history"])
