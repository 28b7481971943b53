"""Resource vectors (CPU, memory, GPU, storage) with exact arithmetic for capacity checks.

The CRD and the database carry CPU as float cores (0.5, 1.5); summing floats drifts, and a
drifted sum can turn "exactly full" into "over-committed by 1e-16". Keeping CPU in integer
millicores makes every capacity comparison exact.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MILLIS_PER_CORE = 1000  # Kubernetes' CPU quantum: 1 core = 1000m, the finest CPU unit used.


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of each schedulable resource.

    A difference of two amounts may be negative in some dimension (an over-committed node
    has negative free capacity); requests are checked to be non-negative where they enter.
    """

    cpu_millis: int
    memory_mb: int
    gpu_units: int
    storage_gb: int

    def __post_init__(self) -> None:
        for value in (self.cpu_millis, self.memory_mb, self.gpu_units, self.storage_gb):
            # bool is an int subclass; a True here is a caller bug, not one unit.
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"resource amounts must be int, got {value!r}")

    @classmethod
    def from_cores(
        cls, *, cpu_cores: float, memory_mb: int, gpu_units: int, storage_gb: int
    ) -> "Resources":
        """Build from float CPU cores as the CRD and database carry them."""
        if not math.isfinite(cpu_cores) or cpu_cores < 0:
            raise ValueError(f"cpu_cores must be a finite non-negative number, got {cpu_cores}")
        return cls(
            cpu_millis=round(cpu_cores * MILLIS_PER_CORE),
            memory_mb=memory_mb,
            gpu_units=gpu_units,
            storage_gb=storage_gb,
        )

    @property
    def cpu_cores(self) -> float:
        """CPU in cores, for the CRD and the database."""
        return self.cpu_millis / MILLIS_PER_CORE

    def as_spec(self) -> dict[str, float | int]:
        """The amounts as the CRD's `spec.resources` spells them (JSON output, the agent API)."""
        return {
            "cpuCores": self.cpu_cores,
            "memoryMB": self.memory_mb,
            "gpuUnits": self.gpu_units,
            "storageGB": self.storage_gb,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Resources":
        """The inverse of as_spec: a stored revision's `resources` (model/revisions.py)."""
        return cls.from_cores(
            cpu_cores=float(spec["cpuCores"]),
            memory_mb=int(spec["memoryMB"]),
            gpu_units=int(spec["gpuUnits"]),
            storage_gb=int(spec["storageGB"]),
        )

    @property
    def is_non_negative(self) -> bool:
        """Whether every dimension is >= 0, as any request or capacity must be."""
        return ZERO.fits_in(self)

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(
            cpu_millis=self.cpu_millis + other.cpu_millis,
            memory_mb=self.memory_mb + other.memory_mb,
            gpu_units=self.gpu_units + other.gpu_units,
            storage_gb=self.storage_gb + other.storage_gb,
        )

    def __sub__(self, other: "Resources") -> "Resources":
        return self + other * -1

    def __mul__(self, factor: int) -> "Resources":
        return Resources(
            cpu_millis=self.cpu_millis * factor,
            memory_mb=self.memory_mb * factor,
            gpu_units=self.gpu_units * factor,
            storage_gb=self.storage_gb * factor,
        )

    __rmul__ = __mul__

    def fits_in(self, other: "Resources", /) -> bool:
        """Whether every dimension of self is <= the same dimension of other."""
        return (
            self.cpu_millis <= other.cpu_millis
            and self.memory_mb <= other.memory_mb
            and self.gpu_units <= other.gpu_units
            and self.storage_gb <= other.storage_gb
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        """The four amounts in field order, for code that treats every dimension alike."""
        return (self.cpu_millis, self.memory_mb, self.gpu_units, self.storage_gb)


ZERO = Resources(cpu_millis=0, memory_mb=0, gpu_units=0, storage_gb=0)


def _amounts(amount: Resources, *, skip_zero: bool = False) -> str:
    """e.g. "1.5 CPU, 512 MiB memory, 0 GPU, 1 GB storage" (only the non-zero ones if asked)."""
    parts = (
        (amount.cpu_millis, f"{amount.cpu_cores} CPU"),
        (amount.memory_mb, f"{amount.memory_mb} MiB memory"),
        (amount.gpu_units, f"{amount.gpu_units} GPU"),
        (amount.storage_gb, f"{amount.storage_gb} GB storage"),
    )
    return ", ".join(text for value, text in parts if value or not skip_zero)


def _where(*, request: Resources, closest: tuple[str, Resources] | None, selector: bool) -> str:
    if closest is None:
        return (
            "no schedulable node matches the node selector"
            if selector
            else "no schedulable node (online and not cordoned)"
        )
    name, free = closest
    # Negative free capacity (an over-committed node) counts as nothing left.
    short = Resources(
        *(
            max(0, need - max(0, have))
            for need, have in zip(request.as_tuple(), free.as_tuple(), strict=True)
        )
    )
    if short == ZERO:  # only a request of nothing on an over-committed node
        return f"closest node {name} is over-committed"
    return f"closest node {name} is short of {_amounts(short, skip_zero=True)}"


def describe_shortfall(
    *,
    request: Resources,
    placed: int,
    wanted: int,
    closest: tuple[str, Resources] | None,
    selector: bool,
) -> str:
    """Explain in one line why replicas could not all be placed, and what is missing where.

    closest is the name and free capacity of the eligible node that came closest to fitting
    one more replica; the message says which resources it lacks and by how much. None means
    no schedulable node matched at all: because of the node selector when there is one.
    """
    where = _where(request=request, closest=closest, selector=selector)
    return f"need {_amounts(request)} per replica; {placed} of {wanted} replicas placed; {where}"
