"""The pure verdicts of `fogctl check`: node totals, and the record against the API server."""

from __future__ import annotations

from controller.model.invariants import (
    LiveObject,
    RecordedDeployment,
    Rule,
    edges,
    kube_violations,
    node_violations,
)
from controller.model.resources import Resources
from controller.model.states import REPLICA_TRANSITIONS

REVISION = "a" * 64
OLD = "b" * 64


def amount(cpu: int = 0, memory: int = 0) -> Resources:
    return Resources(cpu_millis=cpu, memory_mb=memory, gpu_units=0, storage_gb=0)


def live(
    name: str = "web", *, replicas: int = 3, ready: bool = True, uid: str = "u1"
) -> LiveObject:
    return LiveObject(
        namespace="team-a",
        name=name,
        uid=uid,
        replicas=replicas,
        revision=REVISION,
        claims_ready=ready,
    )


def row(name: str = "web", *, uid: str | None = "u1", **active: int) -> RecordedDeployment:
    by_revision = {REVISION: active.get("new", 0), OLD: active.get("old", 0)}
    return RecordedDeployment(
        namespace="team-a",
        name=name,
        k8s_uid=uid,
        active_by_revision={k: v for k, v in by_revision.items() if v},
    )


def test_a_node_whose_totals_match_its_replicas_within_capacity_passes() -> None:
    held = amount(cpu=1500, memory=1024)
    assert node_violations(name="n", capacity=amount(2000, 2048), allocated=held, held=held) == []


def test_a_node_is_overcommitted_by_its_totals_or_by_its_replicas() -> None:
    found = node_violations(
        name="n", capacity=amount(1000, 1024), allocated=amount(1500, 512), held=amount(500, 2048)
    )
    assert [(v.rule, v.detail) for v in found] == [
        (Rule.OVERCOMMITTED, "cpu_millis allocated 1500 > capacity 1000"),
        (Rule.OVERCOMMITTED, "memory_mb held by replicas 2048 > capacity 1024"),
        (
            Rule.ALLOCATION,
            "allocation totals cpu_millis=1500, memory_mb=512, gpu_units=0, storage_gb=0 != sum "
            "of holding replicas cpu_millis=500, memory_mb=2048, gpu_units=0, storage_gb=0",
        ),
    ]
    assert {v.subject for v in found} == {"node/n"}


def test_edges_are_the_state_machine_and_nothing_else() -> None:
    listed = edges(REPLICA_TRANSITIONS)
    assert "pending>starting" in listed
    assert "running>pending" not in listed
    assert len(listed) == sum(len(s) for s in REPLICA_TRANSITIONS.values())


def test_ready_with_exactly_the_desired_replicas_of_the_current_revision_passes() -> None:
    assert kube_violations(live=[live()], stored=[row(new=3)]) == []


def test_ready_with_too_few_or_old_replicas_is_a_mismatch() -> None:
    for recorded in (row(new=2), row(new=3, old=1), row(new=4)):
        (violation,) = kube_violations(live=[live()], stored=[recorded])
        assert (violation.rule, violation.subject) == (
            Rule.READY_MISMATCH,
            "fogdeployment/team-a/web",
        )


def test_an_object_that_does_not_claim_ready_is_not_judged_on_counts() -> None:
    assert kube_violations(live=[live(ready=False)], stored=[row(new=1)]) == []


def test_a_ready_object_with_no_row_at_all_is_a_mismatch() -> None:
    (violation,) = kube_violations(live=[live()], stored=[])
    assert "0 active replicas" in violation.detail


def test_a_row_without_its_object_or_of_an_earlier_object_is_named() -> None:
    found = kube_violations(
        live=[live("web", uid="u2")], stored=[row("web", uid="u1", new=3), row("gone", new=1)]
    )
    assert [(v.rule, v.subject) for v in found] == [
        (Rule.READY_MISMATCH, "fogdeployment/team-a/web"),
        (Rule.ROW_WITHOUT_OBJECT, "deployment/team-a/gone"),
        (Rule.ROW_WITHOUT_OBJECT, "deployment/team-a/web"),
    ]
    assert found[2].detail == "row belongs to object uid u1, the live one is u2"
