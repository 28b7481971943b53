"""Namespace quotas (FogQuota): how many more replicas a deployment may place, and why not.

A quota limits the totals a namespace holds on fog nodes: the requests of its replicas that
hold capacity (placed and not yet stopped), how many such replicas, and how many
FogDeployments. The decision is pure so that it can be tested exhaustively; the caller reads
the usage under the lock of the namespace's quota rows, in the transaction that places, so that
two placements can never both take the last unit (docs/design/quotas.md).

What counts, and why:

* Only replicas that hold capacity count, as node allocation counts them. A replica waiting
  for a node (or for quota) holds nothing, so waiting replicas never block each other.
* Stopping replicas still count: they still run, and the room they hold is free only once
  they stop. A rollout under a full quota therefore proceeds one stop at a time.
* `fogDeployments` cannot stop a FogDeployment from being created (that would take an
  admission webhook); it decides which may place replicas. The oldest `fogDeployments` live
  deployments of the namespace may; a newer one gets `QuotaExceeded` and places none. Replicas
  a deployment already runs are never stopped by a quota, whichever limit was lowered: a quota
  governs what is placed next, as Kubernetes' ResourceQuota governs what is created next.

A batch of reconciles (issue 15 item 1) asks the gate once per namespace for all its keys
(`admit`): each key is admitted against the usage plus what the keys before it were admitted,
so that the batch never admits more than the quota holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from controller.model.conditions import ConditionType, condition_set
from controller.model.resources import MILLIS_PER_CORE, Resources

# The status reason of replicas held back by a quota (and the deployment row's status reason,
# which migration 0007's wakeup trigger looks for).
QUOTA_EXCEEDED = "QuotaExceeded"


class QuotaResource(StrEnum):
    """The limited resources, spelled as in FogQuota's spec.hard."""

    CPU = "cpuCores"
    MEMORY = "memoryMB"
    GPU = "gpuUnits"
    STORAGE = "storageGB"
    REPLICAS = "replicas"
    FOG_DEPLOYMENTS = "fogDeployments"


@dataclass(frozen=True, slots=True)
class QuotaAmounts:
    """An amount of each quota resource: CPU in millicores, exact like `Resources`.

    As limits, None means "not limited"; as usage, every field is set.
    """

    cpu_millis: int | None = None
    memory_mb: int | None = None
    gpu_units: int | None = None
    storage_gb: int | None = None
    replicas: int | None = None
    fog_deployments: int | None = None

    def __post_init__(self) -> None:
        for value in self.values():
            # bool is an int subclass; a True here is a caller bug, not one unit.
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"quota amounts must be int or None, got {value!r}")
            if value is not None and value < 0:
                raise ValueError(f"quota amounts must be >= 0, got {value}")

    def values(self) -> tuple[int | None, ...]:
        """The six amounts in QuotaResource order."""
        return tuple(getattr(self, field.name) for field in fields(self))

    def by_resource(self) -> dict[QuotaResource, int | None]:
        """Each amount under its resource's name."""
        return dict(zip(QuotaResource, self.values(), strict=True))

    @classmethod
    def usage(cls, *, held: Resources, replicas: int, fog_deployments: int) -> QuotaAmounts:
        """A namespace's usage: what its capacity-holding replicas request, and the counts."""
        return cls(*held.as_tuple(), replicas, fog_deployments)

    def placing(self, request: Resources, count: int) -> QuotaAmounts:
        """The usage once `count` more replicas of `request` hold capacity."""
        per_replica = _per_replica(request)
        return QuotaAmounts(
            *(
                (value or 0) + per_replica.get(resource, 0) * count
                for resource, value in self.by_resource().items()
            )
        )

    def as_status(self) -> dict[str, float | int]:
        """The amounts that are set, in the CRD's names and units (CPU in cores)."""
        return {
            str(resource): _in_units(resource, value)
            for resource, value in self.by_resource().items()
            if value is not None
        }


def _in_units(resource: QuotaResource, value: int) -> float | int:
    return value / MILLIS_PER_CORE if resource is QuotaResource.CPU else value


