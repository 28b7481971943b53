"""FogQuotas: store each one's limits in PostgreSQL and report its usage in `.status`.

Enforcement is not here: it happens at placement, in the reconcile's own transaction
(reconciler.py, db/quotas.py). This keeps the stored limits equal to the object's and the
status current. FogQuotas are few (one or two per namespace), so unlike FogDeployments they
need no work queue: the watch event stores a change at once, a periodic refresh (handlers.py)
repairs anything an outage made us miss and keeps `status.used` fresh, and the delete handler
forgets the quota before kopf removes the finalizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controller.db.quotas import QuotaRecord
from controller.db.store import Store
from controller.kube import quota as quota_resource
from controller.kube.client import KubeClient
from controller.kube.resource import InvalidSpecError, object_ref, spec_manager
from controller.model import actors
from controller.model.conditions import ConditionType, condition_set
from controller.model.quota import quota_status
from controller.model.status import status_changed


class QuotaSync:
    """Stores FogQuotas and writes their status; one per operator process."""

    def __init__(self, *, store: Store, kube: KubeClient) -> None:
        self._store = store
        self._kube = kube

    async def sync(
        self, *, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
    ) -> None:
        """Store the quota's limits and patch its status when it changed.

        An invalid spec (possible only past the API server's validation) is reported as
        Stalled with the field named, and the limits stored before stay in force. A standby
        does nothing: the leader does it.
        """
        if not self._store.writable:
            return  # a standby: the leader stores and reports (and would be fenced against us)
        ref = object_ref(meta)
        previous = list(status.get("conditions") or [])
        try:
            hard = quota_resource.read_hard(spec)
        except InvalidSpecError as exc:
            conditions = condition_set(
                verdict=ConditionType.STALLED,
                reason="InvalidSpec",
                message=str(exc),
                generation=ref.generation,
                previous=previous,
                now=datetime.now(UTC),
            )
            body = {"conditions": [condition.as_dict() for condition in conditions]}
        else:
            used = await self._store.save_quota(
                QuotaRecord(
                    namespace=ref.namespace,
                    name=ref.name,
                    uid=ref.uid,
                    generation=ref.generation,
                    hard=hard,
                    actor=spec_manager(meta, default=actors.OPERATOR),
                )
            )
            body = quota_status(
                hard=hard,
                used=used,
                generation=ref.generation,
                previous_conditions=previous,
                now=datetime.now(UTC),
            )
        if status_changed(old=status, new=body):
            await self._kube.patch_status(
                ref.namespace, ref.name, body, plural=quota_resource.PLURAL
            )

    async def forget(self, meta: Mapping[str, Any]) -> None:
        """The FogQuota is being deleted: its limits stop applying (and waiting replicas wake)."""
        ref = object_ref(meta)
        await self._store.remove_quota(
            namespace=ref.namespace, name=ref.name, actor=actors.OPERATOR
        )
