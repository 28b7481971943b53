"""The agent protocol's database side: what a node should run, and what it reports back.

Agents never write SQL. They ask `assignments` which replicas are on their nodes and in which
state each should move next, and send `Report`s; every report is checked against the replica
state machine and the replica's node, and its values against what the columns hold, before
it is written (a refused report leaves no trace); the history trigger records an accepted one
with the agent (`agent:<node>`) as actor. A batch of reports from many nodes is two statements.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import String, case, cast, func, select, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.queries import unnested
from controller.db.tables import (
    CONTAINER_ID_MAX,
    K8S_NAME_MAX,
    REPLICA_REQUEST,
    Deployment,
    DeploymentReplica,
    DeploymentRevision,
    Node,
    User,
    replica_status_enum,
    request_of,
)
from controller.model import actors
from controller.model.health import HealthCheck
from controller.model.protocol import REASON_MAX, Assignment, Report, ReportResult
from controller.model.revision import Template
from controller.model.states import (
    AGENT_REPLICA_TRANSITIONS,
    CAPACITY_HOLDING_STATUSES,
    IllegalTransitionError,
    ReplicaStatus,
    check_replica_transition,
)

_STATUSES = frozenset(str(status) for status in ReplicaStatus)


def agent_actor(node: str) -> str:
    """The history actor of an agent's reports."""
    return f"{actors.AGENT_PREFIX}{node}"


async def assignments(
    session: AsyncSession, *, nodes: Sequence[str], include_running: bool = True
) -> list[Assignment]:
    """Replicas on these nodes that hold capacity there: the agents' to-do list.

    Without `include_running`, only the replicas that need the agent to act (to start, still
    starting, to stop): cheap to poll often when a node runs many replicas. The complete list
    is what tells an agent which of the replicas it runs are no longer its own.
    """
    statuses = [
        status
        for status in CAPACITY_HOLDING_STATUSES
        if include_running or status is not ReplicaStatus.RUNNING
    ]
    statement = (
        select(
            DeploymentReplica.id,
            Node.name.label("node"),
            DeploymentReplica.status,
            User.name.label("namespace"),
            Deployment.name.label("deployment"),
            DeploymentReplica.ordinal,
            Deployment.container_image,
            Deployment.container_spec,
            DeploymentReplica.container_id,
            *REPLICA_REQUEST,
            Deployment.health_check,
            DeploymentReplica.health,
            DeploymentRevision.template,
        )
        .join(Node, Node.id == DeploymentReplica.node_id)
        .join(Deployment, Deployment.id == DeploymentReplica.deployment_id)
        # A replica of another revision than the spec's (one an automatic revert went back
        # to, model/canary.py) runs that revision's template, not the spec's.
        .outerjoin(
            DeploymentRevision,
            (DeploymentRevision.deployment_id == DeploymentReplica.deployment_id)
            & (DeploymentRevision.hash == DeploymentReplica.revision)
            & (DeploymentReplica.revision != Deployment.revision),
        )
        .join(User, User.id == Deployment.user_id)
        .where(Node.name.in_(nodes), DeploymentReplica.status.in_(statuses))
        .order_by(Node.name, DeploymentReplica.created_at)
    )
    return [_assignment(row) for row in await session.execute(statement)]


def _assignment(row: Any) -> Assignment:
    """One row of `assignments`: the deployment's template, or its revision's if it differs."""
    image, container_spec, check = row.container_image, row.container_spec, row.health_check
    if row.template is not None:
        template = Template.from_spec(row.template)
        image, container_spec = template.image, template.container_spec
        check = template.health_check
    return Assignment(
        replica_id=row.id,
        node=row.node,
        status=row.status,
        namespace=row.namespace,
        deployment=row.deployment,
        ordinal=row.ordinal,
        image=image,
        container_spec=container_spec,
        container_id=row.container_id,
        request=request_of(row),
        health_check=None if check is None else HealthCheck.from_spec(check),
        health=row.health,
    )


def bad_text(value: object, *, limit: int) -> str | None:
    """Why a reported text cannot be stored (PostgreSQL text holds no NUL and only UTF-8)."""
    if not isinstance(value, str):
        return f"not text: {type(value).__name__}"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    # Bytes, not characters: the history indexes carry the reason (migration 0014), and a
    # B-tree entry holds at most 2,704 bytes; 1,024 characters of emoji would be 4,096.
    if len(encoded) > limit:
        return f"longer than {limit} bytes of UTF-8"
    return None


class _PerReplica(Protocol):
    @property
    def replica_id(self) -> uuid.UUID: ...


Item = TypeVar("Item", bound=_PerReplica)


