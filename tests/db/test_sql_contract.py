"""Python and SQL held to one contract, read from the migrated database.

The trigger functions repeat a few facts the Python side also states: which replica statuses
hold node capacity, which actor's changes wake the operator and on which channel, which failure
reason does not count toward the restart backoff, and the enum labels. The migrations keep their
own copies (a migration must not change when the code does later), so each test asks the
migrated database itself, by running the function or firing the trigger, and compares with the
Python constant: a change on one side alone fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from controller.db.notify import CHANNEL
from controller.db.reports import agent_actor
from controller.model import actors
from controller.model.nodes import NodeStatus
from controller.model.planner import StopReason
from controller.model.quota import QUOTA_EXCEEDED
from controller.model.restarts import CRASH_LOOP, NODE_LOST, UNHEALTHY
from controller.model.states import DeploymentStatus, ReplicaHealth, ReplicaStatus, holds_capacity

# How long to wait for a notification that must not come. Delivery happens at the commit that
# precedes the wait, on loopback, so a missing one would arrive in milliseconds; a second keeps
# the negative case honest without slowing the run much.
NO_NOTIFY_WAIT_SECONDS = 1.0


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _one(db: psycopg.Connection, query: Any, params: tuple[Any, ...] = ()) -> Any:
    """The single value a query returns."""
    row = db.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def db(database_url: URL) -> Iterator[psycopg.Connection]:
    with psycopg.connect(_conninfo(database_url), autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize(
    ("enum_type", "python"),
    [
        ("replicastatus", ReplicaStatus),
        ("deploymentstatus", DeploymentStatus),
        ("nodestatus", NodeStatus),
        ("replicahealth", ReplicaHealth),
    ],
)
def test_enum_labels_are_the_python_values_in_order(
    db: psycopg.Connection, enum_type: str, python: type
) -> None:
    query = sql.SQL("SELECT enum_range(NULL::{})::text[]").format(sql.Identifier(enum_type))
    assert _one(db, query) == [member.value for member in python]


@pytest.mark.parametrize("status", list(ReplicaStatus))
@pytest.mark.parametrize("has_node", [True, False])
def test_which_statuses_hold_capacity_agrees_with_the_state_machine(
    db: psycopg.Connection, status: ReplicaStatus, has_node: bool
) -> None:
    node = uuid.uuid4() if has_node else None
    held = _one(
        db, "SELECT fog_replica_holds_capacity(%s::replicastatus, %s::uuid)", (status.value, node)
    )
    assert held is holds_capacity(status=status, has_node=has_node)


def make_replica(db: psycopg.Connection, revision: str = "r1") -> tuple[uuid.UUID, uuid.UUID]:
    """A deployment at revision r1 with one running replica of `revision` on a node.

    Returns (deployment id, replica id).
    """
    user = _one(db, "INSERT INTO users (name) VALUES ('team-a') RETURNING id")
    node = _one(
        db,
        "INSERT INTO nodes (name, cpu_cores, memory_mb, gpu_units, storage_gb)"
        " VALUES ('edge-1', 8, 16384, 0, 100) RETURNING id",
    )
    deployment = _one(
        db,
        "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision)"
        " VALUES (%s, 'web', 'app:1', 1, 'r1') RETURNING id",
        (user,),
    )
    replica = _one(
        db,
        "INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, revision,"
        " cpu_millicores, memory_mb, gpu_units, storage_gb, status, status_actor)"
        " VALUES (%s, %s, 0, %s, 500, 512, 0, 1, %s, 'test') RETURNING id",
        (deployment, node, revision, ReplicaStatus.RUNNING.value),
    )
    return deployment, replica


def change(
    db: psycopg.Connection, replica: uuid.UUID, *, to: ReplicaStatus, actor: str, reason: str
) -> None:
    """Move a replica to another status, as the given actor, for the given reason."""
    db.execute(
        "UPDATE deployment_replicas SET status = %s, status_actor = %s, status_reason = %s"
        " WHERE id = %s",
        (to.value, actor, reason, replica),
    )


@pytest.mark.parametrize(
    ("actor", "wakes"),
    [
        (actors.OPERATOR, False),  # its own writes must not wake it again
        (agent_actor("edge-1"), True),
        (actors.NODE_LIFECYCLE, True),
    ],
)
def test_replica_changes_notify_the_operators_channel_unless_the_operator_made_them(
    database_url: URL, db: psycopg.Connection, actor: str, wakes: bool
) -> None:
    deployment, replica = make_replica(db)
    with psycopg.connect(_conninfo(database_url), autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        change(db, replica, to=ReplicaStatus.STOPPING, actor=actor, reason="Test")
        received = [
            (notice.channel, notice.payload)
            for notice in listener.notifies(timeout=NO_NOTIFY_WAIT_SECONDS, stop_after=1)
        ]
    assert received == ([(CHANNEL, str(deployment))] if wakes else [])


@pytest.mark.parametrize(("reason", "counted"), [(NODE_LOST, 0), (CRASH_LOOP, 1)])
def test_a_replica_lost_with_its_node_does_not_count_as_a_failure(
    db: psycopg.Connection, reason: str, counted: int
) -> None:
    deployment, replica = make_replica(db)
    change(db, replica, to=ReplicaStatus.FAILED, actor=actors.NODE_LIFECYCLE, reason=reason)
    failures = _one(db, "SELECT consecutive_failures FROM deployments WHERE id = %s", (deployment,))
    assert failures == counted


@pytest.mark.parametrize(
    ("reason", "counted"),
    [(UNHEALTHY, 1), (StopReason.ROLLING_UPDATE, 0), (StopReason.SCALED_DOWN, 0)],
)
def test_a_replica_stopped_as_unhealthy_counts_as_a_failure(
    db: psycopg.Connection, reason: str, counted: int
) -> None:
    """Migration 0012 counts the planner's Unhealthy stop toward the crash backoff, no other."""
    deployment, replica = make_replica(db)
    change(db, replica, to=ReplicaStatus.STOPPING, actor=actors.OPERATOR, reason=reason)
    failures = _one(db, "SELECT consecutive_failures FROM deployments WHERE id = %s", (deployment,))
    assert failures == counted


