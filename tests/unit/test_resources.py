import math

import pytest
from model_builders import res

from controller.model.resources import ZERO, Resources, describe_shortfall


def test_from_cores_keeps_cpu_exact_in_millicores() -> None:
    half = Resources.from_cores(cpu_cores=0.5, memory_mb=256, gpu_units=0, storage_gb=1)
    assert half.cpu_millis == 500
    # 0.1 + 0.2 != 0.3 in floats, but three replicas of 0.1 cores fill exactly 0.3 cores.
    tenth = Resources.from_cores(cpu_cores=0.1, memory_mb=0, gpu_units=0, storage_gb=0)
    three_tenths = Resources.from_cores(cpu_cores=0.3, memory_mb=0, gpu_units=0, storage_gb=0)
    assert tenth * 3 == three_tenths
    assert (tenth * 3).fits_in(three_tenths)
    assert (
        Resources.from_cores(cpu_cores=1.5, memory_mb=0, gpu_units=0, storage_gb=0).cpu_cores == 1.5
    )


@pytest.mark.parametrize("cores", [-0.5, math.nan, math.inf])
def test_from_cores_rejects_nonsense(cores: float) -> None:
    with pytest.raises(ValueError, match="cpu_cores"):
        Resources.from_cores(cpu_cores=cores, memory_mb=0, gpu_units=0, storage_gb=0)


@pytest.mark.parametrize("bad", [1.5, True])
def test_amounts_must_be_int(bad: object) -> None:
    with pytest.raises(TypeError):
        Resources(cpu_millis=bad, memory_mb=0, gpu_units=0, storage_gb=0)  # type: ignore[arg-type]


def test_arithmetic() -> None:
    a = res(1000, 2048, 1, 10)
    b = res(250, 1024, 0, 5)
    assert a + b == res(1250, 3072, 1, 15)
    assert a - b == res(750, 1024, 1, 5)
    assert b * 3 == 3 * b == res(750, 3072, 0, 15)
    assert a + ZERO == a
    assert (b - a).is_non_negative is False
    assert a.is_non_negative


def test_fits_in_needs_every_dimension() -> None:
    capacity = res(1000, 1024, 1, 10)
    assert capacity.fits_in(capacity)
    assert ZERO.fits_in(capacity)
    for over in (res(1001), res(0, 1025), res(0, 0, 2), res(0, 0, 0, 11)):
        assert not over.fits_in(capacity)


def test_shortfall_is_one_line_and_names_the_numbers() -> None:
    message = describe_shortfall(
        request=res(2500, 4096, 0, 10), placed=3, wanted=5, best_free=res(1000, 2048, 0, 100)
    )
    assert message == (
        "need 2.5 CPU, 4096 MiB memory, 0 GPU, 10 GB storage per replica; 3 of 5 replicas "
        "placed; best remaining node offers 1.0 CPU, 2048 MiB memory, 0 GPU, 100 GB storage"
    )


def test_shortfall_without_eligible_nodes_and_overcommitted_free() -> None:
    assert describe_shortfall(request=res(1), placed=0, wanted=2, best_free=None).endswith(
        "0 of 2 replicas placed; no schedulable node matches the node selector"
    )
    # An over-committed node shows nothing left rather than negative amounts.
    message = describe_shortfall(request=res(1), placed=0, wanted=1, best_free=res(-500, 10))
    assert "offers 0.0 CPU, 10 MiB memory" in message
