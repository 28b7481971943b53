"""Rollout strategies end to end (issue 16 items 3 and 4): the real API server, PostgreSQL, the
operator and a simulated agent whose replicas of `bad:*` images fail after starting.

One stack serves the module (each test has its own FogDeployment in the module's namespace), so
the operator starts once. During a rollout the test reads the replica rows from PostgreSQL as
fast as it can and checks every sample against the strategy's bounds: a sampling check of what
the property tests of the planner prove (tests/unit/test_rollout_strategy.py). Whether old and
new replicas ran at once is read from the history table, which keeps every transition: samples
can miss a moment that short.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from conftest import OPERATOR_ARGS, Kubectl, Stack, fresh_namespace, wait_for
from sqlalchemy.engine import URL
from test_operator import get

from controller.sandbox import controlplane, harness

# One node with room for 32 replicas of 0.5 CPU / 512 MB: every test's replicas, surge included.
NODE_CPU = 16
NODE_MEMORY_MB = 32768
# Samples before a rollout counts as stuck: a rollout here takes a few seconds, some hundred
# samples; a loaded CI machine may need several times that.
ROLLOUT_SAMPLES = 20000


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl, fogdeployment_crd: str) -> Iterator[str]:
    """The module's namespace (deleted without waiting afterwards)."""
    yield from fresh_namespace(kubectl)


@pytest.fixture(scope="module")
def stack(
    control_plane: controlplane.ControlPlane,
    postgres_server_url: URL,
    template_database: str,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Operator and agent (failing `bad:*` starts, `sick:*` checks) on one node, for the module."""
    database = harness.create_database(
        postgres_server_url, f"fog_rollouts_{uuid.uuid4().hex[:8]}", template=template_database
    )
    running = Stack(
        folder=Path(tmp_path_factory.mktemp("rollouts")),
        env=harness.fogctl_env(kubeconfig=control_plane.kubeconfig, database_url=database),
        namespaces=[namespace],
        operator_args=OPERATOR_ARGS,
    )
    try:
        running.register_node("edge-1", cpu=NODE_CPU, memory_mb=NODE_MEMORY_MB)
        # `sick:*` fails its health checks: test_canary_e2e.py's reverts, on this fixture.
        running.agent.args += ["--fail-image", "bad:*", "--fail-health", "sick:*"]
        running.agent.start()
        running.operator.start()
        yield running
    finally:
        running.stop()
        harness.drop_database(postgres_server_url, database.database or "")


def apply(kubectl: Kubectl, namespace: str, name: str, image: str, **spec: Any) -> None:
    manifest = {
        "apiVersion": "fogcompute.io/v1alpha1",
        "kind": "FogDeployment",
        "metadata": {"name": name},
        "spec": {"image": image, "resources": {"cpuCores": 0.5, "memoryMB": 512}, **spec},
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def rolled_out(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The object once every desired replica runs the current spec (Ready, as rollout status)."""
    obj = get(kubectl, namespace, name) or {}
    status = obj.get("status") or {}
    current = status.get("observedGeneration") == obj.get("metadata", {}).get("generation")
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    ready = conditions.get("Ready", {}).get("status") == "True"
    return obj if current and ready else None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {}
    )
    return found


ACTIVE = ("pending", "starting", "running")


