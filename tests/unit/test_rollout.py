"""`fogctl rollout status`'s verdict on one object body, in kubectl's words."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.rollout import UNOBSERVED, progress


def body(*, generation: int = 2, desired: int = 4, **status: Any) -> dict[str, Any]:
    ready = status.pop("ready", "True")
    stalled = status.pop("stalled", None)
    progressing = status.pop("progressing", None)
    conditions = [{"type": "Ready", "status": ready, "reason": "x", "message": ""}]
    if stalled:
        conditions.append({"type": "Stalled", "status": "True", "reason": stalled, "message": "m"})
    if progressing:
        conditions.append({"type": "Progressing", "status": "False", "reason": progressing})
    defaults = {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 4, "readyReplicas": 4}
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": desired},
        "status": {**defaults, **status, "conditions": conditions},
    }


WAITING = 'Waiting for fogdeployment "web" rollout to finish: '


@pytest.mark.parametrize(
    ("obj", "done", "failed", "message"),
    [
        (body(), True, False, 'fogdeployment "web" successfully rolled out'),
        (body(observedGeneration=1), False, False, UNOBSERVED),
        ({"metadata": {"name": "web", "generation": 1}, "spec": {}}, False, False, UNOBSERVED),
        (
            body(updatedReplicas=1, ready="False"),
            False,
            False,
            f"{WAITING}1 out of 4 new replicas have been updated...",
        ),
        (
            body(replicas=6),
            False,
            False,
            f"{WAITING}2 old replicas are pending termination...",
        ),
        (
            body(readyReplicas=3, ready="False"),
            False,
            False,
            f"{WAITING}3 of 4 updated replicas are available...",
        ),
        (
            body(stalled="InsufficientCapacity"),
            False,
            True,
            'fogdeployment "web" is stalled: InsufficientCapacity: m',
        ),
        (
            body(stalled="CrashLoopBackOff", progressing="ProgressDeadlineExceeded"),
            False,
            True,
            'fogdeployment "web" exceeded its progress deadline',
        ),
        (
            body(desired=0, replicas=0, updatedReplicas=0, readyReplicas=0),
            True,
            False,
            'fogdeployment "web" successfully rolled out',
        ),
    ],
)
def test_each_state_of_a_rollout(
    obj: dict[str, Any], done: bool, failed: bool, message: str
) -> None:
    state = progress(obj)
    assert (state.done, state.failed, state.message) == (done, failed, message)
