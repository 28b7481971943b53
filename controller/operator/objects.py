"""The FogDeployments the watch has shown us: what each wants, and whether that changed.

kopf's watch hands every event of every object to one spy handler, which records the object
here. Workers reconcile from this record instead of reading the object back from the API
server, so a reconcile caused by an agent's report or by the resync costs no API read.

Only what a reconcile needs is kept (identity, spec, the status the server last showed), not
the whole body: managedFields alone are larger than all of it, and an operator holds one entry
per object.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.kube.resource import ObjectRef, object_ref

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Observed:
    """One object as last seen: its identity, spec, and the status on the server."""

    ref: ObjectRef
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def key(self) -> Key:
        """(namespace, name): what the work queue and the database know it by."""
        return (self.ref.namespace, self.ref.name)


class ObservedObjects:
    """The live objects of the watch, by key."""

    def __init__(self) -> None:
        self._objects: dict[Key, Observed] = {}
        # Objects whose last reconcile found nothing to do and nothing to wait for, with no
        # news of them since (`settle`): the resync passes them by on most rounds.
        self._settled: set[Key] = set()

    def observe(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Record one watch event; True if the object needs a reconcile because of it.

        A reconcile is due when the object is new to us (created, or listed when the operator
        starts) or its generation moved (the API server bumps it on spec changes only). Our
        own status patches and kopf's finalizer patch come back as events too; they change
        nothing the reconcile reads, so they cost no reconcile. An object being deleted is
        dropped: from then on the finalizer owns it.
        """
        meta = body["metadata"]
        ref = object_ref(meta)
        key = (ref.namespace, ref.name)
        if deleted or meta.get("deletionTimestamp"):
            self._objects.pop(key, None)
            self._settled.discard(key)
            return False
        prior = self._objects.get(key)
        self._objects[key] = Observed(
            ref=ref,
            spec=copy.deepcopy(dict(body.get("spec") or {})),
            status=copy.deepcopy(dict(body.get("status") or {})),
        )
        due = prior is None or prior.ref.uid != ref.uid or prior.ref.generation != ref.generation
        if due:
            self._settled.discard(key)
        return due

    def get(self, key: Key) -> Observed | None:
        """The object as last seen, or None if it is gone or being deleted."""
        return self._objects.get(key)

    def forget(self, key: Key) -> None:
        """Drop `key` (its deletion is being finalized)."""
        self._objects.pop(key, None)
        self._settled.discard(key)

    def settle(self, key: Key, *, settled: bool) -> None:
        """Record whether the last reconcile of `key` left it settled (Outcome.settled)."""
        if settled and key in self._objects:
            self._settled.add(key)
        else:
            self._settled.discard(key)

    def is_settled(self, key: Key) -> bool:
        """Whether the last reconcile of `key` left it settled, with no news of it since."""
        return key in self._settled

    def unsettle_all(self) -> None:
        """Every object is due at the next resync (news may have been missed)."""
        self._settled.clear()

    def unsettled_keys(self) -> list[Key]:
        """The live objects not known to be settled, in no particular order."""
        return [key for key in self._objects if key not in self._settled]

    def keys(self) -> list[Key]:
        """Every live object's key, in no particular order."""
        return list(self._objects)

    def __len__(self) -> int:
        return len(self._objects)
