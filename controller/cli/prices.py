"""The prices file of `fogctl cost --prices FILE`: node classes, each a label selector and prices.

YAML or JSON (JSON is read as YAML), for example deploy/examples/prices.yaml:

    currency: EUR
    classes:
      - name: gpu
        nodeSelector:
          matchExpressions: [{key: accelerator, operator: Exists}]
        prices: {cpuCoreHour: "0.040", memoryGBHour: "0.005", gpuUnitHour: "0.90"}
      - name: standard
        nodeSelector: {}
        prices: {cpuCoreHour: "0.030", memoryGBHour: "0.004", storageGBHour: "0.0001"}

The first class whose selector matches a node prices it (controller.model.cost.PriceList says
why first rather than most specific); a price left out is 0. Validated here, with pydantic, so
that a bad file costs one line naming the field, before the database is asked anything.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from controller.cli.errors import CommandError
from controller.model.cost import Operator, PriceClass, PriceList, Prices, Requirement, Selector

# A price per unit-hour: not negative, finite (pydantic refuses NaN and infinities here).
Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
# Label keys and values as Kubernetes bounds them (a prefix of 253 plus a name of 63, and 63).
LABEL_KEY_MAX = 317
LABEL_VALUE_MAX = 63
# Class names are shown in messages and could be in labels one day: a label value's length.
CLASS_NAME_MAX = 63


class _Spec(BaseModel):
    """camelCase in the file, as in a manifest; an unknown field is a typo and refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class _PricesSpec(_Spec):
    cpu_core_hour: Price = Decimal(0)
    memory_gb_hour: Price = Field(default=Decimal(0), alias="memoryGBHour")
    gpu_unit_hour: Price = Decimal(0)
    storage_gb_hour: Price = Field(default=Decimal(0), alias="storageGBHour")


class _RequirementSpec(_Spec):
    key: str = Field(min_length=1, max_length=LABEL_KEY_MAX)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=LABEL_VALUE_MAX)]] = []

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        """Kubernetes' rule: In and NotIn need values, Exists and DoesNotExist take none."""
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class _SelectorSpec(_Spec):
    match_labels: dict[
        Annotated[str, Field(min_length=1, max_length=LABEL_KEY_MAX)],
        Annotated[str, Field(max_length=LABEL_VALUE_MAX)],
    ] = {}
    match_expressions: list[_RequirementSpec] = []


class _ClassSpec(_Spec):
    name: str = Field(min_length=1, max_length=CLASS_NAME_MAX)
    node_selector: _SelectorSpec
    prices: _PricesSpec


class _FileSpec(_Spec):
    # ISO 4217 codes (EUR, USD): one currency per file, so amounts are never added across two.
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    classes: list[_ClassSpec] = Field(min_length=1)

    @field_validator("classes")
    @classmethod
    def _names_unique(cls, classes: list[_ClassSpec]) -> list[_ClassSpec]:
        names = [c.name for c in classes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must be unique; repeated: {', '.join(repeated)}")
        return classes


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a path into the file: classes[1].prices.cpuCoreHour."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _one_line(path: Path, error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    message = " ".join(str(first["msg"]).split()).removeprefix("Value error, ")
    return f"prices file {path}: {_where(first['loc'])}: {message}{more}"


def load(path: Path) -> PriceList:
    """The price list in `path`; CommandError (one line naming the field) if it is bad."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read prices file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise CommandError(f"prices file {path} is not YAML or JSON{where}: {problem}") from None
    if not isinstance(loaded, dict):
        raise CommandError(f"prices file {path}: expected a mapping with currency and classes")
    try:
        spec = _FileSpec.model_validate(loaded)
    except ValidationError as exc:
        raise CommandError(_one_line(path, exc)) from None
    return PriceList(
        currency=spec.currency,
        classes=tuple(
            PriceClass(
                name=c.name,
                selector=Selector(
                    match_labels=MappingProxyType(dict(c.node_selector.match_labels)),
                    match_expressions=tuple(
                        Requirement(
                            key=r.key, operator=Operator(r.operator), values=frozenset(r.values)
                        )
                        for r in c.node_selector.match_expressions
                    ),
                ),
                prices=Prices(
                    cpu_core_hour=c.prices.cpu_core_hour,
                    memory_gb_hour=c.prices.memory_gb_hour,
                    gpu_unit_hour=c.prices.gpu_unit_hour,
                    storage_gb_hour=c.prices.storage_gb_hour,
                ),
            )
            for c in spec.classes
        ),
    )
