"""The agent API's JSON bodies, validated with Pydantic, and how values are written back.

Field names are camelCase, as in the FogDeployment CRD and Kubernetes' own APIs. Limits are
those of the columns (model/protocol.py holds the ones db/tables.py shares) and of a sane
batch, so that a body is refused with 400 naming the field before anything reaches the
database.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.model.credentials import TOKEN_MAX
from controller.model.health import HealthCheck
from controller.model.protocol import (
    CONTAINER_ID_MAX,
    K8S_NAME_MAX,
    REASON_MAX,
    Assignment,
    HealthReport,
    Report,
    UsageSample,
)
from controller.model.resources import MILLIS_PER_CORE, Resources
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.usage import Usage

# One batch of reports per request. A node runs tens of replicas; a multiplexing agent playing
# thousands of nodes sends one report per changed replica, and 10,000 covers a burst's round.
MAX_REPORTS = 10_000
# Node tokens one stream may present: one process playing thousands of nodes (the benchmark
# plays 5,000) fits, and a stream cannot make the server look up more than this at once.
MAX_TOKENS = 10_000
# Usage is stored as PostgreSQL integers (CPU in millicores, memory in MB): a larger figure
# cannot be stored, and no node has that much. The node's own capacity is checked later.
INT4_MAX = 2**31 - 1
USAGE_CPU_CORES_MAX = INT4_MAX // MILLIS_PER_CORE


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


class UsageIn(_Body):
    """What one running replica uses, as an agent sampled it."""

    node: str = Field(min_length=1, max_length=K8S_NAME_MAX)
    replica_id: uuid.UUID = Field(alias="replicaId")
    cpu_cores: float = Field(alias="cpuCores", ge=0, le=USAGE_CPU_CORES_MAX, allow_inf_nan=False)
    memory_mb: int = Field(alias="memoryMB", ge=0, le=INT4_MAX)

    def to_sample(self) -> UsageSample:
        """The protocol value the database side checks and writes."""
        return UsageSample(
            node=self.node,
            replica_id=self.replica_id,
            usage=Usage.from_cores(cpu_cores=self.cpu_cores, memory_mb=self.memory_mb),
        )


class UsageBatchIn(_Body):
    """`POST /v1/usage`: samples of many replicas (one per replica), from one sampling round."""

    samples: list[UsageIn] = Field(max_length=MAX_REPORTS)


class HealthIn(_Body):
    """What one running replica's health check says now, as an agent sends it."""

    node: str = Field(min_length=1, max_length=K8S_NAME_MAX)
    replica_id: uuid.UUID = Field(alias="replicaId")
    health: ReplicaHealth
    reason: str = Field(max_length=REASON_MAX)

    def to_health(self) -> HealthReport:
        """The protocol value the database side checks and writes."""
        return HealthReport(
            node=self.node, replica_id=self.replica_id, health=self.health, reason=self.reason
        )


class HealthBatchIn(_Body):
    """`POST /v1/health`: health changes of many running replicas."""

    reports: list[HealthIn] = Field(max_length=MAX_REPORTS)


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
    """Stream op `refresh`: send lists again, every node's or only those this stream touched.

    `all` (the default) is what an agent asks for after a refusal: its view went wrong in a way
    the server cannot know. `reported` is the periodic check: only the nodes this stream
    reported on since their lists were last read, as everything else that changes a list is
    pushed anyway (stream.py).
    """

    op: Literal["refresh"]
    scope: Literal["all", "reported"] = "all"


class StreamReports(_Body):
    """Stream op `report`: a batch, answered by `reported` or `refused` with the same id."""

    op: Literal["report"]
    id: int
    reports: list[ReportIn] = Field(max_length=MAX_REPORTS)


class StreamUsage(_Body):
    """Stream op `usage`: samples, answered by `recorded` or `refused` with the same id."""

    op: Literal["usage"]
    id: int
    samples: list[UsageIn] = Field(max_length=MAX_REPORTS)


class StreamHealth(_Body):
    """Stream op `health`: health changes, answered by `recorded` or `refused` with the same id."""

    op: Literal["health"]
    id: int
    reports: list[HealthIn] = Field(max_length=MAX_REPORTS)


class StreamOp(BaseModel):
    """Any op a client sends on the stream."""

    body: Hello | Heartbeat | Refresh | StreamReports | StreamUsage | StreamHealth = Field(
        discriminator="op"
    )


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
        "resources": None if item.request is None else item.request.as_spec(),
        "healthCheck": None if item.health_check is None else item.health_check.as_spec(),
        "health": None if item.health is None else str(item.health),
    }


def resources_in(body: dict[str, Any] | None) -> Resources | None:
    """A request as an agent reads it back (None when the server sent none)."""
    if body is None:
        return None
    return Resources.from_cores(
        cpu_cores=float(body["cpuCores"]),
        memory_mb=int(body["memoryMB"]),
        gpu_units=int(body["gpuUnits"]),
        storage_gb=int(body["storageGB"]),
    )


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
        request=resources_in(body.get("resources")),
        health_check=None
        if body.get("healthCheck") is None
        else HealthCheck.from_spec(body["healthCheck"]),
        health=None if body.get("health") is None else ReplicaHealth(body["health"]),
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


def health_out(report: HealthReport) -> dict[str, Any]:
    """A health report as an agent sends it."""
    return {
        "node": report.node,
        "replicaId": str(report.replica_id),
        "health": str(report.health),
        "reason": report.reason,
    }


def usage_out(sample: UsageSample) -> dict[str, Any]:
    """A usage sample as an agent sends it."""
    return {
        "node": sample.node,
        "replicaId": str(sample.replica_id),
        "cpuCores": sample.usage.cpu_cores,
        "memoryMB": sample.usage.memory_mb,
    }
