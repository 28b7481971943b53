"""Measured usage, without I/O: samples, hourly rollups, the status summary, simulated values.

An agent samples what each running replica uses (CPU cores, memory) and sends the samples in
batches. Two things are kept of them (docs/design/capacity-and-history.md, "Usage"): the
latest sample per replica, for `fogctl top` and `.status.usage`, and hourly rollups per
deployment and per node (how many samples, their sum and their maximum), for history. A
rollup keeps what averages and peaks need and nothing per sample, so a year stays 8,760 rows
per deployment however often agents sample. Folding a batch into rollups and merging two
rollups of one hour are defined here, once, and the database's upsert does the same merge.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.model.replicas import ReplicaState
from controller.model.resources import MILLIS_PER_CORE, Resources

# What the simulated agent's replicas use, as a share of their request: a steady base per
# replica (some services idle, some busy) with a little variation per sample, as real
# containers show. Deterministic from the replica id and the sample round, so tests can say
# what they expect and the benchmark's load is the same run after run.
SIMULATED_CPU_SHARE = (0.1, 0.9)
SIMULATED_MEMORY_SHARE = (0.3, 0.8)
# CPU jumps around more than memory between samples (memory grows and is rarely given back).
SIMULATED_CPU_JITTER = 0.15
SIMULATED_MEMORY_JITTER = 0.03


@dataclass(frozen=True, slots=True)
class Usage:
    """What one replica uses at one moment (CPU in millicores, exact as requests are)."""

    cpu_millis: int
    memory_mb: int

    def __post_init__(self) -> None:
        for value in (self.cpu_millis, self.memory_mb):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"usage amounts are non-negative ints, got {value!r}")

    @classmethod
    def from_cores(cls, *, cpu_cores: float, memory_mb: int) -> Usage:
        """From CPU in cores as agents send it, rounded to the millicore."""
        return cls(cpu_millis=round(cpu_cores * MILLIS_PER_CORE), memory_mb=memory_mb)

    @property
    def cpu_cores(self) -> float:
        """CPU in cores, as the API and the status show it."""
        return self.cpu_millis / MILLIS_PER_CORE

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu_millis + other.cpu_millis, self.memory_mb + other.memory_mb)


NO_USAGE = Usage(0, 0)


@dataclass(frozen=True, slots=True)
class Rollup:
    """Samples of one hour for one key (a deployment or a node): count, sum and maximum.

    Averages are sums over counts, so merging two rollups of the same hour is exact: counts
    and sums add, maxima take the larger. That is the whole upsert.
    """

    key: uuid.UUID
    samples: int
    cpu_millis_sum: int
    cpu_millis_max: int
    memory_mb_sum: int
    memory_mb_max: int

    @classmethod
    def of(cls, key: uuid.UUID, usage: Usage) -> Rollup:
        """The rollup of a single sample."""
        return cls(key, 1, usage.cpu_millis, usage.cpu_millis, usage.memory_mb, usage.memory_mb)

    def merge(self, other: Rollup) -> Rollup:
        """Both rollups as one (the same key and hour)."""
        if other.key != self.key:
            raise ValueError(f"cannot merge rollups of {self.key} and {other.key}")
        return Rollup(
            key=self.key,
            samples=self.samples + other.samples,
            cpu_millis_sum=self.cpu_millis_sum + other.cpu_millis_sum,
            cpu_millis_max=max(self.cpu_millis_max, other.cpu_millis_max),
            memory_mb_sum=self.memory_mb_sum + other.memory_mb_sum,
            memory_mb_max=max(self.memory_mb_max, other.memory_mb_max),
        )


def fold(samples: Iterable[tuple[uuid.UUID, Usage]]) -> list[Rollup]:
    """One rollup per key of a batch, ordered by key.

    The order is the order rows are upserted in: two batches that touch the same rollup rows
    lock them in the same order and cannot deadlock on them.
    """
    rollups: dict[uuid.UUID, Rollup] = {}
    for key, usage in samples:
        single = Rollup.of(key, usage)
        rollups[key] = rollups[key].merge(single) if key in rollups else single
    return [rollups[key] for key in sorted(rollups)]


@dataclass(frozen=True, slots=True)
class Sampled:
    """A replica's latest sample and when the database received it."""

    usage: Usage
    sampled_at: datetime


@dataclass(frozen=True, slots=True)
class CurrentUsage:
    """`.status.usage`: summed over the running replicas that have been sampled."""

    usage: Usage
    replicas: int  # running replicas whose samples are summed
    sampled_at: datetime  # the oldest of those samples: every figure is at least this fresh

    def as_status(self) -> dict[str, Any]:
        """The CRD's `status.usage` shape."""
        return {
            "cpuCores": self.usage.cpu_cores,
            "memoryMB": self.usage.memory_mb,
            "sampledReplicas": self.replicas,
            "sampledAt": self.sampled_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def current_usage(
    replicas: Sequence[ReplicaState], samples: Mapping[uuid.UUID, Sampled]
) -> CurrentUsage | None:
    """What the running replicas use now (None: none of them has been sampled yet).

    Only running replicas count: a stopping or failed replica's last sample is history, not
    current use.
    """
    found = [
        samples[replica.replica_id]
        for replica in replicas
        if replica.is_available and replica.replica_id in samples
    ]
    if not found:
        return None
    total = NO_USAGE
    for sample in found:
        total += sample.usage
    return CurrentUsage(
        usage=total, replicas=len(found), sampled_at=min(s.sampled_at for s in found)
    )


def _fraction(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts` (stable across runs and processes)."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _share(
    replica_id: uuid.UUID, kind: str, span: tuple[float, float], jitter: float, round_: int
) -> float:
    low, high = span
    base = low + (high - low) * _fraction(replica_id, kind)
    wobble = 1 + jitter * (2 * _fraction(replica_id, kind, round_) - 1)
    return base * wobble


def simulated_usage(replica_id: uuid.UUID, request: Resources, round_: int) -> Usage:
    """What a simulated replica uses in sample round `round_`: a plausible share of its request.

    Each replica has its own steady share (10-90% of its CPU, 30-80% of its memory) and varies
    around it from round to round (CPU by up to 15%, memory by up to 3%), never above its
    request: the simulated containers behave, and a test can count on it.
    """
    cpu = _share(replica_id, "cpu", SIMULATED_CPU_SHARE, SIMULATED_CPU_JITTER, round_)
    memory = _share(replica_id, "memory", SIMULATED_MEMORY_SHARE, SIMULATED_MEMORY_JITTER, round_)
    return Usage(
        cpu_millis=min(request.cpu_millis, round(request.cpu_millis * cpu)),
        memory_mb=min(request.memory_mb, round(request.memory_mb * memory)),
    )
