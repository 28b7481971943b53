"""One reconcile of one FogDeployment: observe -> plan -> apply -> status.

The same idempotent function serves create, update, startup, the periodic resync and database
notifications: it compares what the spec wants with what Postgres records and closes the gap
by one step. It knows nothing of kopf or of the work queue; the workers turn its errors into
retry decisions.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg.errors
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db import deployments
from controller.db import engine as db_engine
from controller.db.errors import DatabaseUnavailableError
from controller.kube import status as kube_status
from controller.kube.resource import DeploymentSpec, ObjectRef
from controller.model import planner, restarts
from controller.model.events import Event, events_for
from controller.model.replicas import ReplicaState
from controller.model.restarts import RestartPolicy
from controller.model.status import compute_status

T = TypeVar("T")
ACTOR = "operator"
# A conflict means another writer moved first; re-planning from a fresh snapshot almost
# always succeeds at once. After this many in a row something is hot: let the caller back off.
MAX_CONFLICT_ATTEMPTS = 5
# Random pause before a retry, growing with each try: up to 20 ms, 40 ms ... (a reconcile's
# transaction takes a few milliseconds, so this spreads colliding writers apart).
CONFLICT_JITTER_SECONDS = 0.02
# Candidate nodes read (and locked) for a placement: two per replica to place, so Spread can
# put each on a different node and the planner's exact scoring (which also weighs GPU and
# storage) has a choice beyond SQL's order. Few, because each is locked until commit: with
# 16 reconciles in flight on 100 nodes, 8 per reconcile left the others nothing to lock.
CANDIDATES_PER_REPLICA = 2
MIN_CANDIDATES = 2
# Over-commit refused by the node CHECK constraints: another deployment took the room.
OVERCOMMIT_CONSTRAINT_PREFIX = "ck_nodes_"


class ConflictRetryError(RuntimeError):
    """Conflicts kept happening; retry the reconcile later."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reconcile decided: the `.status` body to patch and the events to post."""

    status: dict[str, Any]
    events: tuple[Event, ...]
    # Reconcile again after this many seconds (the restart backoff ends then), if set.
    requeue_after: float | None = None


def _is_retryable(error: DBAPIError) -> bool:
    """Conflicts that a fresh snapshot resolves: over-commit, deadlock, serialization."""
    original = error.orig
    if isinstance(error, IntegrityError):
        constraint = getattr(getattr(original, "diag", None), "constraint_name", "") or ""
        return constraint.startswith(OVERCOMMIT_CONSTRAINT_PREFIX)
    return isinstance(
        original, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    )


def desired_record(ref: ObjectRef, spec: DeploymentSpec) -> deployments.DesiredRecord:
    """The deployment row the spec asks for."""
    return deployments.DesiredRecord(
        name=ref.name,
        image=spec.create.container_image,
        replicas=spec.replicas,
        container_spec=spec.create.container_spec,
        node_selector=spec.create.node_selector,
        strategy=spec.create.placement_strategy,
        request=spec.request,
        revision=spec.revision,
        k8s_uid=ref.uid,
        generation=ref.generation,
    )


def _stalled(
    reason: str | None, replicas: Sequence[ReplicaState], spec: DeploymentSpec
) -> str | None:
    """The crash-loop verdict stands only while the desired replicas are not all running."""
    running = sum(1 for r in replicas if r.is_available and r.revision == spec.revision)
    return reason if running < spec.replicas else None


