"""The rules `fogctl check` holds the record to, and the verdicts that are pure logic.

The operator is trusted to keep these at all times; the checker exists so that an administrator
(and the fault suite) can prove it after any crash, outage or race, from the data alone. The
database layer finds rows that may break a rule (it must scan, and some rules are easiest to say
in SQL); the judgements that need no I/O live here so that the unit tests can try each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from controller.model.resources import Resources


class Rule(StrEnum):
    """What a violation breaks; the values are what `fogctl check` prints and tests match."""

    OVERCOMMITTED = "node-overcommitted"
    ALLOCATION = "node-allocation-mismatch"
    REPLICA_HISTORY = "replica-history"
    DEPLOYMENT_HISTORY = "deployment-history"
    ACTIVE_ON_DELETED = "active-replica-of-deleted-deployment"
    ACTIVE_ON_LOST_NODE = "replica-on-lost-node"
    READY_MISMATCH = "ready-replicas-mismatch"
    ROW_WITHOUT_OBJECT = "row-without-object"


@dataclass(frozen=True, slots=True)
class Violation:
    """One row that breaks one rule: which, where (`kind/name`), and what was found."""

    rule: Rule
    subject: str
    detail: str


S = TypeVar("S", bound=StrEnum)

_DIMENSIONS = ("cpu_millis", "memory_mb", "gpu_units", "storage_gb")


def node_violations(
    *, name: str, capacity: Resources, allocated: Resources, held: Resources
) -> list[Violation]:
    """A node's recorded allocation against its capacity and the replicas that hold it.

    `held` is the sum of the requests of the replicas holding capacity there, counted afresh;
    `allocated` is the running total the trigger keeps. They must agree, and neither may pass
    the capacity in any dimension (the CHECK constraints should make that impossible; the
    checker does not take them on trust, since a constraint can be dropped).
    """
    subject = f"node/{name}"
    found: list[Violation] = []
    for dimension in _DIMENSIONS:
        limit = getattr(capacity, dimension)
        for what, amount in (("allocated", allocated), ("held by replicas", held)):
            value = getattr(amount, dimension)
            if value > limit:
                detail = f"{dimension} {what} {value} > capacity {limit}"
                found.append(Violation(Rule.OVERCOMMITTED, subject, detail))
    if allocated != held:
        found.append(
            Violation(
                Rule.ALLOCATION,
                subject,
                f"allocation totals {_amounts(allocated)} != sum of holding replicas "
                f"{_amounts(held)}",
            )
        )
    return found


def _amounts(value: Resources) -> str:
    return ", ".join(f"{dimension}={getattr(value, dimension)}" for dimension in _DIMENSIONS)


def edges(transitions: Mapping[S, frozenset[S]]) -> list[str]:
    """Every allowed change of a state machine as "old>new", as the history query takes them."""
    return sorted(f"{old}>{new}" for old, successors in transitions.items() for new in successors)


@dataclass(frozen=True, slots=True)
class LiveObject:
    """A FogDeployment as the API server holds it, reduced to what the checker compares."""

    namespace: str
    name: str
    uid: str
    replicas: int | None
    # The full template revision of its spec, None if the spec does not parse.
    revision: str | None
    # Ready=True for the generation the API server holds (an older verdict proves nothing).
    claims_ready: bool


@dataclass(frozen=True, slots=True)
class RecordedDeployment:
    """A deployment row that is not soft-deleted, with its active replicas per revision."""

    namespace: str
    name: str
    k8s_uid: str | None
    active_by_revision: Mapping[str, int]


def kube_violations(
    *, live: Iterable[LiveObject], stored: Iterable[RecordedDeployment]
) -> list[Violation]:
    """The record against the API server: Ready means what it says; no row outlives its object."""
    rows = {(row.namespace, row.name): row for row in stored}
    objects = {(obj.namespace, obj.name): obj for obj in live}
    found: list[Violation] = []
    for key, obj in sorted(objects.items()):
        row = rows.get(key)
        if row is not None and row.k8s_uid not in (None, obj.uid):
            row = None  # the record of an earlier object of that name holds nothing of this one
        if not obj.claims_ready or obj.revision is None or obj.replicas is None:
            continue
        active = row.active_by_revision.get(obj.revision, 0) if row else 0
        others = sum(row.active_by_revision.values()) - active if row else 0
        if active != obj.replicas or others:
            found.append(
                Violation(
                    Rule.READY_MISMATCH,
                    f"fogdeployment/{obj.namespace}/{obj.name}",
                    f"status says Ready with spec.replicas={obj.replicas}, but the record has "
                    f"{active} active replicas of revision {obj.revision[:12]} and {others} of "
                    f"older revisions",
                )
            )
    for key, row in sorted(rows.items()):
        counterpart = objects.get(key)
        if counterpart is None:
            detail = "no live FogDeployment of that name"
        elif row.k8s_uid is not None and row.k8s_uid != counterpart.uid:
            detail = f"row belongs to object uid {row.k8s_uid}, the live one is {counterpart.uid}"
        else:
            continue
        found.append(
            Violation(Rule.ROW_WITHOUT_OBJECT, f"deployment/{row.namespace}/{row.name}", detail)
        )
    return found
