"""Every limit of the seed's schemas, just inside and just outside."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.schemas import (
    DeploymentCreate,
    DeploymentResourceCreate,
    DeploymentScale,
    DeploymentUpdate,
)

RESOURCES: dict[str, Any] = {"cpu_cores": 1.0, "memory_mb": 1024, "gpu_units": 0, "storage_gb": 10}


def _create(**overrides: Any) -> DeploymentCreate:
    values: dict[str, Any] = {
        "name": "web",
        "container_image": "nginx:1.27",
        "target_replicas": 3,
        "resources": RESOURCES,
    }
    values.update(overrides)
    return DeploymentCreate.model_validate(values)


@pytest.mark.parametrize(
    ("field", "inside", "outside"),
    [
        ("cpu_cores", 0.5, 0.49),
        ("cpu_cores", 32, 32.01),
        ("memory_mb", 512, 511),
        ("memory_mb", 65536, 65537),
        ("gpu_units", 0, -1),
        ("gpu_units", 8, 9),
        ("storage_gb", 1, 0),
        ("storage_gb", 1000, 1001),
    ],
)
def test_resource_limits(field: str, inside: float, outside: float) -> None:
    assert getattr(DeploymentResourceCreate(**{**RESOURCES, field: inside}), field) == inside
    with pytest.raises(ValidationError, match=field):
        DeploymentResourceCreate(**{**RESOURCES, field: outside})


def test_cpu_is_fractional() -> None:
    assert DeploymentResourceCreate(**{**RESOURCES, "cpu_cores": 1.5}).cpu_cores == 1.5


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "2", True])
def test_cpu_refuses_non_numbers(value: object) -> None:
    with pytest.raises(ValidationError, match="cpu_cores"):
        DeploymentResourceCreate(**{**RESOURCES, "cpu_cores": value})


@pytest.mark.parametrize("value", [1.5, "512", True])
def test_integer_fields_refuse_other_types(value: object) -> None:
    with pytest.raises(ValidationError, match="memory_mb"):
        DeploymentResourceCreate(**{**RESOURCES, "memory_mb": value})


@pytest.mark.parametrize("name", ["a", "A" * 100, "web-1_blue", "0"])
def test_name_inside(name: str) -> None:
    assert _create(name=name).name == name


@pytest.mark.parametrize("name", ["", "A" * 101, "web.1", "web 1", "web/1", "wéb"])
def test_name_outside(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        _create(name=name)


@pytest.mark.parametrize(
    ("image", "ok"), [("x", True), ("i" * 500, True), ("", False), ("i" * 501, False)]
)
def test_image_length(image: str, ok: bool) -> None:
    if ok:
        assert _create(container_image=image).container_image == image
    else:
        with pytest.raises(ValidationError, match="container_image"):
            _create(container_image=image)


@pytest.mark.parametrize(("replicas", "ok"), [(1, True), (100, True), (0, False), (101, False)])
def test_create_target_replicas(replicas: int, ok: bool) -> None:
    if ok:
        assert _create(target_replicas=replicas).target_replicas == replicas
    else:
        with pytest.raises(ValidationError, match="target_replicas"):
            _create(target_replicas=replicas)


@pytest.mark.parametrize(("replicas", "ok"), [(1, True), (100, True), (0, False), (101, False)])
def test_update_target_replicas(replicas: int, ok: bool) -> None:
    if ok:
        assert DeploymentUpdate(target_replicas=replicas).target_replicas == replicas
    else:
        with pytest.raises(ValidationError, match="target_replicas"):
            DeploymentUpdate(target_replicas=replicas)


@pytest.mark.parametrize(("replicas", "ok"), [(0, True), (100, True), (-1, False), (101, False)])
def test_scale_allows_zero(replicas: int, ok: bool) -> None:
    if ok:
        assert DeploymentScale(target_replicas=replicas).target_replicas == replicas
    else:
        with pytest.raises(ValidationError, match="target_replicas"):
            DeploymentScale(target_replicas=replicas)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="replica_count"):
        _create(replica_count=3)


@pytest.mark.parametrize("strategy", ["Spread", "BinPack"])
def test_placement_strategies(strategy: str) -> None:
    assert _create(placement_strategy=strategy).placement_strategy == strategy


def test_unknown_placement_strategy_is_refused() -> None:
    with pytest.raises(ValidationError, match="placement_strategy"):
        _create(placement_strategy="Random")
