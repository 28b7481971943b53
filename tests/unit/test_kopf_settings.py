"""What the operator tells kopf about watching: page size and timeouts.

kopf's defaults list every object in one response; at 20,000 objects that one body, read and
decoded whole, doubled the operator's peak RSS at a restart (docs/design/performance.md).
"""

from __future__ import annotations

import kopf

from controller.kube.client import LIST_PAGE
from controller.operator.handlers import apply_settings


def test_kopf_lists_in_pages_of_the_startup_listing() -> None:
    settings = kopf.OperatorSettings()
    assert settings.watching.chunk_size is None  # kopf's default: one response

    apply_settings(settings, verbose=False)

    assert settings.watching.chunk_size == LIST_PAGE


def test_the_client_waits_longer_than_the_server_keeps_a_watch_open() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings, verbose=False)

    server, client = settings.watching.server_timeout, settings.watching.client_timeout
    assert server is not None
    assert client is not None
    assert client > server
