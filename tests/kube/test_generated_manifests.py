"""Generated manifests against the real API server and a running operator (#11, bad input).

Every manifest hypothesis makes (tests/kube/manifests.py) is created through the API, as a
client does: either the API server refuses it naming the field that is wrong, or it is stored,
and then the operator must reconcile it (its status describes its generation) and delete it
when asked, with no traceback in its log and no broken invariant in the record.

Examples: an eighth of the hypothesis profile's count (25 under "default", 125 under "ci"),
or FOG_MANIFEST_EXAMPLES when set (`make reliability` sets it higher).
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from typing import Any

from conftest import Kubectl, Stack, wait_for
from hypothesis import HealthCheck, event, given, settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from manifests import Case, case

from controller.sandbox import controlplane

EXAMPLES_ENV = "FOG_MANIFEST_EXAMPLES"
# Each example is a create against the API server plus, if stored, a reconcile and a delete:
# an eighth of the profile keeps `make test` to seconds here.
EXAMPLES = int(os.environ.get(EXAMPLES_ENV) or max(1, settings().max_examples // 8))
GROUP, VERSION, PLURAL = "fogcompute.io", "v1alpha1", "fogdeployments"
# Reconciling every stored example, huge ones included, takes a few seconds here; the
# operator queues them all at once behind one another.
SETTLE_SECONDS = 180.0
PHASES = {"Pending", "Scheduled", "Running", "Stopped", "Failed"}
CONDITIONS = {"Ready", "Reconciling", "Stalled"}


def _refusal(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except ValueError:
        return str(exc.body)


def _describes_its_generation(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    generation = obj["metadata"]["generation"]
    return (
        status.get("observedGeneration") == generation
        and status.get("phase") in PHASES
        and set(conditions) >= CONDITIONS
        and all(c.get("observedGeneration") == generation for c in conditions.values())
    )


def test_generated_manifests_are_refused_by_name_or_reconciled(
    stack: Stack, control_plane: controlplane.ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    for index in range(3):
        stack.register_node(f"edge-{index + 1}")
    stack.operator.start()
    stack.agent.start()
    api = client.CustomObjectsApi(config.new_client_from_config(control_plane.kubeconfig))
    stored: dict[str, Case] = {}
    tried: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(attempt=case())
    def create(attempt: Case) -> None:
        event(attempt.what)
        tried[attempt.kind] += 1
        try:
            created = api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                copy.deepcopy(attempt.manifest),
                field_validation=attempt.validation,
            )
        except ApiException as exc:
            refused = exc
        else:
            assert not attempt.must_reject, f"{attempt.what}: stored, but {attempt.field} is wrong"
            stored[created["metadata"]["name"]] = attempt
            return
        refusal = _refusal(refused)
        assert refused.status in (400, 422), f"{attempt.what}: HTTP {refused.status}: {refusal}"
        assert attempt.field, f"a valid manifest was refused: {refusal}"
        named = any(field in refusal for field in attempt.field.split("|"))
        assert named, f"{attempt.what}: the refusal does not name {attempt.field}: {refusal}"
        tried["refused"] += 1

    create()
    # The figures RELIABILITY.md quotes (pytest -s shows them).
    print(f"manifests: {sum(tried.values()) - tried['refused']} tried, {tried['refused']} refused")
    print(f"manifests: {len(stored)} stored, by break: {dict(sorted(tried.items()))}")
    assert stored, "no example was stored: the generator makes no valid manifests"

    def settle(what: str) -> None:
        """Wait until every stored example's status describes its generation."""
        left: list[str] = []

        def settled() -> bool:
            listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            done = {obj["metadata"]["name"] for obj in listed if _describes_its_generation(obj)}
            left[:] = sorted(set(stored) - done)
            return not left

        try:
            wait_for(what, settled, timeout=SETTLE_SECONDS)
        except AssertionError:
            details = [f"{name} ({stored[name].what})" for name in left[:10]]
            raise AssertionError(f"{what}: not reconciled: {', '.join(details)}") from None

    settle("every stored example reconciled")
    _assert_no_traceback(stack)
    # The CRD and the seed's limits agree: nothing the API server stores is an invalid spec to
    # the operator (a stored object it cannot read would wait for an edit, Stalled).
    listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    unreadable = {
        obj["metadata"]["name"]: condition["message"]
        for obj in listed
        for condition in obj["status"]["conditions"]
        if condition["reason"] == "InvalidSpec"
    }
    assert not unreadable, unreadable
    checked = stack.fogctl("check", "-o", "json")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Each can be scaled as a person does: kubectl parses status.selector (whatever the name's
    # length), and the operator reconciles the new generation.
    kubectl("scale", "-n", namespace, "fogdeployments", "--all", "--replicas=0")
    settle("every stored example reconciled after kubectl scale")
    _assert_no_traceback(stack)

    # Deleting goes through the operator's finalizer: it must let every example go.
    kubectl("delete", "-n", namespace, "fogdeployments", "--all", "--wait=false")
    wait_for(
        "every example deleted",
        lambda: not api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
        timeout=SETTLE_SECONDS,
    )
    _assert_no_traceback(stack)


def _assert_no_traceback(stack: Stack) -> None:
    log = stack.operator.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