@pytest.mark.parametrize(("revision", "counted"), [("r0", 0), ("r1", 1)])
def test_only_a_failure_of_the_current_revision_counts(
    db: psycopg.Connection, revision: str, counted: int
) -> None:
    # A new revision starts with a clean slate (model/restarts.py): an old replica that fails
    # during the rollout must not hold back or stall the new one.
    deployment, replica = make_replica(db, revision=revision)
    change(db, replica, to=ReplicaStatus.FAILED, actor=agent_actor("edge-1"), reason=CRASH_LOOP)
    failures = _one(db, "SELECT consecutive_failures FROM deployments WHERE id = %s", (deployment,))
    assert failures == counted


def test_a_quota_change_wakes_the_deployments_waiting_on_quota_and_only_them(
    database_url: URL, db: psycopg.Connection
) -> None:
    """Migration 0007 looks for the planner's reason and notifies on the operator's channel."""
    waiting, _ = make_replica(db)
    user = _one(db, "SELECT user_id FROM deployments WHERE id = %s", (waiting,))
    db.execute("UPDATE deployments SET status_reason = %s WHERE id = %s", (QUOTA_EXCEEDED, waiting))
    db.execute(
        "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision,"
        " status_reason) VALUES (%s, 'other', 'app:1', 1, 'r1', 'ScalingUp')",
        (user,),
    )
    with psycopg.connect(_conninfo(database_url), autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        db.execute("INSERT INTO quotas (user_id, name, replicas) VALUES (%s, 'q', 5)", (user,))
        received = [
            (notice.channel, notice.payload)
            for notice in listener.notifies(timeout=NO_NOTIFY_WAIT_SECONDS, stop_after=2)
        ]
    assert received == [(CHANNEL, str(waiting))]
