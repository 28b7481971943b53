"""The FogQuota custom resource as our types: its limits, and who set them.

The API server has validated the object against crds/fogquota.yaml; parsing it again keeps the
database's CHECK constraints out of reach of an object stored before the CRD was installed or
tightened, and turns such an object into one line naming the field instead of a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from controller.kube.resource import InvalidSpecError
from controller.model.quota import QuotaAmounts, QuotaResource
from controller.model.resources import MILLIS_PER_CORE

PLURAL = "fogquotas"
KIND = "FogQuota"
# The CRD's maxima, for objects that reached us without its validation.
_MAXIMA: Mapping[QuotaResource, int] = {
    QuotaResource.CPU: 1_000_000,
    QuotaResource.MEMORY: 1_000_000_000,
    QuotaResource.GPU: 1_000_000,
    QuotaResource.STORAGE: 1_000_000_000,
    QuotaResource.REPLICAS: 1_000_000,
    QuotaResource.FOG_DEPLOYMENTS: 1_000_000,
}


# 0.7 cores is 699.999... millicores in binary floating point; this much slack reads it as 700
# while nothing a manifest can write (three decimals at most count) is pushed up past itself.
ROUNDING = 1e-6


def _limit(resource: QuotaResource, value: Any) -> int | None:
    path = f"spec.hard.{resource}"
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (resource is not QuotaResource.CPU and not isinstance(value, int)):
        kind = "a number" if resource is QuotaResource.CPU else "an integer"
        raise InvalidSpecError(f"{path}: must be {kind}, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= _MAXIMA[resource]:
        raise InvalidSpecError(f"{path}: must be between 0 and {_MAXIMA[resource]}, got {value}")
    if resource is QuotaResource.CPU:
        # Counted to the millicore, as requests are; never rounded up past what was written.
        return math.floor(float(value) * MILLIS_PER_CORE + ROUNDING)
    return int(value)


def read_hard(spec: Mapping[str, Any]) -> QuotaAmounts:
    """spec.hard as limits (None: not limited); InvalidSpecError naming a broken field."""
    hard = spec.get("hard")
    if not isinstance(hard, Mapping):
        raise InvalidSpecError("spec.hard: is required and must be an object")
    unknown = sorted(set(hard) - {str(resource) for resource in QuotaResource})
    if unknown:
        raise InvalidSpecError(f"spec.hard.{unknown[0]}: is not a known resource")
    return QuotaAmounts(*(_limit(resource, hard.get(str(resource))) for resource in QuotaResource))
