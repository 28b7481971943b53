"""Revision history: which numbered revision a spec is, which rows to keep, what changed.

Each distinct template a deployment runs is a numbered row (migration 0011), as Kubernetes
numbers a Deployment's ReplicaSets. The decisions about those rows are pure and live here; the
reconcile applies them in its own transaction (db/revisions.py):

* A new template gets the next number (the highest so far plus one; the first is 1).
* A template that returns (an undo, or a spec edited back) reuses its row, renumbered to the
  next number, as Kubernetes renumbers a reused ReplicaSet: the history then reads in the
  order the templates were last rolled out, and the newest number is always the spec's. Its
  `completed_at` is cleared (this rollout of it has not completed yet), and its created and
  created-by become this return's.
* Kept: the spec's revision, every revision that still has live replicas, and the newest
  `spec.revisionHistoryLimit` of the others. Kubernetes' rule (deployment/sync.go
  cleanupDeployment): the excess over the limit is deleted oldest first, but never a
  revision that still has replicas.
* A revision is completed when every desired replica runs it and is available, and nothing
  else is active: `status.currentRevision` is the newest completed one ("the last fully
  healthy revision" an automatic revert goes back to, issue 16 item 5).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.errors import TerminalError

# Kubernetes' default for a Deployment's revisionHistoryLimit, and the CRD's documented value
# for an absent spec.revisionHistoryLimit.
DEFAULT_HISTORY_LIMIT = 10


@dataclass(frozen=True, slots=True)
class KnownRevision:
    """A revision row as the reconcile reads it."""

    number: int
    hash: str
    completed: bool
    # Issue 16 item 5 (migration 0015): promoted past its canaries, aborted (with the reason)
    # by an automatic revert, and the template in the spec's words (None: never stored).
    promoted: bool = False
    aborted: str | None = None
    template: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RevisionPlan:
    """What a reconcile does to the revision rows, and the numbers the status shows."""

    number: int  # the spec's revision number after this reconcile (status.updateRevision)
    create: bool  # insert the spec's revision as a new row numbered `number`
    renumber_from: int | None  # or move the existing row from this number to `number`
    prune: tuple[int, ...]  # delete these (numbers as read; never the spec's own)
    complete: bool  # stamp the spec's revision completed now
    current: int | None  # the newest completed revision after this (status.currentRevision)

    @property
    def changes_rows(self) -> bool:
        """Whether anything must be written."""
        return self.create or self.renumber_from is not None or bool(self.prune) or self.complete


def plan_revisions(
    *,
    known: Sequence[KnownRevision],
    revision: str,
    live: Collection[str],
    limit: int,
    rolled_out: bool,
) -> RevisionPlan:
    """Decide the rows for the spec's `revision`, given the rows and the live replicas' hashes.

    `rolled_out`: every desired replica runs `revision` and is available, nothing else active.
    """
    newest = max((row.number for row in known), default=0)
    own = next((row for row in known if row.hash == revision), None)
    if own is not None and own.number == newest:
        number, create, renumber_from, completed = newest, False, None, own.completed
    elif own is not None:
        number, create, renumber_from, completed = newest + 1, False, own.number, False
    else:
        number, create, renumber_from, completed = newest + 1, True, None, False
    others = sorted((row for row in known if row.hash != revision), key=lambda row: row.number)
    # The limit counts the revisions that could go (no replicas), as Kubernetes counts a
    # Deployment's empty ReplicaSets: those with replicas are kept besides it.
    cleanable = tuple(row.number for row in others if row.hash not in live)
    prune = cleanable[: max(0, len(cleanable) - limit)]
    complete = rolled_out and not completed
    finished = [row.number for row in others if row.completed and row.number not in prune]
    if completed or complete:
        finished.append(number)
    return RevisionPlan(
        number=number,
        create=create,
        renumber_from=renumber_from,
        prune=prune,
        complete=complete,
        current=max(finished, default=None),
    )


def changes(previous: Mapping[str, Any] | None, template: Mapping[str, Any]) -> list[str]:
    """The spec paths where `template` differs from `previous` (dotted, one level deep).

    e.g. ["image", "resources.memoryMB", "env"]: what `fogctl rollout history` shows beside
    each revision, for people reading why it exists.
    """
    if previous is None:
        return []
    changed = []
    for key in sorted(set(previous) | set(template)):
        old, new = previous.get(key), template.get(key)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changed += [
                f"{key}.{inner}"
                for inner in sorted(set(old) | set(new))
                if old.get(inner) != new.get(inner)
            ]
        else:
            changed.append(key)
    return changed


def merge_patch(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `current` into `target`.

    Keys only in `current` become null (removed); maps are patched key by key (a merge patch
    merges maps, so a selector key the target lacks must be nulled, not just left out); any
    other changed value, lists included, is replaced whole. Empty when they are equal.
    """
    patch: dict[str, Any] = {}
    for key in set(current) | set(target):
        if key not in target:
            patch[key] = None
            continue
        old, new = current.get(key), target[key]
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            inner = merge_patch(old, new)
            if inner:
                patch[key] = inner
        elif key not in current or old != new:
            patch[key] = new
    return patch


class UndoError(TerminalError):
    """`fogctl rollout undo` cannot go where it was asked: the message says why, in one line."""


def undo_target(
    known: Sequence[KnownRevision], *, current: str, to_revision: int | None, what: str
) -> int:
    """The number `fogctl rollout undo` goes back to; UndoError if it cannot.

    `current` is the hash of the spec as it is now; without `to_revision`, the target is the
    previous revision: the highest-numbered one that is not the spec's (kubectl's default).
    `what` names the object in the messages.
    """
    others = [row.number for row in known if row.hash != current]
    if to_revision is None:
        if not others:
            raise UndoError(f"{what} has no previous revision to go back to")
        return max(others)
    chosen = next((row for row in known if row.number == to_revision), None)
    if chosen is None:
        listed = ", ".join(str(row.number) for row in known) or "none"
        raise UndoError(f"{what} has no revision {to_revision} (revisions: {listed})")
    if chosen.hash == current:
        raise UndoError(f"{what} is already at revision {to_revision}")
    return to_revision
