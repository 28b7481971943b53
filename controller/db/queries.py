"""Small reusable SELECTs over the seed's tables."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select

from controller.db.tables import Deployment


def active_deployments(user_id: uuid.UUID) -> Select[Deployment]:
    """A tenant's deployments that are not soft-deleted (served by `(user_id, deleted_at)`)."""
    return (
        select(Deployment)
        .where(Deployment.user_id == user_id, Deployment.deleted_at.is_(None))
        .order_by(Deployment.name)
    )
