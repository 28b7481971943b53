"""Replica health (issue 16 item 1): the health check's shape and when a replica is available."""

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from model_builders import desired, node, replica, res, status_of

from controller.db.history import Entry
from controller.kube.resource import InvalidSpecError, parse_spec, read_spec
from controller.model.health import HealthCheck, Readiness
from controller.model.planner import StopReason, plan
from controller.model.protocol import Assignment, HealthReport
from controller.model.replicas import ReplicaState
from controller.model.restarts import UNHEALTHY
from controller.model.simulation import NodeView, Simulator
from controller.model.states import ReplicaHealth, ReplicaStatus
from controller.model.status import Phase

H = ReplicaHealth
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MIN_READY = timedelta(seconds=30)
CHECKED = Readiness(revision="r1", checked=True, min_ready=MIN_READY)
UNCHECKED = Readiness(revision="r1", checked=False, min_ready=MIN_READY)


def healthy(seq: int, *, since: datetime = T0, revision: str = "r1") -> ReplicaState:
    return replace(
        replica(seq, revision=revision),
        health=H.HEALTHY,
        health_since=since,
        running_since=since - timedelta(seconds=5),
    )


def test_a_health_check_takes_kubernetes_defaults_and_writes_them_out() -> None:
    check = HealthCheck.from_spec({"http": {"path": "/healthz", "port": 8080}})
    assert (check.period_seconds, check.timeout_seconds, check.failure_threshold) == (10, 1, 3)
    assert check.as_spec() == {
        "http": {"path": "/healthz", "port": 8080},
        "periodSeconds": 10,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
    }
    assert HealthCheck.from_spec(check.as_spec()) == check


