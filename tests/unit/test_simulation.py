"""The simulated agent's view of a node: pushed lists against its own accepted reports."""

from __future__ import annotations

import uuid

from model_builders import assignment

from controller.agent.simulate import batches
from controller.agent.wire import MAX_REPORTS
from controller.model.protocol import Report
from controller.model.simulation import TRUST_OWN_REPORT_SECONDS, NodeView, Simulator
from controller.model.states import ReplicaStatus

R = ReplicaStatus


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(replica: uuid.UUID, status: ReplicaStatus) -> Report:
    return Report(node="edge-1", replica_id=replica, status=status, reason="test")


def test_a_stale_list_does_not_undo_a_report_just_accepted() -> None:
    clock, replica = Clock(), uuid.uuid4()
    view = NodeView(clock=clock)
    view.receive([assignment(replica, R.PENDING)])
    view.accepted([report(replica, R.STARTING), report(replica, R.RUNNING)])

    clock.now += 0.1
    view.receive([assignment(replica, R.PENDING)])  # read before our reports committed

    assert view.items[replica].status is R.RUNNING
    assert Simulator(start_delay=0).decide(list(view.items.values())) == []


def test_after_a_while_the_servers_list_wins_and_a_lost_report_is_sent_again() -> None:
    clock, replica = Clock(), uuid.uuid4()
    view = NodeView(clock=clock)
    view.receive([assignment(replica, R.PENDING)])
    view.accepted([report(replica, R.STARTING), report(replica, R.RUNNING)])

    clock.now += TRUST_OWN_REPORT_SECONDS + 1
    view.receive([assignment(replica, R.STARTING)])  # the database lost our "running"

    assert view.items[replica].status is R.STARTING
    [[again]] = Simulator(start_delay=0).decide(list(view.items.values()))
    assert (again.replica_id, again.status) == (replica, R.RUNNING)


def test_receiving_says_whether_the_list_changed_what_the_node_runs() -> None:
    clock, replica, other = Clock(), uuid.uuid4(), uuid.uuid4()
    view = NodeView(clock=clock)
    assert view.receive([assignment(replica, R.PENDING)])  # new work
    assert not view.receive([assignment(replica, R.PENDING)])  # the same list again
    view.accepted([report(replica, R.STARTING)])
    clock.now += 0.1
    assert not view.receive([assignment(replica, R.PENDING)])  # behind our own report
    assert view.receive([assignment(replica, R.STARTING), assignment(other, R.PENDING)])
    assert view.receive([assignment(other, R.PENDING)])  # one gone


def test_a_replica_we_stopped_stays_gone_unless_the_server_still_lists_it_later() -> None:
    clock, replica = Clock(), uuid.uuid4()
    view = NodeView(clock=clock)
    view.receive([assignment(replica, R.STOPPING)])
    view.accepted([report(replica, R.STOPPED)])
    assert replica not in view.items

    clock.now += 0.1
    view.receive([assignment(replica, R.STOPPING)])
    assert replica not in view.items

    clock.now += TRUST_OWN_REPORT_SECONDS + 1
    view.receive([assignment(replica, R.STOPPING)])
    assert view.items[replica].status is R.STOPPING


def test_a_list_moves_on_from_what_we_reported_when_the_operator_acts() -> None:
    clock, replica = Clock(), uuid.uuid4()
    view = NodeView(clock=clock)
    view.receive([assignment(replica, R.PENDING)])
    view.accepted([report(replica, R.STARTING), report(replica, R.RUNNING)])

    view.receive([assignment(replica, R.STOPPING)])  # the operator stops it

    assert view.items[replica].status is R.STOPPING


def test_an_agents_reports_go_in_batches_the_server_takes() -> None:
    """A round of 5,000 nodes' reports is split at wire.MAX_REPORTS, nothing lost or reordered."""
    items = list(range(2 * MAX_REPORTS + 1))
    sent = batches(items)
    assert [len(batch) for batch in sent] == [MAX_REPORTS, MAX_REPORTS, 1]
    assert [item for batch in sent for item in batch] == items
    assert batches([]) == []