def refusals(
    items: Sequence[Item], why: Callable[[Item], str | None], *, noun: str
) -> list[tuple[uuid.UUID, str]]:
    """Each item of a batch that is refused, with why: `why` says so, or a second for its replica.

    For the batches written all or none (usage samples, health reports): a replica gets one
    item per batch, so that which of two contradicting items counts is never a question.
    """
    refused: list[tuple[uuid.UUID, str]] = []
    seen: set[uuid.UUID] = set()
    for item in items:
        reason = why(item)
        if reason is None and item.replica_id in seen:
            reason = f"a second {noun} for the replica in one batch"
        seen.add(item.replica_id)
        if reason is not None:
            refused.append((item.replica_id, reason))
    return refused


def _garbage(report: Report) -> str | None:
    """Why a report's values are malformed whatever the replica's state, or None."""
    if not isinstance(report.replica_id, uuid.UUID):
        return f"replica id is not a UUID: {report.replica_id!r:.40}"
    if not isinstance(report.status, str) or report.status not in _STATUSES:
        return f"unknown replica status {report.status!r:.40}"
    if why := bad_text(report.reason, limit=REASON_MAX):
        return f"reason {why}"
    if report.container_id is not None and (
        why := bad_text(report.container_id, limit=CONTAINER_ID_MAX)
    ):
        return f"container id {why}"
    return None


def _check(
    report: Report,
    current: Mapping[uuid.UUID, tuple[str, ReplicaStatus]],
    transitions: Mapping[ReplicaStatus, frozenset[ReplicaStatus]],
) -> str | None:
    """Why a report is refused (its values first, then its replica's state), or None."""
    if why := _garbage(report):
        return why
    found = current.get(report.replica_id)
    if found is None:
        return "unknown replica"
    node, status = found
    if node != report.node:
        # No node name is longer; a longer "name" is cut so the reason stays a line.
        return f"replica is not on node {str(report.node)[:K8S_NAME_MAX]}"
    try:
        check_replica_transition(
            old=status, new=ReplicaStatus(report.status), transitions=transitions
        )
    except IllegalTransitionError as exc:
        return str(exc)
    return None


async def report(
    session: AsyncSession,
    reports: Sequence[Report],
    *,
    transitions: Mapping[ReplicaStatus, frozenset[ReplicaStatus]] = AGENT_REPLICA_TRANSITIONS,
) -> ReportResult:
    """Write the legal reports (one UPDATE), refuse the rest with a reason.

    Legal is what an agent may report (AGENT_REPLICA_TRANSITIONS) unless `transitions` says
    otherwise.
    """
    if not reports:
        return ReportResult(accepted=0)
    # Only well-formed ids reach the query: a malformed one would fail the whole statement.
    ids = [item.replica_id for item in reports if isinstance(item.replica_id, uuid.UUID)]
    rows = await session.execute(
        select(DeploymentReplica.id, Node.name, DeploymentReplica.status)
        .outerjoin(Node, Node.id == DeploymentReplica.node_id)
        .where(DeploymentReplica.id.in_(ids))
        .with_for_update(of=DeploymentReplica)
    )
    current = {row.id: (row.name, row.status) for row in rows}
    refused: list[tuple[uuid.UUID, str]] = []
    accepted: list[Report] = []
    accepted_ids: set[uuid.UUID] = set()
    for item in reports:
        why = _check(item, current, transitions)
        if why is None and item.replica_id in accepted_ids:
            why = "a second report for the replica in one batch"
        if why is None:
            accepted.append(item)
            accepted_ids.add(item.replica_id)
        else:
            refused.append((item.replica_id, why))
    if accepted:
        await _write(session, accepted)
    return ReportResult(accepted=len(accepted), refused=refused)


async def _write(session: AsyncSession, accepted: Sequence[Report]) -> None:
    # One array per column, unnested (queries.unnested): one statement for any batch size.
    changes = unnested(
        "report",
        {
            "replica_id": ([item.replica_id for item in accepted], UUID(as_uuid=True)),
            "new_status": ([str(item.status) for item in accepted], String()),
            "actor": ([agent_actor(item.node) for item in accepted], String()),
            "reason": ([item.reason for item in accepted], String()),
            "container_id": ([item.container_id for item in accepted], String()),
        },
    )
    finished = (ReplicaStatus.STOPPED, ReplicaStatus.FAILED)
    # The status travels as text; the enum must be named for PostgreSQL.
    new_status = cast(changes.c.new_status, replica_status_enum)
    await session.execute(
        update(DeploymentReplica)
        .where(DeploymentReplica.id == changes.c.replica_id)
        .values(
            status=new_status,
            status_actor=changes.c.actor,
            status_reason=changes.c.reason,
            container_id=func.coalesce(changes.c.container_id, DeploymentReplica.container_id),
            started_at=case(
                (new_status == ReplicaStatus.RUNNING, func.now()),
                else_=DeploymentReplica.started_at,
            ),
            stopped_at=case(
                (new_status.in_(finished), func.now()),
                else_=DeploymentReplica.stopped_at,
            ),
        )
    )