class Rows:
    """A deployment's replica rows read straight from PostgreSQL, to sample a rollout."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.url = stack.env["FOG_DATABASE_URL"].replace("+psycopg", "")
        self.name = name

    def follow(
        self, kubectl: Kubectl, namespace: str, check: Callable[[Counter[tuple[str, str]]], None]
    ) -> None:
        """Check samples until the object is rolled out, and one more once it is.

        A sample counts the replicas by (new or old revision, status). Ten samples are taken
        for each look at the object: a SQL read costs far less than a kubectl call.
        """
        with psycopg.connect(self.url, autocommit=True) as connection:

            def sample() -> None:
                rows = connection.execute(
                    "SELECT r.revision = d.revision, r.status::text, count(*)"
                    " FROM deployment_replicas r JOIN deployments d ON d.id = r.deployment_id"
                    " WHERE d.name = %s AND d.deleted_at IS NULL GROUP BY 1, 2",
                    (self.name,),
                ).fetchall()
                check(Counter({("new" if new else "old", st): n for new, st, n in rows}))

            for samples in itertools.count(step=10):
                for _ in range(10):
                    sample()
                if rolled_out(kubectl, namespace, self.name):
                    sample()  # the state it was judged rolled out in
                    return
                if samples > ROLLOUT_SAMPLES:
                    raise AssertionError(f"{self.name} not rolled out after {samples} samples")

    def revisions_overlapped(self) -> bool:
        """Whether the history shows old and new replicas active at once, at some commit.

        Not sampled: replica_status_history keeps every transition, so a rollout that runs
        between two samples (as one did on a loaded CI machine) is seen all the same. Rows of
        one transaction (one xmin) are applied together, in the order of each transaction's
        last row: what other sessions could see, not a step inside a reconcile.
        """
        with psycopg.connect(self.url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT h.xmin::text::bigint, h.changed_at, h.replica_id,"
                " r.revision = d.revision, h.new_status::text"
                " FROM replica_status_history h"
                " JOIN deployment_replicas r ON r.id = h.replica_id"
                " JOIN deployments d ON d.id = h.deployment_id"
                " WHERE d.name = %s AND d.deleted_at IS NULL ORDER BY h.changed_at",
                (self.name,),
            ).fetchall()
        commits: dict[int, list[Any]] = {}
        for xid, *row in rows:
            commits.setdefault(xid, []).append(row)
        state: dict[Any, tuple[bool, str]] = {}
        for changes in sorted(commits.values(), key=lambda changes: changes[-1][0]):
            state.update({replica: (new, status) for _, replica, new, status in changes})
            if {new for new, status in state.values() if status in ACTIVE} == {True, False}:
                return True
        return False


def active(sample: Counter[tuple[str, str]], which: str | None = None) -> int:
    return sum(n for (rev, st), n in sample.items() if st in ACTIVE and which in (None, rev))


def test_rolling_update_stays_within_max_surge_and_max_unavailable(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    apply(kubectl, namespace, "rolling", "app:1", replicas=4, strategy=strategy)
    wait_for("rolling at app:1", lambda: rolled_out(kubectl, namespace, "rolling"))
    seen: list[Counter[tuple[str, str]]] = []

    def within_bounds(sample: Counter[tuple[str, str]]) -> None:
        seen.append(sample)
        assert active(sample) <= 4 + 1, sample  # desired + maxSurge
        running = sample["new", "running"] + sample["old", "running"]
        assert running >= 4 - 1, sample  # desired - maxUnavailable

    apply(kubectl, namespace, "rolling", "app:2", replicas=4, strategy=strategy)
    rows = Rows(stack, "rolling")
    rows.follow(kubectl, namespace, within_bounds)
    assert seen[-1]["new", "running"] == 4
    assert rows.revisions_overlapped()  # a rolling update, not old ones first and new after


def test_recreate_never_runs_two_revisions(stack: Stack, kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, "recreate", "app:1", replicas=3, strategy={"type": "Recreate"})
    wait_for("recreate at app:1", lambda: rolled_out(kubectl, namespace, "recreate"))
    seen: list[Counter[tuple[str, str]]] = []

    def one_revision(sample: Counter[tuple[str, str]]) -> None:
        seen.append(sample)
        old = active(sample, "old") + sample["old", "stopping"]
        assert not (old and active(sample, "new")), sample

    apply(kubectl, namespace, "recreate", "app:2", replicas=3, strategy={"type": "Recreate"})
    rows = Rows(stack, "recreate")
    rows.follow(kubectl, namespace, one_revision)
    assert seen[-1]["new", "running"] == 3
    assert not rows.revisions_overlapped()  # what the rolling update's check tells apart


def test_paused_scales_but_replaces_nothing_until_resumed(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, "paused", "app:1", replicas=2)
    wait_for("paused at app:1", lambda: rolled_out(kubectl, namespace, "paused"))
    # Paused with a new image and one more replica: the new replica is of the new template,
    # and the two old ones stay.
    apply(kubectl, namespace, "paused", "app:2", replicas=3, paused=True)

    def scaled() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "paused") or {}
        status = obj.get("status") or {}
        if (status.get("readyReplicas"), status.get("updatedReplicas")) != (3, 1):
            return None
        return obj if status.get("observedGeneration") == obj["metadata"]["generation"] else None

    obj = wait_for("paused scaled to 3, one updated", scaled)
    progressing = condition(obj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    assert condition(obj, "Stalled")["status"] == "False"
    assert condition(obj, "Reconciling")["reason"] == "DeploymentPaused"

    kubectl(
        "patch",
        "-n",
        namespace,
        "fogdeploy/paused",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"paused": False}}),
    )
    done = wait_for(
        "paused resumed and rolled out", lambda: rolled_out(kubectl, namespace, "paused")
    )
    assert (done["status"]["updatedReplicas"], done["status"]["readyReplicas"]) == (3, 3)
    assert condition(done, "Progressing")["reason"] == "NewRevisionAvailable"


def test_a_failing_image_passes_its_progress_deadline(
    stack: Stack, kubectl: Kubectl, namespace: str
) -> None:
    # Two replicas: 25% makes maxSurge 1 and maxUnavailable 0, so the old ones keep serving
    # while the one surge replica of the bad image fails, again and again.
    apply(kubectl, namespace, "deadline", "app:1", replicas=2, progressDeadlineSeconds=3)
    wait_for("deadline at app:1", lambda: rolled_out(kubectl, namespace, "deadline"))
    apply(kubectl, namespace, "deadline", "bad:1", replicas=2, progressDeadlineSeconds=3)

    def exceeded() -> dict[str, Any] | None:
        obj = get(kubectl, namespace, "deadline") or {}
        reason = condition(obj, "Progressing").get("reason")
        return obj if reason == "ProgressDeadlineExceeded" else None

    obj = wait_for("Progressing=False ProgressDeadlineExceeded", exceeded)
    assert condition(obj, "Progressing")["status"] == "False"
    assert "no progress for 3s" in condition(obj, "Progressing")["message"]
    assert condition(obj, "Stalled")["status"] == "True"  # kstatus: Failed
    assert obj["status"]["readyReplicas"] == 2  # the old replicas still serve
    status = stack.fogctl("rollout", "status", f"{namespace}/deadline", "--timeout", "10s")
    assert status.returncode == 1, status
    assert status.stderr.strip().endswith('"deadline" exceeded its progress deadline'), status
