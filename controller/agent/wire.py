"""The agent API's JSON bodies, validated with Pydantic, and how values are written back.

Field names are camelCase, as in the FogDeployment CRD and Kubernetes' own APIs. Limits are
those of the columns (db/tables.py) and of a sane batch, so that a body is refused with 400
naming the field before anything reaches the database.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.db.tables import CONTAINER_ID_MAX, K8S_NAME_MAX
from controller.model.credentials import TOKEN_MAX
from controller.model.protocol import REASON_MAX, Assignment, Report
from controller.model.states import ReplicaStatus

# One batch of reports per request. A node runs tens of replicas; a multiplexing agent playing
# thousands of nodes sends one report per changed replica, and 10,000 covers a burst's round.
MAX_REPORTS = 10_000
# Node tokens one stream may present: one process playing thousands of nodes (the benchmark
# plays 5,000) fits, and a stream cannot make the server look up more than this at once.
MAX_TOKENS = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ReportIn(_Body):
    """One status change of one replica, as an agent sends it."""

    node: str = Field(min_length=1, max_length=K8S_NAME_MAX)
    replica_id: uuid.UUID = Field(alias="replicaId")
    status: ReplicaStatus
    reason: str = Field(max_length=REASON_MAX)
    container_id: str | None = Field(default=None, alias="containerId", max_length=CONTAINER_ID_MAX)

    def to_report(self) -> Report:
        """The protocol value the database side checks and writes."""
        return Report(
            node=self.node,
            replica_id=self.replica_id,
            status=self.status,
            reason=self.reason,
            container_id=self.container_id,
        )


class ReportsIn(_Body):
    """`POST /v1/reports`."""

    reports: list[ReportIn] = Field(max_length=MAX_REPORTS)


class Hello(_Body):
    """Stream op `hello`: the node tokens this stream speaks for (adds to earlier ones)."""

    op: Literal["hello"]
    tokens: list[str] = Field(max_length=MAX_TOKENS)

    def valid_tokens(self) -> list[str]:
        """The tokens short enough to be ours (longer ones are refused without a lookup)."""
        return [token for token in self.tokens if len(token) <= TOKEN_MAX]


class Heartbeat(_Body):
    """Stream op `heartbeat`: renew every node of the stream."""

    op: Literal["heartbeat"]


class Refresh(_Body):
    """Stream op `refresh`: send every node's complete list again."""

    op: Literal["refresh"]


class StreamReports(_Body):
    """Stream op `report`: a batch, answered by `reported` or `refused` with the same id."""

    op: Literal["report"]
    id: int
    reports: list[ReportIn] = Field(max_length=MAX_REPORTS)


class StreamOp(BaseModel):
    """Any op a client sends on the stream."""

    body: Hello | Heartbeat | Refresh | StreamReports = Field(discriminator="op")


def problem(error: ValidationError) -> str:
    """One line naming the first invalid field, as the API server names a manifest's."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def assignment_out(item: Assignment) -> dict[str, Any]:
    """An assignment as the API sends it."""
    return {
        "replicaId": str(item.replica_id),
        "name": item.replica_name,
        "status": str(item.status),
        "namespace": item.namespace,
        "deployment": item.deployment,
        "ordinal": item.ordinal,
        "image": item.image,
        "containerSpec": item.container_spec,
        "containerId": item.container_id,
    }


def assignment_in(node: str, body: dict[str, Any]) -> Assignment:
    """An assignment as an agent reads it back (KeyError/ValueError: not one)."""
    return Assignment(
        replica_id=uuid.UUID(body["replicaId"]),
        node=node,
        status=ReplicaStatus(body["status"]),
        namespace=str(body["namespace"]),
        deployment=str(body["deployment"]),
        ordinal=int(body["ordinal"]),
        image=str(body["image"]),
        container_spec=dict(body["containerSpec"]),
        container_id=body.get("containerId"),
    )


def report_out(report: Report) -> dict[str, Any]:
    """A report as an agent sends it."""
    return {
        "node": report.node,
        "replicaId": str(report.replica_id),
        "status": str(report.status),
        "reason": report.reason,
        "containerId": report.container_id,
    }
