"""FogQuota decisions (model/quota.py) and the planner under a quota: never over it.

The properties replay what the reconciler does under the quota lock: read the namespace's
usage, let the planner place what the quota admits, apply, and let the next deployment (or
the next reconcile) read the usage again. Whatever the order, no limit is ever passed and no
node over-committed.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import Cluster, desired, node, requests, res, status_of

from controller.kube.quota import read_hard
from controller.kube.resource import InvalidSpecError, spec_manager
from controller.model.planner import plan
from controller.model.quota import (
    QUOTA_EXCEEDED,
    Claim,
    NamespaceQuotas,
    Quota,
    QuotaAmounts,
    QuotaGate,
    QuotaResource,
    admit,
    allowance,
    quota_status,
)
from controller.model.resources import ZERO, Resources
from controller.model.states import holds_capacity

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def used(held: Resources = ZERO, *, replicas: int = 0, fog_deployments: int = 0) -> QuotaAmounts:
    return QuotaAmounts.usage(held=held, replicas=replicas, fog_deployments=fog_deployments)


def gate(*quotas: Quota, usage: QuotaAmounts | None = None, rank: int = 0) -> QuotaGate:
    return QuotaGate(quotas=quotas, used=usage or used(), rank=rank)


def test_no_quota_admits_any_number() -> None:
    assert allowance(gate=None, request=res(500, 512)).replicas is None


def test_the_scarcest_limit_decides_and_the_message_names_it() -> None:
    team = Quota("team-a", QuotaAmounts(cpu_millis=8000, gpu_units=4))
    state = gate(team, usage=used(res(1000, 512, 3, 1), replicas=3))
    allowed = allowance(gate=state, request=res(1000, 512, 1, 1))
    assert (allowed.replicas, allowed.resource) == (1, QuotaResource.GPU)
    message = allowed.message(gate=state, request=res(1000, 512, 1, 1), wanted=2)
    assert message == "quota team-a: gpuUnits 4/4 used, 1 more requested"
    assert allowed.message(gate=state, request=res(1000, 512, 1, 1), wanted=1) is None


def test_cpu_is_shown_in_cores() -> None:
    state = gate(Quota("small", QuotaAmounts(cpu_millis=1500)), usage=used(res(1000)))
    allowed = allowance(gate=state, request=res(500, 512))
    assert allowed.replicas == 1
    message = allowed.message(gate=state, request=res(500, 512), wanted=3)
    assert message == "quota small: cpuCores 1.5/1.5 used, 1 more requested"


def test_large_and_fractional_amounts_are_written_out() -> None:
    state = gate(
        Quota("big", QuotaAmounts(cpu_millis=1_000_000_000, memory_mb=1_000_000)),
        usage=used(res(999_999_950, 1_000_000)),
    )
    allowed = allowance(gate=state, request=res(50, 512))
    message = allowed.message(gate=state, request=res(50, 512), wanted=2)
    assert message == "quota big: memoryMB 1000000/1000000 used, 1024 more requested"
    cpu = gate(Quota("c", QuotaAmounts(cpu_millis=1_000_000_000)), usage=used(res(999_999_950)))
    message = allowance(gate=cpu, request=res(75)).message(gate=cpu, request=res(75), wanted=1)
    assert message == "quota c: cpuCores 999999.95/1000000 used, 0.075 more requested"


def test_a_resource_the_request_does_not_ask_for_never_binds() -> None:
    state = gate(Quota("q", QuotaAmounts(gpu_units=0)))
    assert allowance(gate=state, request=res(500, 512)).replicas is None
    assert allowance(gate=state, request=res(500, 512, 1)).replicas == 0


def test_usage_over_a_lowered_limit_admits_nothing() -> None:
    state = gate(Quota("q", QuotaAmounts(replicas=2)), usage=used(replicas=5))
    assert allowance(gate=state, request=res(500, 512)).replicas == 0


def test_fog_deployments_admits_the_oldest_only() -> None:
    limit = Quota("q", QuotaAmounts(fog_deployments=2))
    assert allowance(gate=gate(limit, rank=1), request=res(500)).replicas is None
    newer = gate(limit, rank=2)
    allowed = allowance(gate=newer, request=res(500))
    assert allowed.replicas == 0
    message = allowed.message(gate=newer, request=res(500), wanted=3)
    assert message == "quota q: fogDeployments 2/2 used, 1 more requested"


def test_fog_deployments_is_named_when_it_binds_with_another_limit() -> None:
    state = gate(
        Quota("a", QuotaAmounts(replicas=3)),
        Quota("b", QuotaAmounts(fog_deployments=2)),
        usage=used(replicas=3),
        rank=2,
    )
    allowed = allowance(gate=state, request=res(500))
    assert (allowed.replicas, allowed.resource) == (0, QuotaResource.FOG_DEPLOYMENTS)


def test_several_quotas_all_apply_and_ties_go_to_the_first_by_name() -> None:
    state = gate(
        Quota("zeta", QuotaAmounts(replicas=1)),
        Quota("alpha", QuotaAmounts(replicas=1)),
        Quota("mid", QuotaAmounts(memory_mb=4096)),
    )
    allowed = allowance(gate=state, request=res(500, 512))
    assert (allowed.replicas, allowed.blocker) == (1, state.quotas[1])


def test_amounts_refuse_negative_and_non_integers() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        QuotaAmounts(replicas=-1)
    with pytest.raises(TypeError, match="int"):
        QuotaAmounts(gpu_units=True)


def test_status_shows_limited_resources_as_describe_quota_does() -> None:
    body = quota_status(
        hard=QuotaAmounts(cpu_millis=4000, gpu_units=4, fog_deployments=3),
        used=used(res(2500, 2048, 4, 10), replicas=5, fog_deployments=2),
        generation=3,
        previous_conditions=[],
        now=NOW,
    )
    assert body["hard"] == {"cpuCores": 4.0, "gpuUnits": 4, "fogDeployments": 3}
    assert body["used"] == {"cpuCores": 2.5, "gpuUnits": 4, "fogDeployments": 2}
    assert body["summary"] == {"cpuCores": "2.5/4", "gpuUnits": "4/4", "fogDeployments": "2/3"}
    assert body["observedGeneration"] == 3
    ready = next(c for c in body["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Enforced")


def test_planner_places_no_more_than_the_quota_room() -> None:
    cluster = Cluster.of(node("n1", res(8000, 8192)), node("n2", res(8000, 8192)))
    spec = replace(desired(5), quota_room=2)
    step = cluster.plan(spec)
    assert sum(1 for new in step.create if new.node_id is not None) == 2
    assert (len(step.create), step.unplaced, step.quota_held) == (5, 3, 3)
    cluster.apply(step, spec)
    # Raised: the waiting replicas are assigned, none created twice.
    raised = cluster.plan(replace(spec, quota_room=10))
    assert (len(raised.assign), len(raised.create), raised.unplaced) == (3, 0, 0)


def test_status_says_quota_exceeded_with_the_message() -> None:
    cluster = Cluster.of(node("n1", res(8000, 8192)))
    spec = replace(desired(2), quota_room=1)
    step = cluster.plan(spec)
    cluster.apply(step, spec)
    status = status_of(
        list(cluster.replicas.values()),
        want=2,
        now=NOW,
        unplaced=step.unplaced,
        shortfall=step.shortfall,
        quota="quota q: replicas 1/1 used, 1 more requested",
    )
    stalled = next(c for c in status.conditions if c.status)
    assert (stalled.type, stalled.reason) == ("Stalled", QUOTA_EXCEEDED)
    assert stalled.message.startswith("quota q: replicas 1/1 used, 1 more requested")
    assert status.unplaced_replicas == 1


# --- a batch at the gate (admit) ------------------------------------------------------------

OLD, YOUNG = uuid.UUID(int=1), uuid.UUID(int=2)


def namespace(hard: QuotaAmounts, usage: QuotaAmounts | None = None) -> NamespaceQuotas:
    return NamespaceQuotas(
        quotas=(Quota("q", hard),), used=usage or used(), ranks={OLD: 0, YOUNG: 1}
    )


def test_a_batch_admits_the_oldest_first_against_what_the_ones_before_took() -> None:
    team = namespace(QuotaAmounts(replicas=10), used(replicas=2, fog_deployments=2))
    young, old = Claim(YOUNG, res(100), wanted=3), Claim(OLD, res(100), wanted=4)
    first, second = admit(team, [young, old])
    assert first is not None
    assert second is not None
    assert (second.used.replicas, first.used.replicas) == (2, 6)  # OLD first, whatever order
    assert allowance(gate=first, request=res(100)).replicas == 4


def test_a_key_the_batch_cut_short_goes_alone_and_one_the_quota_cut_stays() -> None:
    team = namespace(QuotaAmounts(replicas=10))
    claims = [Claim(OLD, res(100), wanted=6), Claim(YOUNG, res(100), 6), Claim(None, res(100), 1)]
    gates = admit(team, claims)
    assert gates[0] is not None
    assert gates[1] is None  # alone it would get 6; the batch left it 4
    assert gates[2] is None  # it fits, but it is younger than one the batch refused
    # Cut by the quota itself (12 > 10 alone too) and not further by the batch: stays.
    over = admit(team, [Claim(OLD, res(100), wanted=12), Claim(YOUNG, res(100), wanted=0)])
    assert over[0] is not None
    assert over[1] is not None
    allowed = allowance(gate=over[0], request=res(100))
    assert allowed.message(gate=over[0], request=res(100), wanted=12) == (
        "quota q: replicas 10/10 used, 2 more requested"
    )


def test_new_deployments_rank_after_the_new_ones_admitted_before_them() -> None:
    team = namespace(QuotaAmounts(fog_deployments=3), used(fog_deployments=2))
    first, second = admit(team, [Claim(None, res(100), 1), Claim(None, res(100), 1)])
    assert first is not None
    assert first.rank == 2  # the third deployment: admitted
    assert second is None  # the fourth only because of the third: alone, after it is stored
    # Past the limit already: both are held by the quota itself, each with its own rank.
    full = namespace(QuotaAmounts(fog_deployments=2), used(fog_deployments=2))
    held = admit(full, [Claim(None, res(100), 1), Claim(None, res(100), 1)])
    assert [gate.rank if gate else None for gate in held] == [2, 3]


# --- properties ---------------------------------------------------------------------------

limits = st.builds(
    QuotaAmounts,
    cpu_millis=st.none() | st.integers(0, 6000),
    memory_mb=st.none() | st.integers(0, 8192),
    gpu_units=st.none() | st.integers(0, 3),
    storage_gb=st.none() | st.integers(0, 200),
    replicas=st.none() | st.integers(0, 8),
    fog_deployments=st.none() | st.integers(0, 3),
)


def _over(amounts: QuotaAmounts, hard: QuotaAmounts) -> set[QuotaResource]:
    got, limit = amounts.by_resource(), hard.by_resource()
    return {
        resource
        for resource in QuotaResource
        if resource is not QuotaResource.FOG_DEPLOYMENTS
        and limit[resource] is not None
        and (got[resource] or 0) > (limit[resource] or 0)
    }


def _holding(cluster: Cluster) -> int:
    return sum(
        1
        for r in cluster.replicas.values()
        if holds_capacity(status=r.status, has_node=r.node_id is not None)
    )


def _usage(deployments: list[Cluster]) -> QuotaAmounts:
    """The namespace's usage as db/quotas.py sums it: replicas that hold capacity."""
    held = sum((sum(c.held().values(), ZERO) for c in deployments), ZERO)
    return used(held, replicas=sum(_holding(c) for c in deployments))


