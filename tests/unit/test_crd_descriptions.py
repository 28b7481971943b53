"""Every field of the FogDeployment CRD has a description that states its bounds.

`kubectl explain fogdeploy.spec.ports.containerPort` shows a field's description and nothing of
its schema's limits, so a limit a person cannot read there is one they learn from a rejected
apply. This walks the schema: each named field needs a description, and each bound of the
field (minLength, maxLength, minimum, maximum, maxItems, maxProperties, enum), and of its items
or map values, must appear in that description as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CRD = Path(__file__).resolve().parents[2] / "crds" / "fogdeployment.yaml"
QUOTA_CRD = CRD.with_name("fogquota.yaml")
BOUNDS = ("minLength", "maxLength", "minimum", "maximum", "maxItems", "maxProperties")


def schema(path: Path = CRD) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def fields(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, schema) of every named field, items of object lists included."""
    for name, child in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        yield here, child
        yield from fields(child, here)
        yield from fields(child.get("items", {}), here)


def stated_bounds(field: dict[str, Any]) -> list[str]:
    """The bounds a description must state: the field's own and its scalar items' or values'."""
    parts = [field, field.get("items", {}), field.get("additionalProperties") or {}]
    bounds = [
        part[key] for part in parts if "properties" not in part for key in BOUNDS if key in part
    ]
    return [_spelled(bound) for bound in bounds] + [str(value) for value in field.get("enum", [])]


def _spelled(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def mentions(description: str, token: str) -> bool:
    """Whether `token` appears as a whole word (so 32 is not found inside 32768)."""
    return re.search(rf"(?<![\w.]){re.escape(token)}(?![\w]|\.\d)", description) is not None


# The API server refuses a description on `metadata` itself (only name and generateName may be
# declared there) and publishes ObjectMeta's own documentation for it instead.
ALL_FIELDS = {path: field for path, field in fields(schema()) if path != "metadata"} | {
    f"FogQuota {path}": field for path, field in fields(schema(QUOTA_CRD)) if path != "metadata"
}


def test_the_walk_sees_the_fields_people_asked_about() -> None:
    expected = {
        "spec.ports.containerPort",
        "status.readyReplicas",
        "status.kopf",
        *(
            f"status.conditions.{name}"
            for name in (
                "type",
                "status",
                "observedGeneration",
                "lastTransitionTime",
                "reason",
                "message",
            )
        ),
    }
    assert expected <= set(ALL_FIELDS)


@pytest.mark.parametrize("path", sorted(ALL_FIELDS))
def test_field_has_a_description_stating_its_bounds(path: str) -> None:
    description = ALL_FIELDS[path].get("description", "")
    assert description.strip(), f"{path} has no description (`kubectl explain` shows <empty>)"
    missing = [
        bound for bound in stated_bounds(ALL_FIELDS[path]) if not mentions(description, bound)
    ]
    assert not missing, f"{path}: the description does not state {missing}: {description!r}"


def test_the_bound_check_can_fail() -> None:
    field = {"type": "integer", "minimum": 0, "maximum": 100, "description": "0 to 1000"}
    assert [b for b in stated_bounds(field) if not mentions(field["description"], b)] == ["100"]
