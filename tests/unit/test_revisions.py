"""Revision numbering, reuse and pruning (model/revisions.py), and the undo's merge patch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_builders import replica, status_of

from controller.model.replicas import ReplicaState
from controller.model.revisions import (
    KnownRevision,
    UndoError,
    changes,
    merge_patch,
    plan_revisions,
    undo_target,
)
from controller.model.states import ReplicaStatus
from controller.model.status import status_body


def rows(*hashes: str, completed: tuple[str, ...] = ()) -> tuple[KnownRevision, ...]:
    """Rows numbered 1, 2, ... in the order given."""
    return tuple(
        KnownRevision(number, name, name in completed) for number, name in enumerate(hashes, 1)
    )


def test_the_first_template_is_revision_1_and_current_once_rolled_out() -> None:
    plan = plan_revisions(known=(), revision="a", live=set(), limit=10, rolled_out=False)
    assert (plan.number, plan.create, plan.renumber_from, plan.current) == (1, True, None, None)
    done = plan_revisions(known=rows("a"), revision="a", live={"a"}, limit=10, rolled_out=True)
    assert (done.number, done.create, done.complete, done.current) == (1, False, True, 1)
    again = plan_revisions(
        known=rows("a", completed=("a",)), revision="a", live={"a"}, limit=10, rolled_out=True
    )
    assert not again.changes_rows  # completed once is enough: nothing to write
    assert again.current == 1


def test_a_new_template_takes_the_next_number_and_the_old_stays_current_until_done() -> None:
    plan = plan_revisions(
        known=rows("a", completed=("a",)), revision="b", live={"a"}, limit=10, rolled_out=False
    )
    assert (plan.number, plan.create, plan.current) == (2, True, 1)


def test_a_returning_template_is_renumbered_as_the_newest_and_not_yet_completed() -> None:
    known = rows("a", "b", completed=("a", "b"))
    plan = plan_revisions(known=known, revision="a", live={"b"}, limit=10, rolled_out=False)
    assert (plan.number, plan.create, plan.renumber_from) == (3, False, 1)
    # Its earlier completion says nothing of this rollout: b stays the current revision.
    assert (plan.complete, plan.current) == (False, 2)


def test_pruning_deletes_the_oldest_beyond_the_limit_but_never_a_running_one() -> None:
    known = rows("a", "b", "c", "d", "e")
    plan = plan_revisions(known=known, revision="e", live={"a", "e"}, limit=2, rolled_out=False)
    # Three old revisions without replicas, two allowed besides a (it runs): the oldest goes.
    assert plan.prune == (2,)
    mid_rollout = plan_revisions(
        known=known, revision="e", live={"c", "d", "e"}, limit=2, rolled_out=False
    )
    assert mid_rollout.prune == ()  # a and b are the two the limit keeps, c and d run
    none_kept = plan_revisions(known=known, revision="e", live={"e"}, limit=0, rolled_out=False)
    assert none_kept.prune == (1, 2, 3, 4)


@given(
    count=st.integers(min_value=0, max_value=12),
    spec=st.integers(min_value=0, max_value=13),
    live=st.sets(st.integers(min_value=0, max_value=12)),
    limit=st.integers(min_value=0, max_value=12),
)
def test_what_pruning_keeps(count: int, spec: int, live: set[int], limit: int) -> None:
    """The spec's revision and every running one are kept, and besides them as many old ones
    as the limit allows; the numbers given out stay unique."""
    known = rows(*(f"h{i}" for i in range(count)))
    revision = f"h{spec}"
    running = {f"h{i}" for i in live}
    plan = plan_revisions(
        known=known, revision=revision, live=running, limit=limit, rolled_out=False
    )
    pruned = {row.hash for row in known if row.number in plan.prune}
    assert revision not in pruned
    assert not pruned & running
    cleanable = [row for row in known if row.hash != revision and row.hash not in running]
    assert len(cleanable) - len(pruned) == min(limit, len(cleanable))
    if plan.create or plan.renumber_from is not None:  # a number given out is free
        others = {row.number for row in known if row.number != plan.renumber_from}
        assert plan.number not in others
    assert plan.number == max([0, *(row.number for row in known)]) + (
        0 if known and known[-1].hash == revision else 1
    )


def test_changes_name_what_differs_one_level_deep() -> None:
    old = {"image": "app:1", "resources": {"cpuCores": 1, "memoryMB": 512}, "env": [1]}
    new = {"image": "app:2", "resources": {"cpuCores": 1, "memoryMB": 1024}}
    assert changes(old, new) == ["env", "image", "resources.memoryMB"]
    assert changes(None, new) == []
    assert changes(new, new) == []


def test_the_merge_patch_turns_the_spec_into_the_template() -> None:
    current = {
        "image": "app:2",
        "resources": {"cpuCores": 2, "memoryMB": 512},
        "nodeSelector": {"zone": "a", "disk": "ssd"},
        "env": [{"name": "A", "value": "1"}],
    }
    target = {
        "image": "app:1",
        "resources": {"cpuCores": 1.0, "memoryMB": 512},
        "nodeSelector": {"zone": "a"},
    }
    # A selector key the template lacks is nulled (a merge patch merges maps), the list goes.
    assert merge_patch(current, target) == {
        "image": "app:1",
        "resources": {"cpuCores": 1.0},
        "nodeSelector": {"disk": None},
        "env": None,
    }
    # 1 and 1.0 are the same number: no patch for it.
    assert merge_patch({"resources": {"cpuCores": 1}}, {"resources": {"cpuCores": 1.0}}) == {}


def test_undo_goes_to_the_previous_revision_or_the_one_asked_for() -> None:
    known = rows("a", "b", "c")
    assert undo_target(known, current="c", to_revision=None, what="web") == 2
    assert undo_target(known, current="c", to_revision=1, what="web") == 1
    # A spec not reconciled yet (or edited by hand to a new template): the newest row is the
    # previous one.
    assert undo_target(known, current="d", to_revision=None, what="web") == 3


@pytest.mark.parametrize(
    ("known", "to_revision", "message"),
    [
        (rows("a", "b"), 5, "web has no revision 5 (revisions: 1, 2)"),
        (rows("a", "b"), 2, "web is already at revision 2"),
        (rows("b"), None, "web has no previous revision to go back to"),
        ((), 1, "web has no revision 1 (revisions: none)"),
    ],
)
def test_undo_refuses_in_one_line(
    known: tuple[KnownRevision, ...], to_revision: int | None, message: str
) -> None:
    with pytest.raises(UndoError) as raised:
        undo_target(known, current="b", to_revision=to_revision, what="web")
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("desired", "replicas", "rolled_out"),
    [
        (2, [replica(1), replica(2)], True),
        # An old replica still active, a new one not running yet, or nothing desired: not yet.
        (2, [replica(1), replica(2), replica(0, revision="r0")], False),
        (2, [replica(1), replica(2, ReplicaStatus.STARTING)], False),
        (0, [], False),
    ],
)
def test_a_rollout_completes_when_every_desired_replica_runs_the_revision(
    desired: int, replicas: list[ReplicaState], rolled_out: bool
) -> None:
    status = status_of(replicas, want=desired, now=datetime(2026, 11, 27, tzinfo=UTC))
    assert status.rolled_out is rolled_out
    plan = plan_revisions(
        known=rows("r0", "r1", completed=("r0",)),
        revision="r1",
        live={r.revision for r in replicas},
        limit=10,
        rolled_out=status.rolled_out,
    )
    body = status_body(status, name="web", revisions=plan)
    assert (body["updateRevision"], body["currentRevision"]) == (2, 2 if rolled_out else 1)
    assert body["availableReplicas"] == body["readyReplicas"]
