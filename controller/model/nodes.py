"""Fog node liveness as data.

A node's *status* says only whether its agent is heard from (online) or not (offline). Whether
new replicas may go there is a separate, operator-chosen flag (`cordoned`), as in Kubernetes,
where `spec.unschedulable` is independent of the Ready condition: a cordoned node that goes
silent and comes back must still be cordoned.
"""

from __future__ import annotations

import enum


class NodeStatus(enum.StrEnum):
    """Liveness of a fog node, as its heartbeats show it (PostgreSQL enum `nodestatus`)."""

    ONLINE = "online"
    OFFLINE = "offline"
