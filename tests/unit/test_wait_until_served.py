"""The operator's start waits until the API server serves our kinds, before kopf looks once.

A fake client answers discovery: not listed, then an error, then listed. Nothing waits for
real time (the poll period is patched to zero).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import cast

import pytest

from controller.kube.client import KubeApiError, KubeClient
from controller.operator import handlers


class Discovery:
    """Answers `served` from a script: False, an error, True."""

    def __init__(self, answers: list[bool | KubeApiError]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, ...]] = []

    async def served(self, plurals: Collection[str]) -> bool:
        self.asked.append(tuple(plurals))
        answer = self.answers.pop(0)
        if isinstance(answer, KubeApiError):
            raise answer
        return answer


async def test_the_start_waits_for_both_kinds_through_errors_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handlers, "SERVED_POLL_SECONDS", 0.0)
    discovery = Discovery(
        [False, KubeApiError("reading the API server's discovery: refused"), True]
    )
    with caplog.at_level(logging.INFO, logger=handlers.__name__):
        await handlers.wait_until_served(cast(KubeClient, discovery))
    assert discovery.answers == []  # asked until served, not beyond
    assert discovery.asked[0] == ("fogdeployments", "fogquotas")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "waiting for the API server to serve fogdeployments/fogquotas: not listed by its"
        " discovery (CRDs not installed, or not loaded yet)"
    ]
    assert "the API server serves fogdeployments/fogquotas now" in caplog.messages


async def test_a_served_start_neither_waits_nor_logs(caplog: pytest.LogCaptureFixture) -> None:
    discovery = Discovery([True])
    with caplog.at_level(logging.INFO, logger=handlers.__name__):
        await handlers.wait_until_served(cast(KubeClient, discovery))
    assert discovery.asked == [("fogdeployments", "fogquotas")]
    assert caplog.messages == []
