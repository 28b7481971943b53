"""The FogDeployment custom resource as our types: its identity, and its spec parsed.

The API server has already validated the object against the CRD schema; parsing it again into
the seed's `DeploymentCreate` keeps the seed's limits true for anything that reaches the
database, even an object stored before a stricter CRD was installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from controller.errors import TerminalError
from controller.model.desired import DesiredDeployment
from controller.model.placement import Strategy
from controller.model.resources import Resources
from controller.schemas import DeploymentCreate, DeploymentScale

GROUP = "fogcompute.io"
VERSION = "v1alpha1"
PLURAL = "fogdeployments"
KIND = "FogDeployment"
# Absent optional resources, as the CRD documents them (the schema sets no defaults so that
# GitOps tools see no drift; the operator fills them in here).
DEFAULT_GPU_UNITS = 0
DEFAULT_STORAGE_GB = 1
CONTAINER_FIELDS = ("env", "ports", "command", "args")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Which object: the namespace is the tenant, the uid tells re-creations apart."""

    namespace: str
    name: str
    uid: str
    generation: int


class InvalidSpecError(TerminalError):
    """The spec breaks the seed's limits: retrying cannot help until it is edited."""


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """A FogDeployment's spec in the seed's terms, and what it asks of us.

    `create` is the seed's DeploymentCreate (its own replica field, 1-100, is not used: the
    desired count, 0-100, is the seed's DeploymentScale); `desired` is the one declaration
    of the tracked fields that the planner, the database row and the status read.
    """

    create: DeploymentCreate
    desired: DesiredDeployment

    @property
    def replicas(self) -> int:
        """The desired replica count."""
        return self.desired.replicas

    @property
    def request(self) -> Resources:
        """What each replica needs."""
        return self.desired.request

    @property
    def revision(self) -> str:
        """The template revision replicas must run."""
        return self.desired.revision

    @property
    def strategy(self) -> Strategy:
        """The placement strategy as the planner's enum."""
        return self.desired.strategy


def object_ref(meta: Mapping[str, Any]) -> ObjectRef:
    """The identity of the object from its metadata."""
    return ObjectRef(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta["uid"]),
        generation=int(meta.get("generation") or 0),
    )


def parse_spec(name: str, spec: Mapping[str, Any]) -> DeploymentSpec:
    """Turn the CRD's camelCase spec into the seed's schema; ValidationError if it breaks it."""
    resources = spec.get("resources") or {}
    create = DeploymentCreate.model_validate(
        {
            "name": name,
            "container_image": spec.get("image"),
            "resources": {
                "cpu_cores": resources.get("cpuCores"),
                "memory_mb": resources.get("memoryMB"),
                "gpu_units": resources.get("gpuUnits", DEFAULT_GPU_UNITS),
                "storage_gb": resources.get("storageGB", DEFAULT_STORAGE_GB),
            },
            "container_spec": {key: spec[key] for key in CONTAINER_FIELDS if key in spec},
            "node_selector": dict(spec.get("nodeSelector") or {}),
            "placement_strategy": (spec.get("placement") or {}).get("strategy", "Spread"),
        }
    )
    scale = DeploymentScale.model_validate({"target_replicas": spec.get("replicas")})
    request = Resources.from_cores(
        cpu_cores=create.resources.cpu_cores,
        memory_mb=create.resources.memory_mb,
        gpu_units=create.resources.gpu_units,
        storage_gb=create.resources.storage_gb,
    )
    desired = DesiredDeployment(
        name=create.name,
        image=create.container_image,
        replicas=scale.target_replicas,
        request=request,
        container_spec=create.container_spec,
        node_selector=create.node_selector,
        strategy=Strategy(create.placement_strategy),
    )
    return DeploymentSpec(create=create, desired=desired)


def read_spec(name: str, spec: Mapping[str, Any]) -> DeploymentSpec:
    """`parse_spec`, with a broken spec classified as InvalidSpecError.

    The message is folded into one line: pydantic's spans several, and it goes into a
    condition and a log line.
    """
    try:
        return parse_spec(name, spec)
    except ValidationError as exc:
        raise InvalidSpecError(" ".join(f"invalid spec: {exc}".split())) from exc