@dataclass(frozen=True, slots=True)
class Quota:
    """One FogQuota: its name and limits."""

    name: str
    hard: QuotaAmounts


@dataclass(frozen=True, slots=True)
class QuotaGate:
    """What a placement in a namespace with quotas decides on, read under the quota lock.

    `used` is the namespace's usage before this plan; `rank` is how many live deployments of
    the namespace are older than this one (every live one, for a deployment not stored yet).
    """

    quotas: tuple[Quota, ...]
    used: QuotaAmounts
    rank: int


@dataclass(frozen=True, slots=True)
class NamespaceQuotas:
    """A namespace's quotas and usage, read under the quotas' lock, and deployments' ages.

    `ranks` holds, for each stored deployment asked about, how many live deployments of the
    namespace are older; one not stored yet is the newest, so its rank is every live one.
    """

    quotas: tuple[Quota, ...]
    used: QuotaAmounts
    ranks: Mapping[uuid.UUID, int]

    def gate(self, deployment_id: uuid.UUID | None) -> QuotaGate:
        """What the deployment's placement decides on when it is the only one asking."""
        rank = (
            (self.used.fog_deployments or 0) if deployment_id is None else self.ranks[deployment_id]
        )
        return QuotaGate(quotas=self.quotas, used=self.used, rank=rank)


@dataclass(frozen=True, slots=True)
class Claim:
    """One key of a batch at the gate: its deployment (None: new), request, and wants."""

    deployment_id: uuid.UUID | None
    request: Resources
    wanted: int  # replicas it would place, quota aside


