"""What the operator tells kopf about watching: how it first sees the objects, and timeouts.

kopf's first view is a streaming list (a watch that begins with every object): a one-response
listing, read and decoded whole, set a restart's peak RSS, and in pages a listing slower than
the API server keeps a continue token ended in a 410 that kopf does not retry, and the operator
stopped (a 50,000-object fill; docs/design/performance.md).
"""

from __future__ import annotations

import kopf

from controller.operator.handlers import apply_settings


def test_kopf_streams_its_first_view_and_never_lists_in_pages() -> None:
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = 500  # as this operator once set it
    assert settings.watching.initial_streaming is False  # kopf's default: a list

    apply_settings(settings, verbose=False)

    assert settings.watching.initial_streaming is True
    assert settings.watching.chunk_size is None


def test_the_client_waits_longer_than_the_server_keeps_a_watch_open() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings, verbose=False)

    server, client = settings.watching.server_timeout, settings.watching.client_timeout
    assert server is not None
    assert client is not None
    assert client > server
