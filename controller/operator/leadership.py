"""`--leader-elect`: the leader's loops run only while this process holds the Lease.

A standby keeps kopf's watch running (the observed objects and the work queue stay warm) but
starts none of the supervised loops: no reconcile, no node check, no notification listener. On
winning the Lease it first advances the fencing epoch in PostgreSQL (until then the store
refuses every write), queues every object it has seen, and starts the loops. On losing it the
loops are cancelled at once (a reconcile in flight rolls back: it is one transaction, and the
epoch fences any that would commit late) and the process stops with an error, so that
Kubernetes restarts it as a standby, as controller-runtime does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller.db.errors import DatabaseUnavailableError
from controller.db.store import Store
from controller.kube import client as kube_client
from controller.kube import election
from controller.kube.election import ElectionSettings
from controller.operator import metrics
from controller.operator.supervisor import Supervisor
from controller.operator.workqueue import backoff

logger = logging.getLogger(__name__)


class Leadership:
    """Campaigns for the Lease and runs the supervisor's loops while leading."""

    def __init__(
        self,
        *,
        settings: ElectionSettings,
        store: Store,
        supervisor: Supervisor,
        requeue_all: Callable[[], object],
        stop: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._supervisor = supervisor
        self._requeue_all = requeue_all
        self._stop = stop
        store.elect()
        metrics.set_leader(False, name=settings.name)  # a standby until the Lease is won

    async def run(self) -> None:
        """Campaign; when leadership ends, ask the process to stop (the runtime's task)."""
        api = await kube_client.connect()
        try:
            await election.campaign(api, self._settings, self._lead)
        finally:
            await api.close()
        self._stop("lost the leader election Lease; stopping so that a standby takes over")

    async def _lead(self) -> None:
        epoch = await self._advance_epoch()
        logger.info("leading with fencing epoch %d", epoch)
        metrics.set_leader(True, name=self._settings.name)
        self._requeue_all()
        try:
            await self._supervisor.run()
        finally:
            metrics.set_leader(False, name=self._settings.name)
            self._store.step_down()

    async def _advance_epoch(self) -> int:
        """Advance the epoch, however long the database takes to answer: we hold the Lease."""
        attempt = 0
        while True:
            try:
                return await self._store.lead(
                    election=self._settings.name, holder=self._settings.identity
                )
            except DatabaseUnavailableError as exc:
                attempt += 1
                delay = backoff(attempt)
                logger.warning("cannot start the epoch (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)

    async def release(self) -> None:
        """Give the Lease up at shutdown, after the loops have stopped."""
        api = await kube_client.connect()
        try:
            await election.release(api, self._settings)
        finally:
            await api.close()
