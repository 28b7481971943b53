"""The health loop's verdicts: ready only while the database and the API server answer."""

from __future__ import annotations

from controller.db.errors import DatabaseUnavailableError
from controller.db.inventory import Counts
from controller.kube.client import KubeApiError
from controller.operator.health import STALE_INTERVALS, Health
from controller.operator.metrics import Metrics


class World:
    """What the checks find: set `database` or `api` to an error to break them."""

    def __init__(self) -> None:
        self.database: Exception | None = None
        self.api: Exception | None = None
        self.now = 0.0
        self.loops: list[str] = []

    async def ping(self) -> None:
        if self.database is not None:
            raise self.database

    async def count(self) -> Counts:
        return Counts(replicas={"running": 2}, nodes={"online": 1})

    async def check_api(self) -> None:
        if self.api is not None:
            raise self.api

    def health(self) -> Health:
        return Health(
            ping_database=self.ping,
            count=self.count,
            check_api=self.check_api,
            loop_problems=lambda: self.loops,
            metrics=Metrics(),
            clock=lambda: self.now,
        )


async def test_not_ready_until_checked_then_ready_while_both_answer() -> None:
    world = World()
    health = world.health()
    assert health.not_ready() == ["dependencies not checked yet"]
    await health.check()
    assert health.not_ready() == []


async def test_an_outage_of_either_makes_it_not_ready_and_its_end_ready_again() -> None:
    world = World()
    health = world.health()
    world.database = DatabaseUnavailableError("connection refused")
    world.api = KubeApiError("API server unreachable: ClientConnectorError")
    await health.check()
    assert health.not_ready() == [
        "database: connection refused",
        "API server: API server unreachable: ClientConnectorError",
    ]
    world.database = world.api = None
    await health.check()
    assert health.not_ready() == []


async def test_a_loop_that_stopped_checking_is_not_ready() -> None:
    world = World()
    health = world.health()
    await health.check()
    world.now += STALE_INTERVALS * health.interval + 1
    assert health.not_ready()[0].startswith("health loop last checked")


def test_liveness_is_the_supervisor_verdict() -> None:
    world = World()
    health = world.health()
    assert health.not_live() == []
    world.loops.append("node-lifecycle: failed 5 times in a row")
    assert health.not_live() == ["node-lifecycle: failed 5 times in a row"]
