"""Leader election on a coordination.k8s.io/v1 Lease, with kubernetes_asyncio's kept implementation.

`campaign` waits to win the Lease, runs the leader's work while it holds it, and returns once it
is lost, with the work cancelled: the caller stops the process, as controller-runtime does, and
the pod comes back as a standby. The library alone is not enough in two places, handled here:

* an API error while leading escapes its renew loop without cancelling the leader's work, so the
  work is cancelled here whatever ends the campaign;
* it has no release: `release` clears the holder on shutdown so that the standby takes over at
  its next retry instead of waiting out the lease.

Winning the Lease is not permission to write: the database fences every write with the epoch the
new leader advances (controller/db/leadership.py), since a leader paused past its lease would
otherwise still write when it wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

logger = logging.getLogger(__name__)

# client-go's defaults (and controller-runtime's): a standby takes over at most 15 s after a
# leader vanishes; a leader gives up after failing to renew for 10 s; everyone retries every 2 s.
LEASE_DURATION_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10
RETRY_PERIOD_SECONDS = 2


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    """Which Lease, who we are, and the timing (see the defaults above)."""

    name: str
    namespace: str
    identity: str
    # Whole seconds: the Lease stores its duration as an integer (the library insists).
    lease_duration: int = LEASE_DURATION_SECONDS
    renew_deadline: int = RENEW_DEADLINE_SECONDS
    retry_period: int = RETRY_PERIOD_SECONDS


async def _nothing() -> None:
    return None


async def campaign(
    api: client.ApiClient, settings: ElectionSettings, lead: Callable[[], Awaitable[None]]
) -> None:
    """Campaign until elected, run `lead()` while leading, return when leadership is lost.

    API errors while still a candidate are retried after the retry period; while leading they
    end the leadership (the lease cannot be renewed), like a failed renewal.
    """
    lock = LeaseLock(settings.name, settings.namespace, settings.identity, api)
    leading: asyncio.Task[None] | None = None

    async def started() -> None:
        nonlocal leading
        leading = asyncio.current_task()
        logger.info("%s leads (Lease %s/%s)", settings.identity, settings.namespace, settings.name)
        await lead()

    election = LeaderElection(
        Config(
            lock,
            settings.lease_duration,
            settings.renew_deadline,
            settings.retry_period,
            started,
            _nothing,
        )
    )
    try:
        while True:
            try:
                await election.run()
            except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
                if leading is None:
                    logger.warning("leader election: %s; retrying", exc)
                    await asyncio.sleep(settings.retry_period)
                    continue
                logger.error("leader election failed while leading: %s", exc)
            return
    finally:
        if leading is not None and not leading.done():
            leading.cancel()
        if leading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await leading


async def release(api: client.ApiClient, settings: ElectionSettings) -> bool:
    """Give the Lease up if we hold it (at shutdown); True if released.

    Best effort: if it fails, the standby takes over when the lease expires anyway.
    """
    leases = client.CoordinationV1Api(api)
    try:
        lease = await leases.read_namespaced_lease(settings.name, settings.namespace)
        if lease.spec is None or lease.spec.holder_identity != settings.identity:
            return False
        lease.spec.holder_identity = None
        await leases.replace_namespaced_lease(settings.name, settings.namespace, lease)
    except (ApiException, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("could not release the Lease: %s", exc)
        return False
    logger.info("released the Lease %s/%s", settings.namespace, settings.name)
    return True
