"""What the operator tells kopf about watching: how it first sees the objects, and timeouts.

kopf's first view is a streaming list where the API server serves one: a one-response listing,
read and decoded whole, set a restart's peak RSS. It is never a listing in pages: one slower
than the API server keeps a continue token ended in a 410 that kopf does not retry, and the
operator stopped (a 50,000-object fill; docs/design/performance.md). Whether the API server
streams lists is asked of a real one in tests/kube/test_listing.py and the fault suite.
"""

from __future__ import annotations

import logging

import kopf
import pytest

from controller.kube.client import KubeApiError
from controller.operator.handlers import (
    apply_settings,
    choose_first_view,
    streaming_lists_withdrawn,
)


def test_kopf_never_lists_in_pages() -> None:
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = 500  # as this operator once set it

    apply_settings(settings, verbose=False)

    assert settings.watching.chunk_size is None


class Answers:
    """The API server's answer to the streaming-list question, as our client gives it."""

    def __init__(self, answer: bool | KubeApiError) -> None:
        self.answer = answer
        self.asked: list[str | None] = []

    async def serves_streaming_lists(self, namespace: str | None) -> bool:
        self.asked.append(namespace)
        if isinstance(self.answer, KubeApiError):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "streams", "warning"),
    [
        (True, True, None),
        (False, False, "does not serve streaming lists"),
        (KubeApiError("asking: 503 Service Unavailable"), False, "could not ask"),
    ],
)
async def test_kopf_streams_its_first_view_only_where_the_api_server_says_it_can(
    answer: bool | KubeApiError,
    streams: bool,
    warning: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = kopf.OperatorSettings()
    kube = Answers(answer)

    with caplog.at_level(logging.WARNING):
        await choose_first_view(settings, kube, ["team-a", "team-b"])  # type: ignore[arg-type]

    assert settings.watching.initial_streaming is streams
    assert kube.asked == ["team-a"]  # where kopf watches (and RBAC lets us), not cluster-wide
    warnings = [record.getMessage() for record in caplog.records]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warning in warnings[0]
        assert "kopf lists FogDeployments in one response" in warnings[0]


async def test_an_operator_of_every_namespace_asks_cluster_wide() -> None:
    kube = Answers(True)
    await choose_first_view(kopf.OperatorSettings(), kube, [])  # type: ignore[arg-type]
    assert kube.asked == [None]


def test_the_client_waits_longer_than_the_server_keeps_a_watch_open() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings, verbose=False)

    server, client = settings.watching.server_timeout, settings.watching.client_timeout
    assert server is not None
    assert client is not None
    assert client > server


class RefusedError(Exception):
    """Like kopf's (private) API errors: the message, and the HTTP status as `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@pytest.mark.parametrize(
    ("error", "withdrawn"),
    [
        (
            RefusedError(
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless"
                " the WatchList feature gate is enabled",
                422,
            ),
            True,
        ),
        (RefusedError("spec.replicas: Invalid value", 422), False),
        (RefusedError("sendInitialEvents is forbidden", 403), False),
        (RuntimeError("sendInitialEvents"), False),
    ],
)
def test_only_a_refused_streaming_list_reads_as_streaming_lists_withdrawn(
    error: Exception, withdrawn: bool
) -> None:
    assert streaming_lists_withdrawn(error) is withdrawn
