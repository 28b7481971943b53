"""Which watch events cost a reconcile: new objects and spec changes, not our own patches."""

from __future__ import annotations

from typing import Any

from controller.operator.objects import ObservedObjects


def body(
    name: str = "web", *, generation: int = 1, uid: str = "u1", **extra: Any
) -> dict[str, Any]:
    metadata = {"namespace": "ns", "name": name, "uid": uid, "generation": generation}
    metadata.update(extra.pop("metadata", {}))
    return {"metadata": metadata, "spec": {"image": "app:1", "replicas": 2}, **extra}


def test_a_new_object_is_reconciled_and_remembered() -> None:
    objects = ObservedObjects()
    assert objects.observe(body(), deleted=False) is True
    seen = objects.get(("ns", "web"))
    assert seen is not None
    assert seen.key == ("ns", "web")
    assert seen.spec == {"image": "app:1", "replicas": 2}
    assert seen.ref.generation == 1


def test_status_and_finalizer_patches_cost_no_reconcile_but_update_the_status() -> None:
    objects = ObservedObjects()
    objects.observe(body(), deleted=False)
    patched = body(status={"readyReplicas": 2}, metadata={"finalizers": ["fogcompute.io/x"]})
    assert objects.observe(patched, deleted=False) is False
    seen = objects.get(("ns", "web"))
    assert seen is not None
    assert seen.status == {"readyReplicas": 2}


def test_a_spec_change_bumps_the_generation_and_is_reconciled() -> None:
    objects = ObservedObjects()
    objects.observe(body(), deleted=False)
    assert objects.observe(body(generation=2), deleted=False) is True


def test_a_recreated_object_with_the_same_name_is_reconciled() -> None:
    objects = ObservedObjects()
    objects.observe(body(), deleted=False)
    assert objects.observe(body(uid="u2"), deleted=False) is True


def test_deleting_or_deleted_objects_are_dropped_and_not_reconciled() -> None:
    objects = ObservedObjects()
    objects.observe(body("a"), deleted=False)
    objects.observe(body("b"), deleted=False)
    going = body("a", metadata={"deletionTimestamp": "2026-11-25T00:00:00Z"})
    assert objects.observe(going, deleted=False) is False
    assert objects.observe(body("b"), deleted=True) is False
    assert objects.get(("ns", "a")) is None
    assert len(objects) == 0
    assert objects.keys() == []


def test_the_record_is_a_copy_not_a_view_of_the_event() -> None:
    objects = ObservedObjects()
    raw = body()
    objects.observe(raw, deleted=False)
    raw["spec"]["replicas"] = 9
    seen = objects.get(("ns", "web"))
    assert seen is not None
    assert seen.spec["replicas"] == 2
