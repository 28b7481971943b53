"""Usage without I/O: rollups that merge exactly, the status sum, the simulated agent's samples."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.model.protocol import Assignment
from controller.model.replicas import ReplicaState
from controller.model.resources import Resources
from controller.model.simulation import Simulator
from controller.model.states import ReplicaStatus
from controller.model.status import settled_usage, status_changed
from controller.model.usage import (
    CurrentUsage,
    Rollup,
    Sampled,
    Usage,
    current_usage,
    fold,
    simulated_usage,
)

KEYS = [uuid.UUID(int=n) for n in range(1, 4)]
usages = st.builds(Usage, st.integers(0, 64_000), st.integers(0, 65_536))
samples = st.lists(st.tuples(st.sampled_from(KEYS), usages), max_size=30)


@given(samples, samples)
def test_folding_two_batches_and_merging_equals_folding_them_together(
    first: list[tuple[uuid.UUID, Usage]], second: list[tuple[uuid.UUID, Usage]]
) -> None:
    """What the upsert does to the hour's row is what one batch of both would have written."""
    merged = {r.key: r for r in fold(first)}
    for rollup in fold(second):
        merged[rollup.key] = merged[rollup.key].merge(rollup) if rollup.key in merged else rollup

    assert [merged[key] for key in sorted(merged)] == fold(first + second)


@given(samples)
def test_a_rollup_keeps_count_sum_and_maximum_per_key_in_key_order(
    batch: list[tuple[uuid.UUID, Usage]],
) -> None:
    rollups = fold(batch)

    assert [r.key for r in rollups] == sorted({key for key, _ in batch})
    for rollup in rollups:
        mine = [usage for key, usage in batch if key == rollup.key]
        assert rollup.samples == len(mine)
        assert rollup.cpu_millis_sum == sum(u.cpu_millis for u in mine)
        assert rollup.cpu_millis_max == max(u.cpu_millis for u in mine)
        assert rollup.memory_mb_sum == sum(u.memory_mb for u in mine)
        assert rollup.memory_mb_max == max(u.memory_mb for u in mine)


def test_rollups_of_different_keys_do_not_merge() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        Rollup.of(KEYS[0], Usage(1, 1)).merge(Rollup.of(KEYS[1], Usage(1, 1)))