class Reconciler:
    """Reconciles FogDeployments into Postgres; one instance per operator process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        restarts: RestartPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._restarts = restarts or RestartPolicy()
        self._clock = clock
        # Reconciles come from a fixed pool of workers, but kopf runs the delete handler of
        # every object at once: deleting thousands must queue here, not in the connection
        # pool, whose wait times out.
        self._slots = asyncio.Semaphore(db_engine.MAX_CONCURRENT)

    async def reconcile(
        self, *, ref: ObjectRef, spec: DeploymentSpec, live_status: Mapping[str, Any]
    ) -> Outcome:
        """Make Postgres match the spec by one step; return the status that results."""
        previous = list(live_status.get("conditions") or [])
        return await self._with_retries(
            lambda session: self._reconcile_once(session, ref, spec, previous)
        )

    async def finalize(self, *, ref: ObjectRef) -> None:
        """Soft-delete the deployment: status deleted, replicas stopping, history kept."""

        async def once(session: AsyncSession) -> None:
            snapshot = await deployments.observe(session, namespace=ref.namespace, name=ref.name)
            await deployments.soft_delete(
                session,
                snapshot=snapshot,
                transitions=planner.stop_all(replicas=snapshot.replicas),
                actor=ACTOR,
            )

        await self._with_retries(once)

    async def _with_retries(self, attempt: Callable[[AsyncSession], Awaitable[T]]) -> T:
        for tries in range(1, MAX_CONFLICT_ATTEMPTS + 1):
            try:
                async with self._slots, self._sessions() as session, session.begin():
                    return await attempt(session)
            except deployments.ConflictError:
                pass
            except DBAPIError as exc:
                if not _is_retryable(exc):
                    if isinstance(exc, OperationalError | InterfaceError):
                        detail = str(exc.orig or exc).splitlines()[0]
                        raise DatabaseUnavailableError(detail) from exc
                    raise
            # Writers that collided would collide again if they retried in step.
            await asyncio.sleep(random.uniform(0, CONFLICT_JITTER_SECONDS * tries))  # noqa: S311
        raise ConflictRetryError(f"{MAX_CONFLICT_ATTEMPTS} conflicting writes in a row")

    @staticmethod
    async def _plan(
        session: AsyncSession, desired: planner.DesiredState, snapshot: deployments.Snapshot
    ) -> planner.Plan:
        """Plan without nodes first; read candidate nodes only if something needs a place.

        Candidates are locked, and nodes other reconciles hold are skipped; only if that leaves
        replicas without a place is there a second read that also sees the held nodes, without
        locks (room may be on the held nodes alone; the CHECK constraints guard it).
        """
        plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=())
        for lock in (True, False):
            if not plan.unplaced:
                break
            nodes = await deployments.candidate_nodes(
                session,
                node_selector=desired.node_selector,
                request=desired.request,
                strategy=desired.strategy,
                limit=max(MIN_CANDIDATES, CANDIDATES_PER_REPLICA * plan.unplaced),
                lock=lock,
            )
            plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=nodes)
        return plan

    async def _reconcile_once(
        self,
        session: AsyncSession,
        ref: ObjectRef,
        spec: DeploymentSpec,
        previous: Sequence[Mapping[str, Any]],
    ) -> Outcome:
        snapshot = await deployments.observe(session, namespace=ref.namespace, name=ref.name)
        now = self._clock()
        stored = snapshot.deployment
        restart = restarts.decide(
            failures=stored.consecutive_failures if stored else 0,
            last_failure_at=stored.last_failure_at if stored else None,
            now=now,
            policy=self._restarts,
        )
        desired = planner.DesiredState(
            replicas=spec.replicas,
            revision=spec.revision,
            request=spec.request,
            strategy=spec.strategy,
            node_selector=spec.create.node_selector,
            evacuate=snapshot.evacuate,
            hold_new=restart.holds(now),
        )
        plan = await self._plan(session, desired, snapshot)
        new_ids = [uuid.uuid4() for _ in plan.create]
        first_seq = stored.next_ordinal if stored else 0
        after = planner.outcome(
            replicas=snapshot.replicas,
            plan=plan,
            revision=spec.revision,
            new_ids=new_ids,
            first_seq=first_seq,
        )
        status = compute_status(
            generation=ref.generation,
            desired_replicas=spec.replicas,
            revision=spec.revision,
            replicas=after,
            unplaced=plan.unplaced,
            shortfall=plan.shortfall,
            previous_conditions=previous,
            stalled_reason=_stalled(restart.stalled_reason, after, spec),
            now=now,
        )
        reason = next(c.reason for c in status.conditions if c.status)
        await deployments.apply(
            session,
            snapshot=snapshot,
            namespace=ref.namespace,
            desired=desired_record(ref, spec),
            plan=plan,
            new_ids=new_ids,
            status=status.deployment_status,
            reason=reason,
            actor=ACTOR,
        )
        body = kube_status.status_body(
            name=ref.name,
            status=status,
            desired=spec.replicas,
            revision=spec.revision,
            unplaced=plan.unplaced,
        )
        events = events_for(
            plan=plan, status=status, previous_conditions=previous, revision=spec.revision
        )
        hold = restart.hold_until if restart.holds(now) else None
        return Outcome(
            status=body,
            events=events,
            requeue_after=(hold - now).total_seconds() if hold else None,
        )
