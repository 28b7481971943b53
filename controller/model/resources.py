"""Resource vectors (CPU, memory, GPU, storage) with exact arithmetic for capacity checks.

The CRD and the database carry CPU as float cores (0.5, 1.5); summing floats drifts, and a
drifted sum can turn "exactly full" into "over-committed by 1e-16". Keeping CPU in integer
millicores makes every capacity comparison exact.
"""

import math
from dataclasses import dataclass

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


def _describe(amount: Resources) -> str:
    # Negative free capacity (an over-committed node) reads as "nothing left", not "-0.5 CPU".
    shown = Resources(*(max(0, value) for value in amount.as_tuple()))
    return (
        f"{shown.cpu_cores} CPU, {shown.memory_mb} MiB memory, "
        f"{shown.gpu_units} GPU, {shown.storage_gb} GB storage"
    )


def describe_shortfall(
    *, request: Resources, placed: int, wanted: int, best_free: Resources | None
) -> str:
    """Explain in one line why replicas could not all be placed.

    best_free is the free capacity of the eligible node that came closest to fitting one
    more replica, or None when no schedulable node matches the node selector at all.
    """
    where = (
        "no schedulable node matches the node selector"
        if best_free is None
        else f"best remaining node offers {_describe(best_free)}"
    )
    return f"need {_describe(request)} per replica; {placed} of {wanted} replicas placed; {where}"
