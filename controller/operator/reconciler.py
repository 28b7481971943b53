"""One reconcile of one FogDeployment: observe -> plan -> apply -> status.

The same idempotent function serves create, update, startup, the periodic resync and database
notifications: it compares what the spec wants with what Postgres records and closes the gap
by one step. It knows nothing of kopf or of the work queue; the workers turn its errors into
retry decisions.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from controller.db.deployments import DesiredRecord, Snapshot
from controller.db.store import Store, Transaction
from controller.kube.resource import DeploymentSpec, ObjectRef
from controller.model import actors, canary, planner, quota, restarts
from controller.model.events import Event, events_for
from controller.model.progress import deadline_exceeded
from controller.model.replicas import ReplicaState
from controller.model.restarts import RestartPolicy
from controller.model.revisions import plan_revisions
from controller.model.status import compute_status, settled_usage, status_body
from controller.model.usage import current_usage
from controller.operator.metrics import Metrics

# Candidate nodes read (and locked) for a placement: two per replica to place, so Spread can
# put each on a different node and the planner's exact scoring (which also weighs GPU and
# storage) has a choice beyond SQL's order. Few, because each is locked until commit: with
# 16 reconciles in flight on 100 nodes, 8 per reconcile left the others nothing to lock.
CANDIDATES_PER_REPLICA = 2
MIN_CANDIDATES = 2


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reconcile decided: the `.status` body to patch and the events to post."""

    status: dict[str, Any]
    events: tuple[Event, ...]
    # Reconcile again after this many seconds (the restart backoff ends then, or a replica
    # becomes available after minReadySeconds), if set.
    requeue_after: float | None = None
    # Replicas the plan could not place, and the condition reason the status gave for it.
    unplaced: int = 0
    reason: str | None = None


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
        store: Store,
        *,
        restarts: RestartPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._restarts = restarts or RestartPolicy()
        self._metrics = Metrics() if metrics is None else metrics

    async def reconcile(
        self, *, ref: ObjectRef, spec: DeploymentSpec, live_status: Mapping[str, Any]
    ) -> Outcome:
        """Make Postgres match the spec by one step; return the status that results."""
        outcome = await self._store.transaction(
            lambda tx: self._reconcile_once(tx, ref, spec, live_status)
        )
        # New samples alone are not worth a status write each (model/status.py settled_usage).
        outcome.status["usage"] = settled_usage(outcome.status, live_status)
        # Counted once the transaction committed: a conflict re-runs the plan, and only the
        # plan that was applied failed to place anything.
        if outcome.unplaced:
            self._metrics.placement_failures.labels(reason=outcome.reason or "Unplaced").inc(
                outcome.unplaced
            )
        return outcome

    async def finalize(self, *, ref: ObjectRef) -> None:
        """Soft-delete the deployment: status deleted, replicas stopping, history kept."""

        async def once(tx: Transaction) -> None:
            snapshot = await tx.observe(namespace=ref.namespace, name=ref.name)
            await tx.soft_delete(
                snapshot=snapshot,
                transitions=planner.stop_all(replicas=snapshot.replicas),
                actor=actors.OPERATOR,
            )

        await self._store.transaction(once)

    @staticmethod
    async def _stamp(
        tx: Transaction, *, deployment_id: uuid.UUID, verdict: canary.Verdict, revision: str
    ) -> None:
        """Store an automatic promotion or an abort on the revision row (model/canary.py).

        Stored, not kept in memory: an abort must outlive the operator, and the next
        reconcile of a promoted revision must not put its canaries back to waiting.
        """
        if verdict.promote or verdict.abort is not None:
            await tx.stamp_revision(
                deployment_id=deployment_id,
                revision=revision,
                promoted_by=canary.OPERATOR if verdict.promote else None,
                abort_reason=verdict.abort,
            )

    @staticmethod
    async def _plan(
        tx: Transaction, desired: planner.DesiredState, snapshot: Snapshot
    ) -> tuple[planner.Plan, str | None]:
        """Plan without nodes first; read candidate nodes only if something needs a place.

        In a namespace with a FogQuota, a plan that places (and the first reconcile of a new
        deployment, which the fogDeployments limit ranks by age) first locks the quota and
        reads the namespace's usage (db/quotas.py): the plan places no more replicas than the
        quota admits, and the second value says which limit held the rest (None if none did).

        Candidates are locked, and nodes other reconciles hold are skipped; only if that leaves
        replicas without a place is there a second read that also sees the held nodes, without
        locks (room may be on the held nodes alone; the CHECK constraints guard it). That read
        also returns the full nodes closest to fitting, for the capacity message.
        """
        plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=())
        held_by: str | None = None
        if plan.unplaced or snapshot.deployment is None:
            gate = await tx.quota_gate(snapshot=snapshot)
            if gate is not None:
                allowed = quota.allowance(gate=gate, request=desired.request)
                held_by = allowed.message(gate=gate, request=desired.request, wanted=plan.unplaced)
                desired = replace(desired, quota_room=allowed.replicas)
                plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=())
        for lock in (True, False):
            if plan.unplaced == plan.quota_held:  # nothing left that a node could take
                break
            nodes = await tx.candidate_nodes(
                node_selector=desired.node_selector,
                request=desired.request,
                strategy=desired.strategy,
                limit=max(
                    MIN_CANDIDATES, CANDIDATES_PER_REPLICA * (plan.unplaced - plan.quota_held)
                ),
                lock=lock,
                closest=not lock,
            )
            plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=nodes)
        return plan, held_by if plan.quota_held else None

    async def _reconcile_once(
        self,
        tx: Transaction,
        ref: ObjectRef,
        spec: DeploymentSpec,
        live_status: Mapping[str, Any],
    ) -> Outcome:
        previous = list(live_status.get("conditions") or [])
        snapshot = await tx.observe(namespace=ref.namespace, name=ref.name)
        # The database's clock: failure times were stamped with it (one clock, see Snapshot).
        now = snapshot.now
        stored = snapshot.deployment
        restart = restarts.decide(
            failures=stored.consecutive_failures if stored else 0,
            last_failure_at=stored.last_failure_at if stored else None,
            counted_revision=stored.revision if stored else None,
            revision=spec.revision,
            now=now,
            policy=self._restarts,
        )
        known = await tx.revisions(stored.id) if stored else ()
        verdict = canary.decide(
            canary.Facts(
                rollout=spec.desired.rollout,
                revision=spec.revision,
                known=known,
                replicas=snapshot.replicas,
                available=partial(spec.desired.readiness.available, now=now),
                failures=stored.consecutive_failures
                if stored and stored.revision == spec.revision
                else 0,
                deadline_exceeded=deadline_exceeded(live_status, generation=ref.generation),
            )
        )
        # Canaries waiting, or an aborted rollout's revert target: what the planner aims at.
        desired = verdict.planner_input(
            spec.desired.planner_input(
                evacuate=snapshot.evacuate, hold_new=restart.holds(now), now=now
            ),
            aborted_revision=spec.revision,
        )
        plan, held_by = await self._plan(tx, desired, snapshot)
        new_ids = [uuid.uuid4() for _ in plan.create]
        first_seq = stored.next_ordinal if stored else 0
        after = planner.outcome(
            replicas=snapshot.replicas,
            plan=plan,
            revision=desired.revision,
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
            stage=verdict,
            now=now,
            quota=held_by,
            readiness=spec.desired.readiness,
            rollout=spec.desired.rollout,
            previous_status=live_status,
        )
        reason = next(c.reason for c in status.conditions if c.status)
        revisions = plan_revisions(
            known=known,
            revision=spec.revision,
            live={replica.revision for replica in after if replica.is_active},
            limit=spec.desired.revision_history_limit,
            rolled_out=status.rolled_out,
        )
        deployment_id = await tx.apply(
            snapshot=snapshot,
            namespace=ref.namespace,
            desired=DesiredRecord(spec=spec.desired, k8s_uid=ref.uid, generation=ref.generation),
            planned=desired,
            plan=plan,
            new_ids=new_ids,
            status=status.deployment_status,
            reason=reason,
            actor=actors.OPERATOR,
        )
        if revisions.changes_rows:
            await tx.record_revisions(
                deployment_id=deployment_id,
                plan=revisions,
                revision=spec.revision,
                template=spec.desired.template.as_spec(),
                actor=ref.manager,
            )
        await self._stamp(tx, deployment_id=deployment_id, verdict=verdict, revision=spec.revision)
        body = status_body(
            status,
            name=ref.name,
            usage=current_usage(after, snapshot.usage),
            revisions=revisions,
            stage=verdict,
        )
        events = events_for(
            plan=plan,
            status=status,
            previous_conditions=previous,
            revision=desired.revision,
            previous_replicas=stored.target_replicas if stored else None,
        )
        hold = restart.hold_until if restart.holds(now) else None
        # Nothing is written when a replica crosses minReadySeconds: wake up for it then.
        ready = spec.desired.readiness.next_crossing(after, now=now)
        # Nor when the progress deadline passes: the Progressing condition must turn then.
        due = status.progress_due
        wake = min((moment for moment in (hold, ready, due) if moment is not None), default=None)
        return Outcome(
            status=body,
            events=events,
            requeue_after=(wake - now).total_seconds() if wake else None,
            unplaced=plan.unplaced,
            reason=reason,
        )