@given(
    hard=limits,
    capacity=st.builds(
        res, st.integers(0, 8000), st.integers(0, 16384), st.integers(0, 4), st.integers(0, 200)
    ),
    specs=st.lists(st.tuples(requests, st.integers(0, 6)), min_size=1, max_size=4),
    turns=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=12),
)
def test_property_reconciles_in_any_order_never_pass_a_quota_nor_a_node(
    hard: QuotaAmounts,
    capacity: Resources,
    specs: list[tuple[Resources, int]],
    turns: list[tuple[int, bool]],
) -> None:
    """Deployments of one namespace reconcile in any order on shared nodes, one at a time.

    One at a time is what the quota lock makes of concurrent reconciles; each reads the usage
    the ones before it left. Agents start and stop replicas between turns.
    """
    nodes = {n.node_id: n for n in (node("n1", capacity), node("n2", capacity))}
    deployments = [Cluster(nodes=nodes) for _ in specs]  # one dict: the nodes are shared
    for index, agents_run in turns:
        rank = index % len(specs)
        request, replicas = specs[rank]
        state = gate(Quota("q", hard), usage=_usage(deployments), rank=rank)
        spec = replace(
            desired(replicas, request=request),
            quota_room=allowance(gate=state, request=request).replicas,
        )
        cluster = deployments[rank]
        step = cluster.plan(spec)
        cluster.apply(step, spec)
        if agents_run:
            for each in deployments:
                each.agents_act()
        after = _usage(deployments)
        assert not _over(after, hard) - _over(state.used, hard), "a quota was passed"
        for n in nodes.values():
            assert n.allocated.fits_in(n.capacity), "a node was over-committed"
        if hard.fog_deployments is not None and rank >= hard.fog_deployments:
            assert _holding(cluster) == 0, "a deployment beyond fogDeployments placed"