@pytest.mark.parametrize(
    "spec", [{}, {"tcp": {"port": 1}, "exec": {"command": ["true"]}}, {"periodSeconds": 5}]
)
def test_a_health_check_needs_exactly_one_probe(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one of http, tcp, exec"):
        HealthCheck.from_spec(spec)


def test_a_checked_replica_is_available_once_healthy_for_min_ready_seconds() -> None:
    ok = healthy(1)
    assert not CHECKED.available(ok, now=T0 + MIN_READY - timedelta(microseconds=1))
    assert CHECKED.available(ok, now=T0 + MIN_READY)
    assert CHECKED.next_crossing([ok], now=T0) == T0 + MIN_READY
    assert CHECKED.next_crossing([ok], now=T0 + MIN_READY) is None


@pytest.mark.parametrize("health", [None, H.UNHEALTHY])
def test_a_checked_replica_without_a_healthy_report_is_never_available(
    health: ReplicaHealth | None,
) -> None:
    sick = replace(healthy(1), health=health)
    assert not CHECKED.available(sick, now=T0 + timedelta(days=1))
    assert CHECKED.next_crossing([sick], now=T0) is None


def test_an_unchecked_replica_counts_from_when_it_started_running() -> None:
    started = replace(replica(1), running_since=T0)
    assert not UNCHECKED.available(started, now=T0 + MIN_READY / 2)
    assert UNCHECKED.available(started, now=T0 + MIN_READY)
    assert UNCHECKED.next_crossing([started], now=T0) == T0 + MIN_READY


def test_only_running_replicas_are_available_and_rows_without_stamps_have_run_all_along() -> None:
    assert not UNCHECKED.available(replica(1, ReplicaStatus.STARTING), now=T0)
    assert UNCHECKED.available(replica(1), now=T0)  # running, no running_since recorded
    assert UNCHECKED.next_crossing([replica(1)], now=T0) is None


def test_an_old_revisions_replica_is_judged_by_what_it_reported() -> None:
    # The spec's check is the current revision's; an old replica that never reported health
    # had none, one that reported has one.
    unreported = replace(replica(1, revision="r0"), running_since=T0)
    assert CHECKED.available(unreported, now=T0 + MIN_READY)
    sick = replace(unreported, health=H.UNHEALTHY, health_since=T0)
    assert not CHECKED.available(sick, now=T0 + MIN_READY)


def test_the_next_crossing_is_the_earliest_one_to_come() -> None:
    replicas = [
        healthy(1),
        healthy(2, since=T0 - timedelta(seconds=20)),
        healthy(3, since=T0 - MIN_READY),
    ]
    assert CHECKED.next_crossing(replicas, now=T0) == T0 + timedelta(seconds=10)


def test_ready_counts_only_replicas_healthy_for_min_ready_seconds() -> None:
    replicas = [healthy(1), healthy(2, since=T0 - MIN_READY)]

    def at(now: datetime) -> tuple[int, Phase]:
        result = status_of(replicas, want=2, now=now, readiness=CHECKED)
        return result.ready_replicas, result.phase

    assert at(T0) == (1, Phase.SCHEDULED)
    assert at(T0 + MIN_READY) == (2, Phase.RUNNING)


def test_an_unhealthy_replica_is_stopped_as_unhealthy_and_replaced() -> None:
    sick = replace(healthy(1), health=H.UNHEALTHY)
    step = plan(
        desired=desired(2), replicas=[sick, healthy(2)], nodes=[node("n1", res(4000, 8192))]
    )
    assert [(t.replica_id, t.to_status, t.reason) for t in step.transitions] == [
        (sick.replica_id, ReplicaStatus.STOPPING, StopReason.UNHEALTHY)
    ]
    assert StopReason.UNHEALTHY == UNHEALTHY  # the reason the failure count looks for
    assert len(step.create) == 1


def test_an_unhealthy_replica_is_stopped_even_while_the_backoff_holds_its_replacement() -> None:
    sick = replace(healthy(1), health=H.UNHEALTHY)
    spec = replace(desired(1), hold_new=True)
    step = plan(desired=spec, replicas=[sick], nodes=[node("n1", res(4000, 8192))])
    assert [t.reason for t in step.transitions] == [StopReason.UNHEALTHY]
    assert step.create == ()


SPEC = {"image": "app:1", "replicas": 2, "resources": {"cpuCores": 1, "memoryMB": 1024}}


def test_the_spec_health_check_and_min_ready_seconds_reach_the_desired_deployment() -> None:
    check = {"tcp": {"port": 80}, "failureThreshold": 1}
    parsed = parse_spec("web", {**SPEC, "healthCheck": check, "minReadySeconds": 30})
    assert parsed.desired.health_check == HealthCheck(
        kind="tcp", probe={"port": 80}, failure_threshold=1
    )
    assert parsed.desired.readiness == Readiness(
        revision=parsed.revision, checked=True, min_ready=MIN_READY
    )
    # The check is part of what a replica runs: adding one rolls the replicas.
    assert parsed.revision != parse_spec("web", SPEC).revision
    plain = parse_spec("web", SPEC).desired
    assert (plain.health_check, plain.readiness.checked, plain.readiness.min_ready) == (
        None,
        False,
        timedelta(0),
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "healthCheck",
            {"tcp": {"port": 1}, "http": {"path": "/", "port": 1}},
            "spec.healthCheck: healthCheck needs exactly one",
        ),
        ("healthCheck", ["tcp"], "spec.healthCheck: must be an object"),
        ("minReadySeconds", -1, "spec.minReadySeconds: must be an integer of at least 0"),
    ],
)
def test_a_malformed_health_spec_names_its_field(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=re.escape(message)):
        read_spec("web", {**SPEC, field: value})


# --- the simulated agent's virtual health checks ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def assigned(
    image: str, *, check: HealthCheck | None, health: ReplicaHealth | None = None
) -> Assignment:
    return Assignment(
        replica_id=uuid.uuid5(uuid.NAMESPACE_OID, image),
        node="edge-1",
        status=ReplicaStatus.RUNNING,
        namespace="team-a",
        deployment="web",
        ordinal=0,
        image=image,
        container_spec={},
        container_id=None,
        health_check=check,
        health=health,
    )


