"""Canaries and automatic revert end to end (issue 16 item 5): the real API server, PostgreSQL,
the operator and a simulated agent whose replicas of `bad:*` images fail after starting and of
`sick:*` images fail their health checks.

One stack serves the module (each test has its own FogDeployment in the module's namespace):
test_rollout_strategies.py's module-scoped fixtures, which start one per module that uses
them. What is checked is what a person sees: the status, `fogctl rollout
status|history|promote`, and the replica rows in PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from conftest import Kubectl, Stack, wait_for
from test_operator import get
from test_rollout_strategies import apply, condition, namespace, rolled_out, stack

__all__ = ["namespace", "stack"]  # the module-scoped fixtures: a stack of this module's own


def images(stack: Stack, name: str) -> dict[tuple[str, str], int]:
    """Replica rows by (revision number, status): which revision runs, as PostgreSQL says."""
    url = stack.env["FOG_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT v.number, r.status::text, count(*)"
            " FROM deployment_replicas r JOIN deployments d ON d.id = r.deployment_id"
            " JOIN deployment_revisions v"
            "  ON v.deployment_id = d.id AND v.hash = r.revision"
            " WHERE d.name = %s AND d.deleted_at IS NULL GROUP BY 1, 2",
            (name,),
        ).fetchall()
    return {(str(number), status): count for number, status, count in rows}


def history(stack: Stack, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = stack.fogctl("rollout", "history", f"{namespace}/{name}", "-o", "json")
    assert listed.returncode == 0, listed
    revisions: list[dict[str, Any]] = json.loads(listed.stdout)["revisions"]
    return revisions


def test_a_failing_canary_is_reverted_automatically(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    strategy = {"canary": {"replicas": 1}, "autoRevert": True}
    apply(kubectl, namespace, "revert", "app:1", replicas=3, strategy=strategy)
    wait_for("revert at app:1", lambda: rolled_out(kubectl, namespace, "revert"))
    apply(kubectl, namespace, "revert", "bad:1", replicas=3, strategy=strategy)

    def aborted() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "revert") or {}
        stalled = condition(obj, "Stalled")
        return obj if stalled.get("reason") == "RolloutAborted" else None

    obj = wait_for("Stalled RolloutAborted", aborted)
    assert condition(obj, "Stalled")["status"] == "True"  # kstatus: Failed
    assert "NewRevisionFailed" in condition(obj, "Stalled")["message"]
    assert (condition(obj, "Progressing")["status"], obj["status"]["phase"]) == ("False", "Failed")
    assert obj["status"]["readyReplicas"] == 3  # the old revision serves at full count
    rows = images(stack, "revert")
    # The canary stage held: one replica of the bad revision, never more; none left active.
    assert sum(n for (number, _), n in rows.items() if number == "2") == 1, rows
    assert rows.get(("1", "running")) == 3, rows
    assert not any(rows.get(("2", status)) for status in ("pending", "starting", "running"))
    listed = history(stack, namespace, "revert")
    assert [(r["revision"], r["abortReason"]) for r in listed] == [
        (1, None),
        (2, "NewRevisionFailed"),
    ]
    status = stack.fogctl("rollout", "status", f"{namespace}/revert", "--timeout", "10s")
    assert status.returncode == 1, status
    (line,) = status.stderr.strip().splitlines()
    assert '"revert" rollout aborted' in line, status


def test_a_canary_failing_its_health_check_is_reverted(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    # Checked every second, unhealthy at the first failure: the sick canary is judged at once.
    check = {"tcp": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    strategy = {"canary": {"replicas": 1}, "autoRevert": True}
    apply(kubectl, namespace, "sick", "app:1", replicas=2, strategy=strategy, healthCheck=check)
    wait_for("sick at app:1", lambda: rolled_out(kubectl, namespace, "sick"))
    apply(kubectl, namespace, "sick", "sick:1", replicas=2, strategy=strategy, healthCheck=check)

    def aborted() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "sick") or {}
        return obj if condition(obj, "Stalled").get("reason") == "RolloutAborted" else None

    obj = wait_for("Stalled RolloutAborted", aborted)
    assert obj["status"]["readyReplicas"] == 2
    rows = images(stack, "sick")
    # The old replicas were never replaced: the abort stopped only the sick canary. (That a
    # replica of the old revision is assigned its own image, not the spec's, is checked on
    # PostgreSQL in tests/db/test_canary_rows.py: the agent here keeps the image it started.)
    assert sum(n for (number, _), n in rows.items() if number == "1") == 2, rows
    assert rows.get(("1", "running")) == 2, rows
    assert history(stack, namespace, "sick")[-1]["abortReason"] == "NewRevisionFailed"


def test_canaries_wait_until_promoted(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    strategy = {"canary": {"replicas": 1}}
    apply(kubectl, namespace, "promote", "app:1", replicas=3, strategy=strategy)
    wait_for("promote at app:1", lambda: rolled_out(kubectl, namespace, "promote"))
    apply(kubectl, namespace, "promote", "app:2", replicas=3, strategy=strategy)

    def waiting() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "promote") or {}
        canary = obj.get("status", {}).get("canary") or {}
        return obj if canary.get("available") == 1 else None

    obj = wait_for("one canary available", waiting)
    assert obj["status"]["canary"] == {"revision": 2, "replicas": 1, "available": 1}
    assert condition(obj, "Reconciling")["reason"] == "CanaryWaiting"
    assert condition(obj, "Stalled")["status"] == "False"
    assert images(stack, "promote") == {("1", "running"): 3, ("2", "running"): 1}

    promoted = stack.fogctl("rollout", "promote", f"{namespace}/promote")
    assert promoted.returncode == 0, promoted
    assert promoted.stdout.strip() == 'fogdeployment "promote" revision 2 promoted'
    done = wait_for("promote rolled out", lambda: rolled_out(kubectl, namespace, "promote"))
    assert (done["status"]["updatedReplicas"], done["status"]["readyReplicas"]) == (3, 3)
    assert "canary" not in done["status"]
    assert history(stack, namespace, "promote")[-1]["promotedBy"] == "fogctl"
    again = stack.fogctl("rollout", "promote", f"{namespace}/promote")
    assert again.returncode == 1, again
    assert again.stderr.strip().endswith("revision 2 already rolled out"), again


def test_auto_promote_completes_by_itself(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    strategy = {"canary": {"replicas": 1, "autoPromote": True}}
    apply(kubectl, namespace, "auto", "app:1", replicas=2, strategy=strategy)
    wait_for("auto at app:1", lambda: rolled_out(kubectl, namespace, "auto"))
    apply(kubectl, namespace, "auto", "app:2", replicas=2, strategy=strategy)
    done = wait_for("auto rolled out", lambda: rolled_out(kubectl, namespace, "auto"))
    assert done["status"]["updatedReplicas"] == 2
    assert history(stack, namespace, "auto")[-1]["promotedBy"] == "operator"