class _Namespace:
    """One namespace's deployments on shared nodes, by age, as the database records them."""

    def __init__(
        self, hard: QuotaAmounts, capacity: Resources, specs: list[tuple[Resources, int]]
    ) -> None:
        self.hard, self.specs = hard, specs
        self.nodes = {n.node_id: n for n in (node("n1", capacity), node("n2", capacity))}
        self.deployments = [Cluster(nodes=self.nodes) for _ in specs]  # the nodes are shared
        self.ids = [uuid.uuid4() for _ in specs]
        self.created: list[int] = []  # deployments by age, as their rows were inserted

    def read(self) -> NamespaceQuotas:
        """What db/quotas.py `gates` reads under the lock: usage, live count, ranks."""
        ranks = {self.ids[index]: rank for rank, index in enumerate(self.created)}
        usage = replace(_usage(self.deployments), fog_deployments=len(self.created))
        return NamespaceQuotas(quotas=(Quota("q", self.hard),), used=usage, ranks=ranks)

    def claim(self, index: int) -> Claim:
        request, replicas = self.specs[index]
        wants = plan(
            desired=desired(replicas, request=request),
            replicas=list(self.deployments[index].replicas.values()),
            nodes=(),
        )
        stored = self.ids[index] if index in self.created else None
        return Claim(stored, request, wanted=wants.unplaced)

    def place(self, index: int, gate: QuotaGate, *, alone: bool) -> bool:
        """Plan and apply one deployment's placement; False if it must go alone."""
        request, replicas = self.specs[index]
        spec = replace(
            desired(replicas, request=request),
            quota_room=allowance(gate=gate, request=request).replicas,
        )
        step = self.deployments[index].plan(spec)
        if step.unhoused and not alone:  # the batch found it no node: the lone path
            return False
        self.deployments[index].apply(step, spec)
        if index not in self.created:
            self.created.append(index)
        limit = self.hard.fog_deployments
        if limit is not None and self.created.index(index) >= limit:
            assert _holding(self.deployments[index]) == 0, "placed beyond fogDeployments"
        return True

    def passed(self, before: QuotaAmounts) -> set[QuotaResource]:
        """Limits the usage passes now and did not before."""
        return _over(_usage(self.deployments), self.hard) - _over(before, self.hard)


