"""The agent API's per-node budgets: an op naming many nodes is allowed or refused whole."""

from __future__ import annotations

import pytest

from controller.agentapi.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_op_over_one_nodes_budget_takes_nothing_from_the_others() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=2.0, clock=clock)
    assert limiter.allow(b"busy", cost=2.0) == 0  # its burst spent
    wait = limiter.allow_all([b"idle", b"busy"])
    assert wait == pytest.approx(0.1)  # one op's worth at 10 a second
    # The refused op took nothing from `idle`: its whole burst is left, and no more.
    assert limiter.allow_all([b"idle"]) == 0
    assert limiter.allow_all([b"idle"]) == 0
    assert limiter.allow_all([b"idle"]) > 0
    clock.now += wait
    assert limiter.allow_all([b"busy"]) == 0  # allowed once the named wait has passed


def test_an_allowed_op_costs_each_node_it_names_one() -> None:
    limiter = RateLimiter(rate=10.0, burst=3.0, clock=Clock())
    for _ in range(3):
        assert limiter.allow_all([b"a", b"b"]) == 0
    assert limiter.allow_all([b"a"]) > 0
    assert limiter.allow_all([b"b"]) > 0
