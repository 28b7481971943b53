"""`fogctl rollout history` and `undo` against the real API server, PostgreSQL, operator and agent.

Three images make three revisions; an undo to the first patches the spec back to its template
(as the `fogctl` field manager), the replicas roll to it, and the history shows it renumbered
as revision 4, as Kubernetes renumbers a Deployment's reused ReplicaSet.
"""

from __future__ import annotations

import json

from conftest import Kubectl, Stack
from test_operator import get, manifest
from test_rollout_status import ROLLED_OUT, one_error_line


def apply_and_wait(stack: Stack, kubectl: Kubectl, namespace: str, image: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest("web", replicas=2, image=image))
    rolled = stack.fogctl("rollout", "status", f"{namespace}/web", "--timeout", "100s")
    assert rolled.stdout.splitlines()[-1] == ROLLED_OUT, rolled


def test_history_lists_revisions_and_undo_rolls_back_through_the_spec(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    target = f"{namespace}/web"
    stack.register_node("edge-1", cpu=4, memory_mb=8192)
    stack.operator.start()
    stack.agent.start()
    one_error_line(
        stack.fogctl("rollout", "history", target),
        f'fogdeployment "web" in namespace {namespace} has no revisions: the database has no',
    )
    for image in ("app:1", "app:2", "app:3"):
        apply_and_wait(stack, kubectl, namespace, image)

    listed = stack.fogctl("rollout", "history", target)
    assert listed.returncode == 0, listed
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["REVISION", "CREATED", "BY", "ROLLOUT", "CHANGE"]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert rows[0].endswith("image app:1")
    assert rows[2].endswith("image app:3; changed image")
    assert all("kubectl" in row for row in rows)  # the field manager of `kubectl apply`
    revisions = json.loads(stack.fogctl("rollout", "history", target, "-o", "json").stdout)
    first = revisions["revisions"][0]
    assert (first["revision"], first["template"]["image"], first["replicas"]) == (1, "app:1", 0)

    # The status says which revision runs; kubectl get shows AVAILABLE as for a Deployment.
    status = (get(kubectl, namespace, "web") or {})["status"]
    assert (status["updateRevision"], status["currentRevision"]) == (3, 3)
    table = kubectl("get", "fogdeploy", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "PHASE"]
    assert table[1].split()[1:4] == ["2/2", "2", "2"]

    one_error_line(
        stack.fogctl("rollout", "undo", target, "--to-revision", "9"),
        'fogdeployment "web" has no revision 9 (revisions: 1, 2, 3)',
    )
    one_error_line(
        stack.fogctl("rollout", "undo", target, "--to-revision", "3"),
        'fogdeployment "web" is already at revision 3',
    )
    one_error_line(
        stack.fogctl("rollout", "undo", f"{namespace}/nothing"),
        f'fogdeployments.fogcompute.io "nothing" in namespace {namespace} not found',
    )

    undone = stack.fogctl("rollout", "undo", target, "--to-revision", "1")
    assert undone.returncode == 0, undone
    assert undone.stdout.strip() == 'fogdeployment "web" rolled back to revision 1'
    # The spec itself changed, so Git and GitOps tools see it; the operator rolls it out.
    assert (get(kubectl, namespace, "web") or {})["spec"]["image"] == "app:1"
    rolled = stack.fogctl("rollout", "status", target, "--timeout", "100s")
    assert rolled.stdout.splitlines()[-1] == ROLLED_OUT, rolled
    status = (get(kubectl, namespace, "web") or {})["status"]
    # Every replica runs the first template again, and it is revision 4 now.
    assert status["revision"] == first["hash"][:12]
    assert (status["updatedReplicas"], status["availableReplicas"]) == (2, 2)
    assert (status["updateRevision"], status["currentRevision"]) == (4, 4)
    after = json.loads(stack.fogctl("rollout", "history", target, "-o", "json").stdout)
    assert [(r["revision"], r["template"]["image"]) for r in after["revisions"]] == [
        (2, "app:2"),
        (3, "app:3"),
        (4, "app:1"),
    ]
    assert (after["revisions"][-1]["createdBy"], after["revisions"][-1]["replicas"]) == (
        "fogctl",
        2,
    )
    # The default goes back one: to app:3, now revision 5.
    assert stack.fogctl("rollout", "undo", target).returncode == 0
    assert (get(kubectl, namespace, "web") or {})["spec"]["image"] == "app:3"
