"""The FogDeployment spec becomes our types; what the CRD leaves out gets its documented value."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from controller.kube.resource import (
    InvalidSpecError,
    declared_replicas,
    object_ref,
    parse_spec,
    read_spec,
)
from controller.model.placement import Strategy
from controller.model.resources import Resources
from controller.model.status import selector

MINIMAL = {"image": "app:1", "replicas": 2, "resources": {"cpuCores": 1.5, "memoryMB": 1024}}


def test_minimal_spec_gets_documented_defaults() -> None:
    parsed = parse_spec("web", MINIMAL)
    assert parsed.replicas == 2
    assert parsed.request == Resources(cpu_millis=1500, memory_mb=1024, gpu_units=0, storage_gb=1)
    assert parsed.strategy is Strategy.SPREAD
    assert parsed.create.container_spec == {}


def test_zero_replicas_is_valid_and_the_seed_limit_still_applies() -> None:
    assert parse_spec("web", {**MINIMAL, "replicas": 0}).replicas == 0
    with pytest.raises(ValidationError, match="target_replicas"):
        parse_spec("web", {**MINIMAL, "replicas": 101})


def test_container_spec_goes_to_the_jsonb_column_and_changes_the_revision() -> None:
    env = [{"name": "MODE", "value": "edge"}]
    with_env = parse_spec("web", {**MINIMAL, "env": env, "nodeSelector": {"zone": "a"}})
    assert with_env.create.container_spec == {"env": env}
    assert with_env.create.node_selector == {"zone": "a"}
    assert with_env.revision != parse_spec("web", MINIMAL).revision


def test_scaling_does_not_change_the_revision_and_a_selector_does_only_when_set() -> None:
    base = parse_spec("web", MINIMAL).revision
    assert parse_spec("web", {**MINIMAL, "replicas": 7}).revision == base
    assert parse_spec("web", {**MINIMAL, "placement": {"strategy": "BinPack"}}).revision == base
    # An empty selector hashes as no selector: deployments without one keep their revision
    # across the upgrade that added the selector to the hash (model/revision.py).
    assert parse_spec("web", {**MINIMAL, "nodeSelector": {}}).revision == base
    zone_b = parse_spec("web", {**MINIMAL, "nodeSelector": {"zone": "b"}}).revision
    assert zone_b != base
    assert parse_spec("web", {**MINIMAL, "nodeSelector": {"zone": "c"}}).revision != zone_b
    assert parse_spec("web", {**MINIMAL, "image": "app:2"}).revision != base


def test_seed_limits_hold_even_past_the_api_server() -> None:
    with pytest.raises(ValidationError, match="cpu_cores"):
        parse_spec("web", {**MINIMAL, "resources": {"cpuCores": 0.1, "memoryMB": 1024}})
    with pytest.raises(ValidationError, match="name"):
        parse_spec("web.app", MINIMAL)


def test_object_ref_and_selector() -> None:
    ref = object_ref({"namespace": "team-a", "name": "web", "uid": "u-1", "generation": 3})
    assert (ref.namespace, ref.name, ref.uid, ref.generation) == ("team-a", "web", "u-1", 3)
    assert selector("web") == "fogcompute.io/deployment=web"


def test_the_selector_of_a_long_name_is_still_a_label_selector() -> None:
    # kubectl scale parses status.selector; a label value holds at most 63 characters.
    name = "a" * 100
    key, _, value = selector(name).partition("=")
    assert key == "fogcompute.io/deployment"
    assert len(value) == 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value)
    assert value.startswith("a" * 52)
    assert selector("a" * 99 + "b") != selector(name)  # same prefix, another name
    assert selector("b" * 63) == f"fogcompute.io/deployment={'b' * 63}"  # fits: unchanged


def problems(name: str, spec: dict[str, object]) -> str:
    with pytest.raises(InvalidSpecError) as caught:
        read_spec(name, spec)
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (
            "web",
            {**MINIMAL, "resources": {"cpuCores": 64, "memoryMB": 1024}},
            "spec.resources.cpuCores: must be at most 32",
        ),
        (
            "web",
            {**MINIMAL, "resources": {"cpuCores": 1, "memoryMB": 100, "storageGB": 0}},
            "spec.resources.memoryMB: must be at least 512;"
            " spec.resources.storageGB: must be at least 1",
        ),
        ("web", {**MINIMAL, "replicas": 101}, "spec.replicas: must be at most 100"),
        ("web", {**MINIMAL, "image": "x" * 501}, "spec.image: must be at most 500 characters"),
        (
            "web",
            {"replicas": 1, "resources": {"cpuCores": 1}},
            "spec.image: is required; spec.resources.memoryMB: is required",
        ),
        (
            "web",
            {**MINIMAL, "nodeSelector": {"zone": 1}},
            "spec.nodeSelector.zone: must be a string",
        ),
        (
            "web",
            {**MINIMAL, "placement": {"strategy": "Random"}},
            "spec.placement.strategy: must match ^(Spread|BinPack)$",
        ),
        ("web.app", MINIMAL, "metadata.name: must match ^[A-Za-z0-9_-]+$"),
        ("web", {**MINIMAL, "image": "app\x00:1"}, "spec.image: must not contain a NUL character"),
        (
            "web",
            {**MINIMAL, "env": [{"name": "A", "value": "\x00"}], "args": ["ok", "x\x00"]},
            "spec.env[0].value: must not contain a NUL character;"
            " spec.args[1]: must not contain a NUL character",
        ),
        (
            "web",
            {**MINIMAL, "replicas": 101, "nodeSelector": {"k\x00": "v"}},
            "spec.replicas: must be at most 100; spec.nodeSelector.k\\x00: must not contain a NUL"
            " character",
        ),
    ],
)
def test_an_invalid_spec_names_each_field_as_the_manifest_spells_it(
    name: str, spec: dict[str, object], message: str
) -> None:
    found = problems(name, spec)
    assert found == message
    assert "pydantic" not in found
    assert "\n" not in found


def test_the_replica_count_is_read_even_when_the_rest_is_invalid() -> None:
    assert declared_replicas({**MINIMAL, "resources": {}}) == 2
    assert declared_replicas({**MINIMAL, "replicas": 101}) is None
    assert declared_replicas({}) is None
