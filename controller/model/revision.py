"""The template revision: which replicas are current and which must be rolled.

A replica records the revision it was created for. When what it runs changes (the image, the
per-replica resources, the container spec, the health check or the node selector: a pod
template's fields in Kubernetes), the revision changes and the planner replaces the replicas
of the old one. Scaling or a new placement strategy changes nothing a replica carries, so they
are not part of the revision (as in Kubernetes, where `replicas` is outside the pod template).

The health check and the node selector joined the hash later (issue 16). Each enters only
when set (a health check present, a selector non-empty), so a deployment without them hashes
exactly as before and an upgrade rolls none of its replicas; a deployment that has a selector
was relabelled by migration 0011 with this same function, for the same reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.model.resources import Resources

# The template's keys other than the container spec's (env, ports, command, args), as as_spec
# spells them.
_OWN_KEYS = frozenset({"image", "resources", "nodeSelector", "healthCheck"})


@dataclass(frozen=True, slots=True)
class Template:
    """What a replica runs: the fields of a FogDeployment's spec that make its revision."""

    image: str
    request: Resources
    container_spec: Mapping[str, Any]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    health_check: Mapping[str, Any] | None = None

    @property
    def revision(self) -> str:
        """A stable hex digest of the template; equal templates give equal revisions."""
        hashed: dict[str, Any] = {
            "image": self.image,
            "resources": self.request.as_tuple(),
            "container": self.container_spec,
        }
        if self.node_selector:
            hashed["nodeSelector"] = self.node_selector
        if self.health_check is not None:
            hashed["healthCheck"] = self.health_check
        canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Template:
        """The inverse of as_spec: a revision row's template, to run an older revision.

        An automatic revert (model/canary.py) plans and the agents run the replicas of the
        revision it goes back to from this, not from the spec, which still names the new one.
        """
        rest = {key: value for key, value in spec.items() if key not in _OWN_KEYS}
        return cls(
            image=str(spec["image"]),
            request=Resources.from_spec(spec["resources"]),
            container_spec=rest,
            node_selector=dict(spec.get("nodeSelector") or {}),
            health_check=spec.get("healthCheck"),
        )

    def as_spec(self) -> dict[str, Any]:
        """The template as the FogDeployment spec spells it: what a revision row keeps.

        `fogctl rollout undo` writes it back into the spec, so its keys are the spec's (env,
        ports, command and args sit directly in the spec), and what the hash leaves out when
        unset is left out here too.
        """
        spec: dict[str, Any] = {
            "image": self.image,
            "resources": self.request.as_spec(),
            **self.container_spec,
        }
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.health_check is not None:
            spec["healthCheck"] = dict(self.health_check)
        return spec