@pytest.mark.parametrize("bad", [-1, True, 0.5])
def test_usage_amounts_are_non_negative_ints(bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative ints"):
        Usage(bad, 0)  # type: ignore[arg-type]


def replica(n: int, status: ReplicaStatus) -> ReplicaState:
    return ReplicaState(
        replica_id=uuid.UUID(int=n),
        node_id=uuid.UUID(int=100),
        status=status,
        revision="r1",
        created_seq=n,
    )


def test_status_usage_sums_running_replicas_that_were_sampled() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    replicas = [
        replica(1, ReplicaStatus.RUNNING),
        replica(2, ReplicaStatus.RUNNING),
        replica(3, ReplicaStatus.STOPPING),  # sampled while it ran: history, not current use
        replica(4, ReplicaStatus.RUNNING),  # not sampled yet
    ]
    sampled = {
        uuid.UUID(int=1): Sampled(Usage(250, 300), now),
        uuid.UUID(int=2): Sampled(Usage(125, 200), now - timedelta(seconds=20)),
        uuid.UUID(int=3): Sampled(Usage(1000, 1000), now),
    }

    found = current_usage(replicas, sampled)

    assert found == CurrentUsage(Usage(375, 500), 2, now - timedelta(seconds=20))
    assert found.as_status() == {
        "cpuCores": 0.375,
        "memoryMB": 500,
        "sampledReplicas": 2,
        "sampledAt": "2026-11-27T09:59:40Z",
    }
    assert current_usage(replicas[3:], sampled) is None


REQUEST = Resources(cpu_millis=500, memory_mb=1024, gpu_units=0, storage_gb=1)


@given(st.uuids(), st.integers(0, 10_000))
def test_simulated_usage_is_a_plausible_share_of_the_request(
    replica_id: uuid.UUID, round_: int
) -> None:
    usage = simulated_usage(replica_id, REQUEST, round_)

    assert 0.1 * 0.85 * 500 - 1 <= usage.cpu_millis <= 500
    assert 0.3 * 0.97 * 1024 - 1 <= usage.memory_mb <= 1024
    assert simulated_usage(replica_id, REQUEST, round_) == usage  # the same every run


def test_simulated_usage_varies_between_rounds_around_a_steady_share() -> None:
    replica_id = uuid.UUID(int=7)
    rounds = [simulated_usage(replica_id, REQUEST, n).cpu_millis for n in range(20)]

    assert len(set(rounds)) > 1
    assert max(rounds) - min(rounds) <= 2 * 0.15 * 500


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def assignment(n: int, status: ReplicaStatus) -> Assignment:
    return Assignment(
        replica_id=uuid.UUID(int=n),
        node="edge-1",
        status=status,
        namespace="team-a",
        deployment="web",
        ordinal=n,
        image="app:1",
        container_spec={},
        container_id=None,
        request=REQUEST,
    )


def test_the_simulator_samples_a_running_replica_at_once_then_every_interval() -> None:
    clock = Clock()
    simulator = Simulator(start_delay=0, usage_seconds=30, clock=clock)
    work = [assignment(1, ReplicaStatus.RUNNING), assignment(2, ReplicaStatus.STARTING)]

    first = simulator.usage(work)
    clock.now += 29
    early = simulator.usage(work)
    clock.now += 1
    due = simulator.usage(work)

    assert [s.replica_id for s in first] == [uuid.UUID(int=1)]  # not the starting one
    assert early == []
    assert [s.usage for s in due] == [simulated_usage(uuid.UUID(int=1), REQUEST, 1)]
    simulator.usage([])  # the replica is gone: forgotten
    assert simulator.sampled == {}


def usage_status(cpu: float, memory: int, replicas: int, at: str) -> dict[str, object]:
    return {"cpuCores": cpu, "memoryMB": memory, "sampledReplicas": replicas, "sampledAt": at}


LIVE = {
    "phase": "Running",
    "ready": "2/2",
    "usage": usage_status(0.4, 400, 2, "2026-11-27T10:00:00Z"),
}


@pytest.mark.parametrize(
    ("fresh", "others", "written"),
    [
        # New samples, a little different, nothing else to say: the written figure stays.
        (usage_status(0.45, 420, 2, "2026-11-27T10:30:00Z"), {}, False),
        # The written figure is an hour older than the samples: refreshed.
        (usage_status(0.45, 420, 2, "2026-11-27T11:00:00Z"), {}, True),
        # Another replica sampled, or usage doubled: worth a write.
        (usage_status(0.6, 600, 3, "2026-11-27T10:01:00Z"), {}, True),
        (usage_status(0.8, 420, 2, "2026-11-27T10:01:00Z"), {}, True),
        # The status is patched anyway: the fresh figure goes with it at no extra write.
        (usage_status(0.45, 420, 2, "2026-11-27T10:01:00Z"), {"ready": "1/2"}, True),
        # Nothing running is sampled any more: the figure goes.
        (None, {}, True),
    ],
)
def test_status_usage_is_rewritten_only_when_worth_an_api_write(
    fresh: dict[str, object] | None, others: dict[str, object], written: bool
) -> None:
    body = {"phase": "Running", "ready": "2/2", **others, "usage": fresh}

    settled = settled_usage(body, LIVE)

    assert settled == (fresh if written else LIVE["usage"])
    assert status_changed(old=LIVE, new={**body, "usage": settled}) is written


def test_usage_appearing_in_status_is_written() -> None:
    fresh = usage_status(0.4, 400, 2, "2026-11-27T10:00:00Z")
    assert settled_usage({"phase": "Running", "usage": fresh}, {"phase": "Running"}) == fresh
