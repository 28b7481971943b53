"""Python and SQL held to one contract, read from the migrated database.

The trigger functions repeat a few facts the Python side also states: which replica statuses
hold node capacity, which actor's changes wake the operator, which failure reason does not
count toward the restart backoff, the notification channel, and the enum labels. Each test asks
the migrated database itself (by running the function or trigger where that can be observed,
by reading its definition where it cannot) and compares with the Python constant, so a change
on one side alone fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import URL

from controller.db.notify import CHANNEL
from controller.model import actors
from controller.model.nodes import NodeStatus
from controller.model.restarts import NODE_LOST
from controller.model.states import DeploymentStatus, ReplicaStatus, holds_capacity


@pytest.fixture
def db(database_url: URL) -> Iterator[psycopg.Connection]:
    conninfo = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize(
    ("enum_type", "python"),
    [
        ("replicastatus", ReplicaStatus),
        ("deploymentstatus", DeploymentStatus),
        ("nodestatus", NodeStatus),
    ],
)
def test_enum_labels_are_the_python_values_in_order(
    db: psycopg.Connection, enum_type: str, python: type
) -> None:
    row = db.execute(f"SELECT enum_range(NULL::{enum_type})::text[]".encode()).fetchone()
    assert row is not None
    assert row[0] == [member.value for member in python]


@pytest.mark.parametrize("status", list(ReplicaStatus))
@pytest.mark.parametrize("has_node", [True, False])
def test_which_statuses_hold_capacity_agrees_with_the_state_machine(
    db: psycopg.Connection, status: ReplicaStatus, has_node: bool
) -> None:
    node = uuid.uuid4() if has_node else None
    row = db.execute(
        "SELECT fog_replica_holds_capacity(%s::replicastatus, %s::uuid)", (status.value, node)
    ).fetchone()
    assert row is not None
    assert row[0] is holds_capacity(status=status, has_node=has_node)


def make_replica(db: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A deployment with one running replica on a node; returns (deployment id, replica id)."""
    user = db.execute("INSERT INTO users (name) VALUES ('team-a') RETURNING id").fetchone()
    node = db.execute(
        "INSERT INTO nodes (name, cpu_cores, memory_mb, gpu_units, storage_gb)"
        " VALUES ('edge-1', 8, 16384, 0, 100) RETURNING id"
    ).fetchone()
    deployment = db.execute(
        "INSERT INTO deployments (user_id, name, container_image, target_replicas, revision)"
        " VALUES (%s, 'web', 'app:1', 1, 'r1') RETURNING id",
        (user[0],),  # type: ignore[index]
    ).fetchone()
    replica = db.execute(
        "INSERT INTO deployment_replicas (deployment_id, node_id, ordinal, revision,"
        " cpu_millicores, memory_mb, gpu_units, storage_gb, status, status_actor)"
        " VALUES (%s, %s, 0, 'r1', 500, 512, 0, 1, 'running', 'test') RETURNING id",
        (deployment[0], node[0]),  # type: ignore[index]
    ).fetchone()
    return deployment[0], replica[0]  # type: ignore[index]


def change(db: psycopg.Connection, replica: uuid.UUID, *, to: str, actor: str, reason: str) -> None:
    db.execute(
        "UPDATE deployment_replicas SET status = %s, status_actor = %s, status_reason = %s"
        " WHERE id = %s",
        (to, actor, reason, replica),
    )


@pytest.mark.parametrize(
    ("actor", "wakes"),
    [
        (actors.OPERATOR, False),  # its own writes must not wake it again
        (actors.agent("edge-1"), True),
        (actors.NODE_LIFECYCLE, True),
    ],
)
def test_replica_changes_notify_the_operators_channel_unless_the_operator_made_them(
    database_url: URL, db: psycopg.Connection, actor: str, wakes: bool
) -> None:
    deployment, replica = make_replica(db)
    conninfo = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}".encode())
        change(db, replica, to="stopping", actor=actor, reason="Test")
        received = [(n.channel, n.payload) for n in listener.notifies(timeout=1, stop_after=1)]
    assert received == ([(CHANNEL, str(deployment))] if wakes else [])


@pytest.mark.parametrize(("reason", "counted"), [(NODE_LOST, 0), ("CrashLoopBackOff", 1)])
def test_a_replica_lost_with_its_node_does_not_count_as_a_failure(
    db: psycopg.Connection, reason: str, counted: int
) -> None:
    deployment, replica = make_replica(db)
    change(db, replica, to="failed", actor=actors.NODE_LIFECYCLE, reason=reason)
    row = db.execute(
        "SELECT consecutive_failures FROM deployments WHERE id = %s", (deployment,)
    ).fetchone()
    assert row == (counted,)


def test_the_notify_helpers_use_the_channel_the_trigger_uses(db: psycopg.Connection) -> None:
    # The trigger's channel cannot be seen from outside but by listening; read it as well, so
    # that a rename of one side names the other in the failure.
    row = db.execute("SELECT prosrc FROM pg_proc WHERE proname = 'fog_notify_replica_change'")
    source = row.fetchone()
    assert source is not None
    assert f"pg_notify('{CHANNEL}'" in source[0]