def admit(namespace: NamespaceQuotas, claims: Sequence[Claim]) -> list[QuotaGate | None]:
    """The gate each claim of one batch decides on, in claim order; None: it goes alone.

    Claims are taken oldest first (stored ones by rank, then the new ones in order, as they
    will be inserted), each against the usage plus every replica the claims before it were
    admitted, in full: the nodes may take fewer, never more, so the batch cannot pass a
    limit. A new deployment ranks after the new ones admitted before it. A claim cut short by
    the batch itself (it would be admitted more now, alone) is left to its own reconcile after
    the batch commits, which reads what was placed rather than what was admitted (a status must
    not blame the quota for room the batch only reserved), and so is every younger claim: a
    younger deployment never takes room an older one was refused, as if each went alone.
    """
    order = sorted(
        range(len(claims)),
        key=lambda index: (
            claims[index].deployment_id is None,
            namespace.gate(claims[index].deployment_id).rank,
            index,
        ),
    )
    gates: list[QuotaGate | None] = [None] * len(claims)
    used, news = namespace.used, 0
    for index in order:
        claim = claims[index]
        alone = namespace.gate(claim.deployment_id)
        new = claim.deployment_id is None
        shared = replace(alone, used=used, rank=alone.rank + (news if new else 0))
        room = allowance(gate=shared, request=claim.request).replicas
        if room is not None and room < claim.wanted:
            own = allowance(gate=alone, request=claim.request).replicas
            if own is None or room < own:
                break
        gates[index] = shared
        used = used.placing(
            claim.request, claim.wanted if room is None else min(room, claim.wanted)
        )
        if new:
            news += 1
    return gates


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many more replicas may be placed (None: no quota limits it), and what binds."""

    replicas: int | None
    blocker: Quota | None = None
    resource: QuotaResource | None = None

    def message(self, *, gate: QuotaGate, request: Resources, wanted: int) -> str | None:
        """One line naming the quota, the resource and the amounts, when `wanted` is cut.

        e.g. `quota team-a: gpuUnits 4/4 used, 1 more requested`: usage as it is once the
        allowed replicas are placed, and what the replicas left waiting would add.
        """
        if self.replicas is None or wanted <= self.replicas or self.blocker is None:
            return None
        if self.resource is None:
            return None
        resource, allowed = self.resource, self.replicas
        waiting = wanted - allowed
        if resource is QuotaResource.FOG_DEPLOYMENTS:
            used, more = gate.rank, 1
        else:
            per_replica = _per_replica(request)[resource]
            used = _value(gate.used, resource) + per_replica * allowed
            more = per_replica * waiting
        hard = _value(self.blocker.hard, resource)
        return (
            f"quota {self.blocker.name}: {resource} {_shown(resource, used)}/"
            f"{_shown(resource, hard)} used, {_shown(resource, more)} more requested"
        )


def _value(amounts: QuotaAmounts, resource: QuotaResource) -> int:
    value = amounts.by_resource()[resource]
    return 0 if value is None else value


def _shown(resource: QuotaResource, value: int) -> str:
    """An amount as people write it: 2.5 cores, 1000000 MB (never 1e+06)."""
    if resource is not QuotaResource.CPU:
        return str(value)
    cores, millis = divmod(value, MILLIS_PER_CORE)
    return f"{cores}.{millis:03d}".rstrip("0").rstrip(".") if millis else str(cores)


def _per_replica(request: Resources) -> Mapping[QuotaResource, int]:
    """What one replica of `request` adds to each resource but fogDeployments."""
    return dict(
        zip(
            (QuotaResource.CPU, QuotaResource.MEMORY, QuotaResource.GPU, QuotaResource.STORAGE),
            request.as_tuple(),
            strict=True,
        )
    ) | {QuotaResource.REPLICAS: 1}


def _room(
    resource: QuotaResource, *, hard: int, used: int, per_replica: int, rank: int
) -> int | None:
    """Replicas one limit still admits (None: this limit cannot bind this request)."""
    if resource is QuotaResource.FOG_DEPLOYMENTS:
        return None if rank < hard else 0
    if per_replica == 0:
        return None  # asks nothing of it: any number fits
    return max(0, hard - used) // per_replica


def allowance(*, gate: QuotaGate | None, request: Resources) -> Allowance:
    """How many more replicas of `request` the namespace's quotas admit.

    The smallest room over every limit of every quota; ties go to fogDeployments (while it
    binds, freed replicas would not help, so it is what a person needs to read), then to the
    first quota by name and the first resource in spec.hard order, so the message is stable.
    """
    if gate is None:
        return Allowance(replicas=None)
    per_replica = _per_replica(request)
    best = Allowance(replicas=None)
    limits = sorted(
        (
            (
                resource is not QuotaResource.FOG_DEPLOYMENTS,
                quota.name,
                order,
                quota,
                resource,
                hard,
            )
            for quota in gate.quotas
            for order, (resource, hard) in enumerate(quota.hard.by_resource().items())
        ),
        key=lambda limit: limit[:3],
    )
    for *_, quota, resource, hard in limits:
        if hard is None:
            continue
        room = _room(
            resource,
            hard=hard,
            used=_value(gate.used, resource),
            per_replica=per_replica.get(resource, 0),
            rank=gate.rank,
        )
        if room is not None and (best.replicas is None or room < best.replicas):
            best = Allowance(replicas=room, blocker=quota, resource=resource)
    return best


def quota_status(
    *,
    hard: QuotaAmounts,
    used: QuotaAmounts,
    generation: int,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """FogQuota's whole `.status`: hard, used, the used/hard summary, conditions.

    Only limited resources are shown, as `kubectl describe quota` shows only what is limited.
    Ready is True once the operator stores (and so enforces) this generation's limits.
    """
    limited = [resource for resource, value in hard.by_resource().items() if value is not None]
    hard_of, used_of = hard.by_resource(), used.by_resource()
    summary = {
        str(r): f"{_shown(r, used_of[r] or 0)}/{_shown(r, hard_of[r] or 0)}" for r in limited
    }
    message = ", ".join(f"{resource} {fraction}" for resource, fraction in summary.items())
    conditions = condition_set(
        verdict=ConditionType.READY,
        reason="Enforced",
        message=f"enforced: {message}" if message else "enforced: no resource is limited",
        generation=generation,
        previous=previous_conditions,
        now=now,
    )
    return {
        "observedGeneration": generation,
        "hard": hard.as_status(),
        "used": {str(r): _in_units(r, used_of[r] or 0) for r in limited},
        "summary": summary,
        "conditions": [condition.as_dict() for condition in conditions],
    }
