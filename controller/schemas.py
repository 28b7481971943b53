"""The seed's API schemas (INFRA-02), with its validation limits.

These are the typed shapes of a deployment as the rest of the platform exchanges it: the
operator turns a FogDeployment's spec into a `DeploymentCreate` (so the seed's limits hold even
for input that bypassed the API server), and `fogctl history -o json` prints the responses.
The CRD repeats the same limits so that the API server rejects bad manifests first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from controller.model.states import DeploymentStatus, ReplicaStatus

# The seed's limits, named once; the CRD and the database CHECKs use the same numbers.
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
NAME_MAX = 100
IMAGE_MAX = 500
REPLICAS_MAX = 100
CPU_MIN, CPU_MAX = 0.5, 32.0
MEMORY_MIN_MB, MEMORY_MAX_MB = 512, 65536
GPU_MAX = 8
STORAGE_MIN_GB, STORAGE_MAX_GB = 1, 1000

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
Image = Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)]
TargetReplicas = Annotated[int, Field(ge=1, le=REPLICAS_MAX)]


class _Strict(BaseModel):
    """Requests refuse unknown fields and coercion: a typo should fail, not vanish."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Response(BaseModel):
    """Responses are read straight from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


class DeploymentResourceCreate(_Strict):
    """Per-replica resources: fractional CPU cores, memory, GPUs and storage."""

    cpu_cores: float = Field(ge=CPU_MIN, le=CPU_MAX, allow_inf_nan=False)
    memory_mb: int = Field(ge=MEMORY_MIN_MB, le=MEMORY_MAX_MB)
    gpu_units: int = Field(default=0, ge=0, le=GPU_MAX)
    storage_gb: int = Field(ge=STORAGE_MIN_GB, le=STORAGE_MAX_GB)


class DeploymentCreate(_Strict):
    """A new deployment: name, image, replica count and per-replica resources."""

    name: Name
    container_image: Image
    target_replicas: TargetReplicas = 1
    resources: DeploymentResourceCreate
    container_spec: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    placement_strategy: str = Field(default="Spread", pattern=r"^(Spread|BinPack)$")


class DeploymentUpdate(_Strict):
    """A partial change: only the fields given are changed."""

    container_image: Image | None = None
    target_replicas: TargetReplicas | None = None
    resources: DeploymentResourceCreate | None = None


class DeploymentScale(_Strict):
    """A new replica count; 0 stops the deployment without deleting it."""

    target_replicas: int = Field(ge=0, le=REPLICAS_MAX)


class DeploymentResourceResponse(_Response):
    """Resources of a deployment as stored."""

    cpu_cores: float
    memory_mb: int
    gpu_units: int
    storage_gb: int


class DeploymentReplicaResponse(_Response):
    """One replica as stored."""

    id: uuid.UUID
    node_id: uuid.UUID | None
    status: ReplicaStatus
    container_id: str | None
    ordinal: int
    revision: str
    started_at: datetime | None
    stopped_at: datetime | None
    created_at: datetime


class DeploymentStatusHistoryResponse(_Response):
    """One deployment status change."""

    old_status: DeploymentStatus | None
    new_status: DeploymentStatus
    changed_by: uuid.UUID | None
    actor: str | None
    reason: str | None
    changed_at: datetime


class ReplicaStatusHistoryResponse(_Response):
    """One replica status change."""

    replica_id: uuid.UUID
    old_status: ReplicaStatus | None
    new_status: ReplicaStatus
    node_id: uuid.UUID | None
    actor: str | None
    reason: str | None
    changed_at: datetime


class DeploymentListResponse(_Response):
    """A deployment in a listing: enough to pick one out."""

    id: uuid.UUID
    name: str
    container_image: str
    target_replicas: int
    status: DeploymentStatus
    created_at: datetime


class DeploymentResponse(DeploymentListResponse):
    """A deployment with everything attached to it."""

    container_spec: dict[str, Any]
    node_selector: dict[str, str]
    placement_strategy: str
    revision: str
    updated_at: datetime
    deleted_at: datetime | None
    resources: DeploymentResourceResponse | None
    replicas: list[DeploymentReplicaResponse] = Field(default_factory=list)


class DeploymentCreateResponse(_Response):
    """What creating a deployment answers."""

    id: uuid.UUID
    name: str
    status: DeploymentStatus
    message: str


class DeploymentOperationResponse(BaseModel):
    """The result of an operation (scale, delete, ...) on a deployment."""

    deployment_id: uuid.UUID
    operation: str
    success: bool
    message: str