@given(
    hard=limits,
    capacity=st.builds(
        res, st.integers(0, 8000), st.integers(0, 16384), st.integers(0, 4), st.integers(0, 200)
    ),
    specs=st.lists(st.tuples(requests, st.integers(0, 6)), min_size=1, max_size=5),
    batches=st.lists(
        st.tuples(st.lists(st.integers(0, 4), min_size=1, max_size=5), st.booleans()),
        min_size=1,
        max_size=8,
    ),
)
def test_property_batches_at_the_gate_never_pass_a_quota_nor_a_node(
    hard: QuotaAmounts,
    capacity: Resources,
    specs: list[tuple[Resources, int]],
    batches: list[tuple[list[int], bool]],
) -> None:
    """Deployments of one namespace pass the gate a batch at a time, new ones among them.

    What the batched reconcile does under the quota lock: one usage read, `admit` in age
    order, each admitted key placed on the nodes as the keys before it left them, and a key
    that `admit` left out, or that found no node, placed alone afterwards with the usage read
    again. Agents start and stop replicas between batches.
    """
    team = _Namespace(hard, capacity, specs)
    for picked, agents_run in batches:
        members = list(dict.fromkeys(index % len(specs) for index in picked))
        before = team.read()
        gates = admit(before, [team.claim(index) for index in members])
        # The new ones are inserted in claim order, as the batch's one INSERT does.
        later = [
            index
            for index, gate in zip(members, gates, strict=True)
            if gate is None or not team.place(index, gate, alone=False)
        ]
        assert not team.passed(before.used), "the batch passed a quota"
        for index in later:
            alone = team.read()
            stored = team.ids[index] if index in team.created else None
            team.place(index, alone.gate(stored), alone=True)
            assert not team.passed(alone.used), "a key alone passed a quota"
        for each in team.nodes.values():
            assert each.allocated.fits_in(each.capacity), "a node was over-committed"
        if agents_run:
            for deployment in team.deployments:
                deployment.agents_act()


