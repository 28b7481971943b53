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
from controller.model.health import HealthCheck
from controller.model.placement import Strategy
from controller.model.resources import Resources
from controller.model.revisions import DEFAULT_HISTORY_LIMIT
from controller.model.strategy import Rollout, RolloutSpecError, parse_rollout
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
    # The field manager that last wrote the spec (None: unknown): who made a new revision.
    manager: str | None = None


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


def spec_manager(meta: Mapping[str, Any], *, default: str) -> str:
    """The field manager that last wrote the spec (managedFields): who changed it.

    Kubernetes records no user on the object; the manager (`kubectl-client-side-apply`,
    `argocd-controller`, `fogctl`, ...) says which tool changed it, and the API server's
    audit log has the rest. A quota change's actor, a revision's `created_by`.
    """
    writes = [
        entry
        for entry in meta.get("managedFields") or ()
        if "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("subresource") is None
    ]
    if not writes:
        return default
    latest = max(writes, key=lambda entry: str(entry.get("time") or ""))
    return str(latest.get("manager") or default)


def object_ref(meta: Mapping[str, Any]) -> ObjectRef:
    """The identity of the object from its metadata."""
    return ObjectRef(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta["uid"]),
        generation=int(meta.get("generation") or 0),
        manager=spec_manager(meta, default="") or None,
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
        health_check=_health_check(spec.get("healthCheck")),
        min_ready_seconds=_non_negative(spec, "minReadySeconds", default=0),
        revision_history_limit=_non_negative(
            spec, "revisionHistoryLimit", default=DEFAULT_HISTORY_LIMIT
        ),
        rollout=_rollout(spec),
    )
    return DeploymentSpec(create=create, desired=desired)


def _rollout(spec: Mapping[str, Any]) -> Rollout:
    """spec.strategy, paused and progressDeadlineSeconds; InvalidSpecError naming the field."""
    try:
        return parse_rollout(spec)
    except RolloutSpecError as exc:
        raise InvalidSpecError(str(exc)) from exc


def _health_check(spec: Any) -> HealthCheck | None:
    """spec.healthCheck with its defaults (None when absent); InvalidSpecError when malformed.

    The CRD refuses a malformed check; an object stored before it was installed still ends in
    a condition that names the field.
    """
    if spec is None:
        return None
    try:
        if not isinstance(spec, Mapping):
            raise ValueError("must be an object")
        return HealthCheck.from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise InvalidSpecError(f"spec.healthCheck: {exc}") from exc


def _non_negative(spec: Mapping[str, Any], field: str, *, default: int) -> int:
    """An optional whole number of the spec: `default` when absent, at least 0.

    minReadySeconds and revisionHistoryLimit; InvalidSpecError naming the field otherwise.
    """
    value = spec.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidSpecError(f"spec.{field}: must be an integer of at least 0: {value!r:.40}")
    return value


# Where each seed field comes from in the manifest (parse_spec's mapping, reversed): errors
# name fields as the user wrote them, not as the seed's schema calls them.
_MANIFEST_PATHS: Mapping[tuple[str, ...], str] = {
    ("name",): "metadata.name",
    ("container_image",): "spec.image",
    ("resources",): "spec.resources",
    ("resources", "cpu_cores"): "spec.resources.cpuCores",
    ("resources", "memory_mb"): "spec.resources.memoryMB",
    ("resources", "gpu_units"): "spec.resources.gpuUnits",
    ("resources", "storage_gb"): "spec.resources.storageGB",
    ("container_spec",): "spec",  # env, ports, command and args sit directly in the spec
    ("node_selector",): "spec.nodeSelector",
    ("placement_strategy",): "spec.placement.strategy",
    ("target_replicas",): "spec.replicas",
}
# Pydantic's error types in the words of a Kubernetes validation message, with the bound
# from the error's context; any other type keeps pydantic's own sentence (never its link).
_PROBLEMS: Mapping[str, str] = {
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
    "missing": "is required",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "extra_forbidden": "is not a known field",
}


def _manifest_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the manifest's dotted path.

    The longest known prefix is translated; the rest follows, map keys after a dot and list
    indexes in brackets.
    """
    for size in range(len(loc), 0, -1):
        path = _MANIFEST_PATHS.get(tuple(str(part) for part in loc[:size]))
        if path is not None:
            break
    else:
        path, size = "spec", 0
    for part in loc[size:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _bound(value: Any) -> Any:
    """32.0 reads as 32, as the manifest would write it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def spec_problems(exc: ValidationError) -> str:
    """One line naming each broken field as the manifest spells it, and what it must be.

    e.g. `spec.resources.cpuCores: must be at most 32; spec.image: is required`.
    """
    problems = []
    for error in exc.errors(include_url=False):
        template = _PROBLEMS.get(error["type"])
        if error["type"].endswith("_type") and error.get("input") is None:
            template = _PROBLEMS["missing"]  # parse_spec passes an absent field on as None
        bounds = {key: _bound(value) for key, value in (error.get("ctx") or {}).items()}
        if template is not None:
            text = template.format(**bounds)
        else:
            text = error["msg"][:1].lower() + error["msg"][1:]
        problems.append(f"{_manifest_path(error['loc'])}: {' '.join(text.split())}")
    return "; ".join(problems)


def declared_replicas(spec: Mapping[str, Any]) -> int | None:
    """The spec's replica count if it is valid by itself, whatever else is wrong; else None."""
    try:
        scale = DeploymentScale.model_validate({"target_replicas": spec.get("replicas")})
    except ValidationError:
        return None
    return scale.target_replicas


def _nul_paths(value: Any, path: str = "spec") -> list[str]:
    """Where `value` holds a NUL character (in a string or a map key), as manifest paths.

    JSON carries NUL; PostgreSQL text and JSONB cannot store it. The CRD refuses it in the free
    text fields, but an object stored before that rule (or a field without it) must still end
    in a condition that names the field, not in a driver error at every reconcile.
    """
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, Mapping):
        found = []
        for key, item in value.items():
            # The key is shown with its NUL escaped: the path goes into conditions and events.
            here = f"{path}.{key}".replace("\x00", "\\x00")
            found += [here] if "\x00" in str(key) else _nul_paths(item, here)
        return found
    if isinstance(value, list):
        return [
            where
            for index, item in enumerate(value)
            for where in _nul_paths(item, f"{path}[{index}]")
        ]
    return []


def read_spec(name: str, spec: Mapping[str, Any]) -> DeploymentSpec:
    """`parse_spec`, with a broken spec classified as InvalidSpecError.

    The message names the fields as the manifest does, on one line: it goes into a condition,
    an event and a log line.
    """
    nul = "; ".join(f"{where}: must not contain a NUL character" for where in _nul_paths(spec))
    try:
        parsed = parse_spec(name, spec)
    except ValidationError as exc:
        raise InvalidSpecError("; ".join(filter(None, [spec_problems(exc), nul]))) from exc
    if nul:
        raise InvalidSpecError(nul)
    return parsed
