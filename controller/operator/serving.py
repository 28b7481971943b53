"""What `--metrics-bind-address` and `--health-probe-bind-address` start, and stop again.

The health loop (health.py) with its own database connection and API session, and the HTTP
endpoints (endpoints.py) that answer from it. Started with the runtime, before leadership is
known: a standby serves its probes and metrics too (it is ready, and says it is not leading).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from controller.db.inventory import Inventory
from controller.db.urls import DatabaseUrl
from controller.errors import TerminalError
from controller.kube.reachability import ApiReachability
from controller.model.addresses import Address
from controller.operator.endpoints import Endpoints
from controller.operator.health import Health
from controller.operator.metrics import Metrics
from controller.operator.supervisor import Supervisor


class ListenError(TerminalError):
    """An address to serve on is taken (or not ours to take): the user must choose another."""


@dataclass(slots=True)
class Serving:
    """The running endpoints and the loop that feeds them."""

    endpoints: Endpoints
    inventory: Inventory
    reachability: ApiReachability
    task: asyncio.Task[None]

    @classmethod
    async def start(
        cls,
        *,
        database_url: DatabaseUrl,
        supervisor: Supervisor,
        metrics: Metrics,
        metrics_address: Address | None,
        probe_address: Address | None,
    ) -> Serving | None:
        """Start the health loop and listen; None if neither address is given."""
        if metrics_address is None and probe_address is None:
            return None
        inventory = Inventory.connect(database_url)
        reachability = await ApiReachability.connect()
        health = Health(
            ping_database=inventory.ping,
            count=inventory.counts,
            check_api=reachability.check,
            loop_problems=supervisor.problems,
            metrics=metrics,
        )
        task = asyncio.create_task(health.run(), name="fog-controller-health")
        endpoints = Endpoints(metrics=metrics, health=health)
        serving = cls(
            endpoints=endpoints, inventory=inventory, reachability=reachability, task=task
        )
        try:
            await endpoints.start(metrics=metrics_address, probes=probe_address)
        except OSError as exc:
            await serving.stop()
            raise ListenError(f"cannot serve metrics and probes: {exc.strerror or exc}") from exc
        return serving

    async def stop(self) -> None:
        """Stop listening and checking; release the connections."""
        await self.endpoints.stop()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.reachability.close()
        await self.inventory.close()
