"""Reconciles of FogDeployments: observe -> plan -> apply -> status.

The same idempotent function serves create, update, startup, the periodic resync and database
notifications: it compares what the spec wants with what Postgres records and closes the gap
by one step. It knows nothing of kopf or of the work queue; the workers turn its errors into
retry decisions.

A worker hands over every key it took from the queue at once (`reconcile_batch`, issue 15
item 1, as Nomad's plan applier batches plans): the batch is one transaction with a fixed
number of statements (one lock statement, one read per table, one write per table), and the
decisions per deployment are the same pure steps a lone reconcile takes (`_intend`,
`_conclude`). Keys that place in a namespace with a FogQuota pass its gate together: one lock
and one usage read per namespace, each key admitted against what the keys before it took
(model/quota.py `admit`). The rare and complex cases take the lone path after the batch, each
in its own transaction: a deployment the batch's earlier keys cut short at the quota gate (the
lone path reads what was placed, not what the batch reserved), a deployment the batch's node
read left without room (the lone path reads again, unlocked, and names the closest node), and
every key of a batch whose transaction conflicted.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from controller.db.deployments import DesiredRecord, Snapshot, Write
from controller.db.errors import DatabaseUnavailableError, FencedError, WriteConflictError
from controller.db.revisions import Record
from controller.db.store import Store, Transaction
from controller.kube.resource import DeploymentSpec, ObjectRef
from controller.model import actors, canary, planner, quota, restarts
from controller.model.events import Event, events_for
from controller.model.placement import NodeCapacity
from controller.model.progress import deadline_exceeded
from controller.model.replicas import ReplicaState
from controller.model.resources import Resources
from controller.model.restarts import RestartPolicy
from controller.model.revisions import KnownRevision, RevisionPlan, plan_revisions
from controller.model.status import compute_status, settled_usage, status_body
from controller.model.usage import current_usage
from controller.operator.metrics import Metrics

logger = logging.getLogger(__name__)

# Candidate nodes read (and locked) for a placement: two per replica to place, so Spread can
# put each on a different node and the planner's exact scoring (which also weighs GPU and
# storage) has a choice beyond SQL's order. Few, because each is locked until commit: with
# 16 reconciles in flight on 100 nodes, 8 per reconcile left the others nothing to lock.
CANDIDATES_PER_REPLICA = 2
MIN_CANDIDATES = 2
# At most this many candidate nodes locked by one batch, all its groups together: 32 new
# 10-replica deployments would otherwise lock 640, every node of a 500-node cluster, and
# leave the other workers' batches nothing to lock (they would all fall back to the lone
# path). Keys the group's nodes cannot take take the lone path.
MAX_BATCH_CANDIDATES = 128


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
    # Nothing was left to do or to wait for: an empty plan, every desired replica available
    # on the rolled-out revision, no quota holding it back, no wake-up due. Until news of the
    # object comes (the watch, a notification), another reconcile would find the same; the
    # resync passes such objects by on most rounds (sources.py).
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """One object to reconcile: its identity, spec, and the status it shows now."""

    ref: ObjectRef
    spec: DeploymentSpec
    live_status: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Intent:
    """What one reconcile aims at, decided from its snapshot before any node is read."""

    request: Request
    snapshot: Snapshot
    known: tuple[KnownRevision, ...]
    restart: restarts.RestartDecision
    verdict: canary.Verdict
    desired: planner.DesiredState


@dataclass(frozen=True, slots=True)
class _Decision:
    """What one reconcile writes, and the outcome it reports once that is committed."""

    intent: _Intent
    write: Write
    revisions: RevisionPlan
    outcome: Outcome


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
        request = Request(ref=ref, spec=spec, live_status=live_status)
        outcome = await self._store.transaction(lambda tx: self._reconcile_once(tx, request))
        return self._committed(outcome, live_status)

    async def reconcile_batch(
        self, requests: Sequence[Request]
    ) -> list[Outcome | Exception | None]:
        """Reconcile the requests in one transaction; None for a key that must go alone.

        Tried once. A key left None takes `reconcile_alone` afterwards: one the batch did not
        decide (cut short at the quota gate by the batch's earlier keys, or younger than one
        that was; no room on the group's nodes), and every key if the batch's transaction
        conflicted (an over-commit the node CHECK constraints refused, a deadlock, a replica an
        agent moved) or raised anything unexpected, so that one key's bug fails that key
        alone. An outage or a lost lease is every key's error: alone, each would
        meet it again at once.
        """
        if len(requests) <= 1:  # a batch of one buys nothing: the lone path
            return [None] * len(requests)
        try:
            batched = await self._store.transaction(
                lambda tx: self._reconcile_batch(tx, requests), attempts=1
            )
        except (DatabaseUnavailableError, FencedError) as exc:  # each key's caller decides
            return [exc] * len(requests)
        except WriteConflictError:
            batched = {}
        except Exception:  # with its traceback: each key alone finds whose it is
            logger.exception("a batch of %d reconciles failed; each goes alone", len(requests))
            batched = {}
        return [
            self._committed(batched[index], request.live_status) if index in batched else None
            for index, request in enumerate(requests)
        ]

    async def reconcile_alone(self, request: Request) -> Outcome | Exception:
        """`reconcile` of one request, with the error that stopped it as its result."""
        try:
            return await self.reconcile(
                ref=request.ref, spec=request.spec, live_status=request.live_status
            )
        except Exception as exc:  # the caller's `decide` maps it
            return exc

    def _committed(self, outcome: Outcome, live_status: Mapping[str, Any]) -> Outcome:
        """The outcome once its transaction committed: usage settled, failures counted."""
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
                desired, held_by = _capped(desired, gate, wanted=plan.unplaced)
                plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=())
        for lock in (True, False):
            if not plan.unhoused:  # nothing left that a node could take
                break
            nodes = await tx.candidate_nodes(
                node_selector=desired.node_selector,
                request=desired.request,
                strategy=desired.strategy,
                limit=_candidates(plan.unhoused),
                lock=lock,
                closest=not lock,
            )
            plan = planner.plan(desired=desired, replicas=snapshot.replicas, nodes=nodes)
        return plan, held_by if plan.quota_held else None

    async def _reconcile_once(self, tx: Transaction, request: Request) -> Outcome:
        ref = request.ref
        snapshot = await tx.observe(namespace=ref.namespace, name=ref.name)
        stored = snapshot.deployment
        known = (await tx.revisions([stored.id]))[stored.id] if stored else ()
        intent = self._intend(request, snapshot, known)
        plan, held_by = await self._plan(tx, intent.desired, snapshot)
        decision = self._conclude(intent, plan, held_by)
        await self._write(tx, [decision])
        return decision.outcome

    async def _reconcile_batch(
        self, tx: Transaction, requests: Sequence[Request]
    ) -> dict[int, Outcome]:
        """The batch's transaction: the outcomes it wrote, by index; the others go alone.

        Three statements observe every key, one reads their revision rows; keys that place in
        a namespace with a quota pass its gate together (`_gate_batch`); the plans that need
        no node are final at once, the others are planned per group of keys with the same node
        selector and strategy, on one locked node read per group and one in-memory capacity
        snapshot that every accepted plan takes its room from (planner.plan_many), shared
        across groups (a node two selectors match is read twice but planned on once). A key
        whose plan still leaves a replica a node could take goes alone.
        """
        keys = [(request.ref.namespace, request.ref.name) for request in requests]
        snapshots = await tx.observe_many(keys)
        ids = [s.deployment.id for s in snapshots.values() if s.deployment is not None]
        known = await tx.revisions(ids) if ids else {}
        intents: dict[int, _Intent] = {}
        plans: dict[int, planner.Plan] = {}
        for index, (request, key) in enumerate(zip(requests, keys, strict=True)):
            snapshot = snapshots[key]
            stored = snapshot.deployment
            intent = self._intend(request, snapshot, known[stored.id] if stored else ())
            intents[index] = intent
            plans[index] = planner.plan(
                desired=intent.desired, replicas=snapshot.replicas, nodes=()
            )
        aims = {index: intent.desired for index, intent in intents.items()}
        held: dict[int, str | None] = {}
        gated = {
            index: (intent, plans[index].unplaced)
            for index, intent in intents.items()
            if intent.snapshot.quota_limited
            and (plans[index].unplaced or intent.snapshot.deployment is None)
        }
        admitted = await self._gate_batch(tx, gated) if gated else {}
        for index in gated:
            if index not in admitted:  # cut short by the batch's own keys: the lone path
                del plans[index]
                continue
            aims[index], held[index] = admitted[index]
            plans[index] = planner.plan(
                desired=aims[index], replicas=intents[index].snapshot.replicas, nodes=()
            )
        groups: dict[tuple[tuple[tuple[str, str], ...], str], list[int]] = defaultdict(list)
        for index, plan in plans.items():
            if plan.unhoused:
                aim = aims[index]
                groups[(tuple(sorted(aim.node_selector.items())), aim.strategy)].append(index)
        taken: dict[uuid.UUID, NodeCapacity] = {}  # nodes as this batch's plans left them
        budget = MAX_BATCH_CANDIDATES  # nodes the batch may still lock, all groups together
        for members in groups.values():
            if budget <= 0:  # the remaining groups' keys take the lone path
                break
            limit = min(budget, sum(_candidates(plans[index].unhoused) for index in members))
            budget -= limit
            first = aims[members[0]]
            read = await tx.candidate_nodes(
                node_selector=first.node_selector,
                request=_smallest(aims[index].request for index in members),
                strategy=first.strategy,
                limit=limit,
                lock=True,
            )
            made, left = planner.plan_many(
                wants=[(aims[index], intents[index].snapshot.replicas) for index in members],
                nodes=[taken.get(node.node_id, node) for node in read],
            )
            taken.update((node.node_id, node) for node in left)
            plans.update(zip(members, made, strict=True))
        decisions = {
            index: self._conclude(
                intents[index], plan, held.get(index) if plan.quota_held else None
            )
            for index, plan in plans.items()
            if not plan.unhoused
        }
        await self._write(tx, list(decisions.values()))
        return {index: decision.outcome for index, decision in decisions.items()}

    @staticmethod
    async def _gate_batch(
        tx: Transaction, gated: Mapping[int, tuple[_Intent, int]]
    ) -> dict[int, tuple[planner.DesiredState, str | None]]:
        """The quota gate for a batch's keys (with the replicas each wants placed), at once.

        One lock statement and one usage read per namespace (db/quotas.py `gates`), then
        model/quota.py `admit` in age order: each admitted key's desired state capped at what
        the quota admits it, and the message naming the limit that held the rest. A key
        missing from the result was cut short by the keys before it and goes alone.
        """
        namespaces = await tx.quota_gates(intent.snapshot for intent, _ in gated.values())
        members: dict[uuid.UUID | None, list[int]] = defaultdict(list)
        for index, (intent, _) in gated.items():
            members[intent.snapshot.user_id].append(index)
        admitted: dict[int, tuple[planner.DesiredState, str | None]] = {}
        for tenant, indexes in members.items():
            namespace = namespaces.get(tenant) if tenant is not None else None
            if namespace is None:  # its quota was deleted since the snapshot: nothing limits
                admitted.update((index, (gated[index][0].desired, None)) for index in indexes)
                continue
            claims = [
                quota.Claim(
                    deployment_id=intent.snapshot.deployment.id
                    if intent.snapshot.deployment
                    else None,
                    request=intent.desired.request,
                    wanted=wanted,
                )
                for intent, wanted in (gated[index] for index in indexes)
            ]
            for index, gate in zip(indexes, quota.admit(namespace, claims), strict=True):
                if gate is not None:
                    intent, wanted = gated[index]
                    admitted[index] = _capped(intent.desired, gate, wanted=wanted)
        return admitted

    def _intend(
        self, request: Request, snapshot: Snapshot, known: tuple[KnownRevision, ...]
    ) -> _Intent:
        """What the planner aims at: the restart backoff, the canary verdict, the spec."""
        ref, spec, live_status = request.ref, request.spec, request.live_status
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
        return _Intent(
            request=request,
            snapshot=snapshot,
            known=known,
            restart=restart,
            verdict=verdict,
            desired=desired,
        )

    @staticmethod
    def _conclude(intent: _Intent, plan: planner.Plan, held_by: str | None) -> _Decision:
        """The status, events, revision rows and writes that follow from the plan."""
        ref, spec, live_status = intent.request.ref, intent.request.spec, intent.request.live_status
        snapshot, desired, verdict = intent.snapshot, intent.desired, intent.verdict
        previous = list(live_status.get("conditions") or [])
        now = snapshot.now
        stored = snapshot.deployment
        new_ids = [uuid.uuid4() for _ in plan.create]
        after = planner.outcome(
            replicas=snapshot.replicas,
            plan=plan,
            revision=desired.revision,
            new_ids=new_ids,
            first_seq=stored.next_ordinal if stored else 0,
        )
        status = compute_status(
            generation=ref.generation,
            desired_replicas=spec.replicas,
            revision=spec.revision,
            replicas=after,
            unplaced=plan.unplaced,
            shortfall=plan.shortfall,
            previous_conditions=previous,
            stalled_reason=_stalled(intent.restart.stalled_reason, after, spec),
            stage=verdict,
            now=now,
            quota=held_by,
            readiness=spec.desired.readiness,
            rollout=spec.desired.rollout,
            previous_status=live_status,
        )
        reason = next(c.reason for c in status.conditions if c.status)
        revisions = plan_revisions(
            known=intent.known,
            revision=spec.revision,
            live={replica.revision for replica in after if replica.is_active},
            limit=spec.desired.revision_history_limit,
            rolled_out=status.rolled_out,
        )
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
        restart = intent.restart
        hold = restart.hold_until if restart.holds(now) else None
        # Nothing is written when a replica crosses minReadySeconds: wake up for it then.
        ready = spec.desired.readiness.next_crossing(after, now=now)
        # Nor when the progress deadline passes: the Progressing condition must turn then.
        due = status.progress_due
        wake = min((moment for moment in (hold, ready, due) if moment is not None), default=None)
        return _Decision(
            intent=intent,
            write=Write(
                snapshot=snapshot,
                namespace=ref.namespace,
                desired=DesiredRecord(
                    spec=spec.desired, k8s_uid=ref.uid, generation=ref.generation
                ),
                planned=desired,
                plan=plan,
                new_ids=new_ids,
                status=status.deployment_status,
                reason=reason,
            ),
            revisions=revisions,
            outcome=Outcome(
                status=body,
                events=events,
                requeue_after=(wake - now).total_seconds() if wake else None,
                unplaced=plan.unplaced,
                reason=reason,
                settled=plan.is_empty
                and wake is None
                and held_by is None
                and status.rolled_out
                and status.ready_replicas == spec.replicas,
            ),
        )

    @staticmethod
    async def _write(tx: Transaction, decisions: Sequence[_Decision]) -> None:
        """Write the decisions: rows, plans and statuses, revision rows, canary stamps.

        A promotion or an abort (model/canary.py) is stored on the revision row, not kept in
        memory: an abort must outlive the operator, and the next reconcile of a promoted
        revision must not put its canaries back to waiting. Rare, so one statement each.
        """
        if not decisions:
            return
        ids = await tx.apply_many([d.write for d in decisions], actor=actors.OPERATOR)
        await tx.record_revisions(
            [
                Record(
                    deployment_id=deployment_id,
                    plan=decision.revisions,
                    revision=decision.intent.request.spec.revision,
                    template=decision.intent.request.spec.desired.template.as_spec(),
                    actor=decision.intent.request.ref.manager,
                )
                for deployment_id, decision in zip(ids, decisions, strict=True)
                if decision.revisions.changes_rows
            ]
        )
        for deployment_id, decision in zip(ids, decisions, strict=True):
            verdict = decision.intent.verdict
            if verdict.promote or verdict.abort is not None:
                await tx.stamp_revision(
                    deployment_id=deployment_id,
                    revision=decision.intent.request.spec.revision,
                    promoted_by=canary.OPERATOR if verdict.promote else None,
                    abort_reason=verdict.abort,
                )


def _capped(
    desired: planner.DesiredState, gate: quota.QuotaGate, *, wanted: int
) -> tuple[planner.DesiredState, str | None]:
    """The desired state placing no more than the quota admits, and what held the rest.

    `wanted` is how many replicas the deployment would place, quota aside; the message is
    None when the quota admits them all.
    """
    allowed = quota.allowance(gate=gate, request=desired.request)
    message = allowed.message(gate=gate, request=desired.request, wanted=wanted)
    return replace(desired, quota_room=allowed.replicas), message


def _candidates(unplaced: int) -> int:
    """How many candidate nodes to read for `unplaced` replicas (CANDIDATES_PER_REPLICA)."""
    return max(MIN_CANDIDATES, CANDIDATES_PER_REPLICA * unplaced)


def _smallest(requests: Iterable[Resources]) -> Resources:
    """The least of each dimension: a node read with room for it has room for any of them."""
    amounts = [request.as_tuple() for request in requests]
    return Resources(*(min(dimension) for dimension in zip(*amounts, strict=True)))
