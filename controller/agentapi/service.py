"""What the agent API does per request, transport aside: authenticate and act in one transaction.

The HTTP routes and the stream (app.py, stream.py) only parse and answer; every decision about
who may do what is made here, against the credential rows of the same transaction:

* a heartbeat renews the leases of the nodes whose tokens are valid now;
* a node reads only its own assignments;
* a report is written only if every item concerns a replica on a node the caller holds a valid
  token for and moves it along the state machine; otherwise nothing of it is written (the
  transaction rolls back) and the caller is told why;
* usage samples and health reports likewise: every one of a running replica on a node the
  caller holds a token for, or none is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import credentials, health, reports, usage
from controller.db import nodes as db_nodes
from controller.db.credentials import Issued, NodeIdentity
from controller.db.errors import unavailable
from controller.db.store import is_conflict
from controller.model.protocol import (
    K8S_NAME_MAX,
    Assignment,
    HealthReport,
    Report,
    ReportResult,
    UsageSample,
)
from controller.model.states import ReplicaStatus

T = TypeVar("T")
# What an agent sends in batches, each item naming its node: status and health reports, usage.
Item = TypeVar("Item", Report, UsageSample, HealthReport)

# A transaction that deadlocked with a placement is tried again at once, up to this many times
# in all; three in a row means something keeps conflicting, and the agent retries later (503).
CONFLICT_ATTEMPTS = 3
# What needs the agent to act: a long-poll answers at once while any of these is listed.
NEEDS_ACTION = frozenset({ReplicaStatus.PENDING, ReplicaStatus.STOPPING})


class UnauthenticatedError(Exception):
    """None of the tokens presented is a valid node token (now)."""


class ReportRefusedError(Exception):
    """A report batch was refused as a whole: nothing of it was written."""

    def __init__(self, refused: Sequence[tuple[uuid.UUID | str, str]]) -> None:
        super().__init__(f"{len(refused)} reports refused")
        self.refused = list(refused)


@dataclass(frozen=True, slots=True)
class Lists:
    """The assignments of the nodes whose tokens were valid, by node name."""

    identities: dict[bytes, NodeIdentity]
    by_node: dict[str, list[Assignment]]


class AgentService:
    """The agent API's database side; one instance per process, shared by every request."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def _run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in one transaction, retried when it lost a race; driver errors as ours.

        A report and a placement lock the same node rows through the allocation trigger and
        may deadlock; PostgreSQL aborts one of them, and a fresh attempt succeeds.
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    return await work(session)
            except DBAPIError as exc:
                if is_conflict(exc) and attempt + 1 < CONFLICT_ATTEMPTS:
                    continue
                if isinstance(exc, OperationalError | InterfaceError):
                    raise unavailable(exc) from exc
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def exchange(self, token: str) -> Issued | None:
        """A bootstrap token traded for the node's own token (None: not a valid bootstrap token)."""
        return await self._run(lambda session: credentials.exchange(session, bootstrap_token=token))

    async def rotate(self, token: str) -> Issued | None:
        """A node token replaced by a new one (None: not a valid node token)."""
        return await self._run(lambda session: credentials.rotate(session, token=token))

    async def authenticate(self, digests: Sequence[bytes]) -> dict[bytes, NodeIdentity]:
        """The valid ones among these node-token digests."""
        return await self._run(lambda session: credentials.authenticate(session, digests))

    async def heartbeat(self, digests: Sequence[bytes]) -> dict[bytes, NodeIdentity]:
        """Renew the leases of the nodes with valid tokens among `digests`; return those.

        UnauthenticatedError if there is none.
        """

        async def work(session: AsyncSession) -> dict[bytes, NodeIdentity]:
            valid = await credentials.authenticate(session, digests)
            if not valid:
                raise UnauthenticatedError
            await db_nodes.heartbeat(session, names=_names(valid.values()))
            return valid

        return await self._run(work)

    async def assignments(self, digests: Sequence[bytes]) -> Lists:
        """The complete lists of the nodes with valid tokens among `digests` (empty ones too)."""

        async def work(session: AsyncSession) -> Lists:
            valid = await credentials.authenticate(session, digests)
            names = _names(valid.values())
            by_node: dict[str, list[Assignment]] = {name: [] for name in names}
            if names:
                for item in await reports.assignments(session, nodes=names):
                    by_node[item.node].append(item)
            return Lists(identities=valid, by_node=by_node)

        return await self._run(work)

    async def report(self, digests: Sequence[bytes], batch: Sequence[Report]) -> int:
        """Write `batch` if all of it is allowed for these tokens; else ReportRefusedError.

        Returns how many reports were written (all of them).
        """
        return await self._write_batch(digests, batch, reports.report)

    async def usage(self, digests: Sequence[bytes], batch: Sequence[UsageSample]) -> int:
        """Record `batch` if every sample is allowed for these tokens; else ReportRefusedError.

        Returns how many samples were recorded (all of them).
        """
        return await self._write_batch(digests, batch, usage.record)

    async def health(self, digests: Sequence[bytes], batch: Sequence[HealthReport]) -> int:
        """Record `batch` if every report is allowed for these tokens; else ReportRefusedError.

        Returns how many health reports were recorded (all of them).
        """
        return await self._write_batch(digests, batch, health.record)

    async def _write_batch(
        self,
        digests: Sequence[bytes],
        batch: Sequence[Item],
        write: Callable[[AsyncSession, Sequence[Item]], Awaitable[ReportResult]],
    ) -> int:
        """Authenticate, refuse items of foreign nodes, write the rest all or none."""

        async def work(session: AsyncSession) -> int:
            valid = await credentials.authenticate(session, digests)
            if not valid:
                raise UnauthenticatedError
            foreign = foreign_reports(batch, allowed=set(_names(valid.values())))
            if foreign:
                raise ReportRefusedError(foreign)
            result = await write(session, batch)
            if result.refused:
                # Raising inside the transaction rolls back what was written of the batch.
                raise ReportRefusedError(result.refused)
            return result.accepted

        return await self._run(work)


def foreign_reports(
    batch: Sequence[Report | UsageSample | HealthReport], *, allowed: set[str]
) -> list[tuple[uuid.UUID | str, str]]:
    """The items of `batch` naming a node outside `allowed`, each with why it is refused."""
    return [
        (item.replica_id, f"node {item.node[:K8S_NAME_MAX]} is not yours")
        for item in batch
        if item.node not in allowed
    ]


def refused_items(refused: Sequence[tuple[uuid.UUID | str, str]]) -> list[dict[str, str]]:
    """A refused batch's `refused` list, as requests and the stream both answer it."""
    return [{"replicaId": str(replica), "reason": why} for replica, why in refused]


def _names(identities: Iterable[NodeIdentity]) -> list[str]:
    return sorted({identity.node for identity in identities})


def needs_action(lists: Mapping[str, Sequence[Assignment]]) -> bool:
    """Whether any listed replica waits for its agent (to be started or stopped)."""
    return any(item.status in NEEDS_ACTION for items in lists.values() for item in items)
