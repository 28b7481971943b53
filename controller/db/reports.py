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
from collections.abc import Set as AbstractSet
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, String, Update, any_, bindparam, case, cast, func, select, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.queries import array_slot, core, unnested_slots, unnested_values
from controller.db.tables import (
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
from controller.model.protocol import (
    CONTAINER_ID_MAX,
    K8S_NAME_MAX,
    REASON_MAX,
    Assignment,
    Report,
    ReportResult,
)
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
    # One node's list (a push, the common case) has a statement of its own: PostgreSQL's generic
    # plan for `= ANY($1)` assumes ten names and scanned every replica (1.7 ms of the server's
    # time at 10,000 replicas, where one name's plan takes 0.2 ms).
    names: dict[str, Any]
    if len(nodes) == 1:
        statement, names = _ONE_NODE[include_running], {"node": nodes[0]}
    else:
        statement, names = _NODES[include_running], {"nodes": list(nodes)}
    rows = (await session.execute(statement, names)).all()
    return [_assignment(row) for row in rows]


def _assignments_statement(statuses: AbstractSet[ReplicaStatus], *, one_node: bool) -> Select[Any]:
    """The replicas in `statuses` on the node named by the parameter `node`, or `nodes`, by node.

    Built once per status set, at Core level; the nodes as one array, so that the lists of 2
    nodes and of 500 run the same compiled (and server-prepared) statement.
    """
    replicas, nodes, deployments = core(DeploymentReplica), core(Node), core(Deployment)
    revisions, users = core(DeploymentRevision), core(User)
    return (
        select(
            replicas.c.id,
            nodes.c.name.label("node"),
            replicas.c.status,
            users.c.name.label("namespace"),
            deployments.c.name.label("deployment"),
            replicas.c.ordinal,
            deployments.c.container_image,
            deployments.c.container_spec,
            replicas.c.container_id,
            *(replicas.c[column.key] for column in REPLICA_REQUEST),
            deployments.c.health_check,
            replicas.c.health,
            revisions.c.template,
        )
        .join(nodes, nodes.c.id == replicas.c.node_id)
        .join(deployments, deployments.c.id == replicas.c.deployment_id)
        # A replica of another revision than the spec's (one an automatic revert went back
        # to, model/canary.py) runs that revision's template, not the spec's.
        .outerjoin(
            revisions,
            (revisions.c.deployment_id == replicas.c.deployment_id)
            & (revisions.c.hash == replicas.c.revision)
            & (replicas.c.revision != deployments.c.revision),
        )
        .join(users, users.c.id == deployments.c.user_id)
        .where(
            nodes.c.name
            == (
                bindparam("node", type_=String())
                if one_node
                else any_(array_slot("nodes", String()))
            ),
            replicas.c.status.in_(sorted(statuses)),
        )
        # The id last: replicas placed in one transaction share created_at, and a list sent
        # again in another order would look changed to an agent that compares (simulate.py).
        .order_by(nodes.c.name, replicas.c.created_at, replicas.c.id)
    )


# By include_running: every replica holding capacity, or only those the agent must act on.
_LISTED = {
    True: CAPACITY_HOLDING_STATUSES,
    False: CAPACITY_HOLDING_STATUSES - {ReplicaStatus.RUNNING},
}
_ONE_NODE = {key: _assignments_statement(value, one_node=True) for key, value in _LISTED.items()}
_NODES = {key: _assignments_statement(value, one_node=False) for key, value in _LISTED.items()}


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
    current: Mapping[uuid.UUID, tuple[str | None, ReplicaStatus]],
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
    current = await locked_replicas(session, ids)
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


async def locked_replicas(
    session: AsyncSession, ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str | None, ReplicaStatus]]:
    """The node and status of each of these replicas that exists, its row locked for update.

    For the batches agents send (status and health reports): the rows are locked so that two
    batches about one replica apply one after the other, each against what the other wrote.
    """
    rows = (await session.execute(_LOCKED_REPLICAS, {"replica_ids": ids})).all()
    return {replica_id: (node, status) for replica_id, node, status in rows}


async def _write(session: AsyncSession, accepted: Sequence[Report]) -> None:
    columns = {
        **agent_columns(accepted),
        "new_status": [str(item.status) for item in accepted],
        "container_id": [item.container_id for item in accepted],
    }
    await session.execute(_WRITE, unnested_values("report", columns))


class _AgentItem(Protocol):
    @property
    def node(self) -> str: ...
    @property
    def replica_id(self) -> uuid.UUID: ...
    @property
    def reason(self) -> str: ...


AGENT_COLUMNS = {"replica_id": UUID(as_uuid=True), "reason": String(), "actor": String()}
"""The columns every batch an agent sends writes (with `agent_columns`): whose, why, who."""


def agent_columns(items: Sequence[_AgentItem]) -> dict[str, list[Any]]:
    """The AGENT_COLUMNS of a batch of an agent's items, for `queries.unnested_values`."""
    return {
        "replica_id": [item.replica_id for item in items],
        "reason": [item.reason for item in items],
        "actor": [agent_actor(item.node) for item in items],
    }


def _write_statement() -> Update:
    """The UPDATE of a batch of accepted reports: one array per column, unnested.

    Built once, at Core level (queries.unnested_slots): one statement for any batch size.
    """
    replicas = core(DeploymentReplica)
    changes = unnested_slots(
        "report", {**AGENT_COLUMNS, "new_status": String(), "container_id": String()}
    )
    finished = (ReplicaStatus.STOPPED, ReplicaStatus.FAILED)
    # The status travels as text; the enum must be named for PostgreSQL.
    new_status = cast(changes.c.new_status, replica_status_enum)
    return (
        update(replicas)
        .where(replicas.c.id == changes.c.replica_id)
        .values(
            status=new_status,
            status_actor=changes.c.actor,
            status_reason=changes.c.reason,
            container_id=func.coalesce(changes.c.container_id, replicas.c.container_id),
            started_at=case(
                (new_status == ReplicaStatus.RUNNING, func.now()),
                else_=replicas.c.started_at,
            ),
            stopped_at=case(
                (new_status.in_(finished), func.now()),
                else_=replicas.c.stopped_at,
            ),
        )
    )


def _locked_replicas_statement() -> Select[Any]:
    replicas, nodes = core(DeploymentReplica), core(Node)
    return (
        select(replicas.c.id, nodes.c.name, replicas.c.status)
        .outerjoin(nodes, nodes.c.id == replicas.c.node_id)
        .where(replicas.c.id == any_(array_slot("replica_ids", UUID(as_uuid=True))))
        .with_for_update(of=replicas)
    )


_WRITE = _write_statement()
_LOCKED_REPLICAS = _locked_replicas_statement()
