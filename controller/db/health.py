"""Health reports in PostgreSQL: what an agent's health check says of its running replicas.

A batch is checked whole, as status reports and usage samples are: every report names a running
replica on the node that sent it, with a known health and a storable reason; otherwise nothing
is written and each bad report is refused with why. The accepted batch is one UPDATE whatever
its size. A report that changes a replica's health stamps `health_since` (the clock of
`started_at`, which availability is measured against) and the agent as the row's actor, and
the 0012 triggers record the change in the replica's history and wake its deployment's
reconcile; one that repeats the recorded health only refreshes the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import String, Update, case, cast, func, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.queries import core, unnested_slots, unnested_values
from controller.db.reports import (
    AGENT_COLUMNS,
    agent_columns,
    bad_text,
    locked_replicas,
    refusals,
)
from controller.db.tables import DeploymentReplica, replica_health_enum
from controller.model.protocol import K8S_NAME_MAX, REASON_MAX, HealthReport, ReportResult
from controller.model.states import ReplicaHealth, ReplicaStatus

_HEALTHS = frozenset(str(health) for health in ReplicaHealth)


def _why_refused(
    report: HealthReport, found: tuple[str | None, ReplicaStatus] | None
) -> str | None:
    """Why a health report cannot be recorded, or None."""
    if not isinstance(report.health, str) or report.health not in _HEALTHS:
        return f"unknown health {report.health!r:.40}"
    if why := bad_text(report.reason, limit=REASON_MAX):
        return f"reason {why}"
    if found is None:
        return "unknown replica"
    node, status = found
    if node != report.node:
        return f"replica is not on node {str(report.node)[:K8S_NAME_MAX]}"
    if status is not ReplicaStatus.RUNNING:
        return f"replica is {status}, not running: only running replicas have a health"
    return None


async def record(session: AsyncSession, reports: Sequence[HealthReport]) -> ReportResult:
    """Write the batch if every report may be recorded; else refuse the bad ones, write nothing.

    The rows are locked as status reports lock them: a health change and a status change of
    one replica are then applied one after the other, each against what the other wrote.
    """
    if not reports:
        return ReportResult(accepted=0)
    ids = sorted({item.replica_id for item in reports if isinstance(item.replica_id, uuid.UUID)})
    current = await locked_replicas(session, ids)
    refused = refusals(
        reports, lambda item: _why_refused(item, current.get(item.replica_id)), noun="health report"
    )
    if refused:
        return ReportResult(accepted=0, refused=refused)
    await _write(session, reports)
    return ReportResult(accepted=len(reports))


async def _write(session: AsyncSession, reports: Sequence[HealthReport]) -> None:
    columns = {**agent_columns(reports), "health": [str(item.health) for item in reports]}
    await session.execute(_WRITE, unnested_values("report", columns))


def _write_statement() -> Update:
    """The UPDATE of a batch of health reports, built once at Core level (unnested_slots)."""
    replicas = core(DeploymentReplica)
    changes = unnested_slots("report", {**AGENT_COLUMNS, "health": String()})
    health = cast(changes.c.health, replica_health_enum)
    # SET reads the row as it was: `changed` compares the recorded health with the new one.
    changed = replicas.c.health.is_distinct_from(health)
    return (
        update(replicas)
        .where(replicas.c.id == changes.c.replica_id)
        .values(
            health=health,
            health_reason=changes.c.reason,
            health_since=case((changed, func.now()), else_=replicas.c.health_since),
            status_actor=case((changed, changes.c.actor), else_=replicas.c.status_actor),
        )
    )


_WRITE = _write_statement()
