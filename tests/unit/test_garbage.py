"""The operator's collector thresholds: young collections rare, older generations untouched."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from controller.operator import garbage


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    """Give the test process its thresholds back: other tests run in it after this one."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_young_collections_wait_for_more_than_a_batch_keeps_alive() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    garbage.tune_collector()
    assert gc.get_threshold() == (garbage.YOUNG_THRESHOLD, 10, 10)


def test_a_batchs_worth_of_objects_brings_no_collection() -> None:
    garbage.tune_collector()
    gc.collect()  # start from an empty young generation
    runs = sum(stats["collections"] for stats in gc.get_stats())
    # Two thirds of the threshold in containers alive at once, as a batch keeps its rows.
    held = [{"replica": index, "rows": [index]} for index in range(garbage.YOUNG_THRESHOLD // 3)]
    assert sum(stats["collections"] for stats in gc.get_stats()) == runs
    assert len(held) == garbage.YOUNG_THRESHOLD // 3
