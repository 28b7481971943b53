"""The template revision: which replicas are current and which must be rolled.

A replica records the revision it was created for. When the image, the per-replica resources or
the container spec change, the revision changes and the planner replaces the replicas of the
old one. Scaling or a new node selector changes nothing a running replica carries, so they are
not part of the revision (as in Kubernetes, where `replicas` is outside the pod template).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from controller.model.resources import Resources


def template_revision(*, image: str, request: Resources, container_spec: Mapping[str, Any]) -> str:
    """A stable hex digest of what a replica runs; equal inputs give equal revisions."""
    canonical = json.dumps(
        {"image": image, "resources": request.as_tuple(), "container": container_spec},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