# --- the kube layer's parse ---------------------------------------------------------------


def test_hard_is_read_in_our_units() -> None:
    hard = read_hard({"hard": {"cpuCores": 0.7, "memoryMB": 2048, "fogDeployments": 0}})
    assert hard == QuotaAmounts(cpu_millis=700, memory_mb=2048, fog_deployments=0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"hard": {"gpuUnits": -1}}, "spec.hard.gpuUnits: must be between 0 and 1000000, got -1"),
        ({"hard": {"memoryMB": "1Gi"}}, "spec.hard.memoryMB: must be an integer, got '1Gi'"),
        ({"hard": {"cpuCores": True}}, "spec.hard.cpuCores: must be a number, got True"),
        ({"hard": {"pods": 3}}, "spec.hard.pods: is not a known resource"),
        ({}, "spec.hard: is required and must be an object"),
    ],
)
def test_a_broken_hard_is_one_line_naming_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        read_hard(spec)
    assert str(caught.value) == message


def test_the_actor_is_the_last_manager_of_the_spec() -> None:
    meta = {
        "managedFields": [
            {
                "manager": "kubectl-create",
                "time": "2026-11-27T09:00:00Z",
                "fieldsV1": {"f:spec": {}},
            },
            {
                "manager": "fog-controller",
                "time": "2026-11-27T09:30:00Z",
                "subresource": "status",
                "fieldsV1": {"f:status": {}},
            },
            {
                "manager": "kubectl-patch",
                "time": "2026-11-27T09:20:00Z",
                "fieldsV1": {"f:spec": {}},
            },
        ]
    }
    assert spec_manager(meta, default="operator") == "kubectl-patch"
    assert spec_manager({}, default="operator") == "operator"