TCP = HealthCheck(kind="tcp", probe={"port": 80}, period_seconds=10, failure_threshold=3)


def verdicts(reports: list[HealthReport]) -> list[tuple[str, ReplicaHealth, str]]:
    return [(r.node, r.health, r.reason) for r in reports]


def test_the_simulated_agent_reports_a_passing_check_once() -> None:
    clock = Clock()
    agent = Simulator(start_delay=0, fail_health="bad:*", clock=clock)
    good = assigned("app:1", check=TCP)
    assert verdicts(agent.health([good])) == [("edge-1", H.HEALTHY, "tcp check passed")]
    clock.now += TCP.period_seconds
    # Once the server records it (the list says healthy), passing checks report nothing.
    assert agent.health([replace(good, health=H.HEALTHY)]) == []


def test_the_simulated_agent_fails_matching_images_after_failure_threshold_checks() -> None:
    clock = Clock()
    agent = Simulator(start_delay=0, fail_health="bad:*", clock=clock)
    bad = assigned("bad:1", check=TCP)
    seen = []
    for _ in range(4):
        seen.append(verdicts(agent.health([bad])))
        clock.now += TCP.period_seconds / 2  # a check every other call: at its period
    assert seen == [[], [], [], []]  # checks at 100 and 110 fail, the third is not due yet
    clock.now = 100.0 + 2 * TCP.period_seconds
    assert verdicts(agent.health([bad])) == [
        ("edge-1", H.UNHEALTHY, "tcp check failed 3 times in a row")
    ]


def test_the_simulated_agent_checks_only_running_replicas_with_a_check() -> None:
    agent = Simulator(start_delay=0, fail_health="*", clock=Clock())
    unchecked = assigned("app:1", check=None)
    starting = replace(
        assigned("app:2", check=replace(TCP, failure_threshold=1)), status=ReplicaStatus.STARTING
    )
    assert agent.health([unchecked, starting]) == []


def test_an_accepted_health_report_updates_the_agents_view() -> None:
    view = NodeView(clock=Clock())
    good = assigned("app:1", check=TCP)
    view.receive([good])
    view.health_accepted([HealthReport("edge-1", good.replica_id, H.HEALTHY, "ok")])
    assert view.items[good.replica_id].health is H.HEALTHY


def test_fogctl_history_shows_a_health_transition_as_one() -> None:
    def entry(old: str, new: str, old_health: str | None, new_health: str | None) -> Entry:
        return Entry(
            T0,
            uuid.uuid4(),
            "web-0",
            "edge-1",
            old,
            new,
            "agent:edge-1",
            "x",
            old_health,
            new_health,
        )

    assert entry("running", "running", "healthy", "unhealthy").transition == "healthy -> unhealthy"
    assert entry("running", "running", None, "healthy").transition == "- -> healthy"
    assert (
        entry("running", "stopping", "unhealthy", "unhealthy").transition == "running -> stopping"
    )


def test_a_rollout_counts_new_replicas_available_only_after_min_ready_seconds() -> None:
    # 4 desired, maxUnavailable 25% (1): two old replicas and two new ones, the new running
    # and healthy for less than minReadySeconds. Only the old two are available, which is the
    # floor's 3 minus one already: no old replica may go yet. Once the new ones have been
    # healthy for minReadySeconds, 4 are available and one old replica may go.
    replicas = [
        healthy(1, revision="r0", since=T0 - timedelta(hours=1)),
        healthy(2, revision="r0", since=T0 - timedelta(hours=1)),
        healthy(3, since=T0),
        healthy(4, since=T0),
    ]
    nodes = [node("n1", res(8000, 16384))]

    def stopped(now: datetime) -> list[str]:
        spec = replace(desired(4), available=lambda r: CHECKED.available(r, now=now))
        step = plan(desired=spec, replicas=replicas, nodes=nodes)
        return [t.reason for t in step.transitions]

    assert stopped(T0) == []
    assert stopped(T0 + MIN_READY) == [StopReason.ROLLING_UPDATE]
