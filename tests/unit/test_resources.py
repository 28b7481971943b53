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


def test_shortfall_is_one_line_and_names_what_the_closest_node_lacks() -> None:
    message = describe_shortfall(
        request=res(2500, 4096, 0, 10),
        placed=3,
        wanted=5,
        closest=("edge-2", res(1000, 2048, 0, 100)),
        selector=False,
    )
    assert message == (
        "need 2.5 CPU, 4096 MiB memory, 0 GPU, 10 GB storage per replica; 3 of 5 replicas "
        "placed; closest node edge-2 is short of 1.5 CPU, 2048 MiB memory"
    )


@pytest.mark.parametrize(
    ("selector", "where"),
    [
        (True, "no schedulable node matches the node selector"),
        (False, "no schedulable node (online and not cordoned)"),
    ],
)
def test_shortfall_without_eligible_nodes_blames_the_selector_only_if_there_is_one(
    selector: bool, where: str
) -> None:
    message = describe_shortfall(
        request=res(1), placed=0, wanted=2, closest=None, selector=selector
    )
    assert message.endswith(f"0 of 2 replicas placed; {where}")


def test_an_overcommitted_node_lacks_the_whole_request() -> None:
    # Negative free capacity counts as nothing left, not as a bigger shortfall.
    message = describe_shortfall(
        request=res(1000, 10, 1), placed=0, wanted=1, closest=("n", res(-500, 10)), selector=False
    )
    assert message.endswith("closest node n is short of 1.0 CPU, 1 GPU")
    nothing = describe_shortfall(
        request=ZERO, placed=0, wanted=1, closest=("n", res(-500)), selector=False
    )
    assert nothing.endswith("closest node n is over-committed")
