"""What the operator tells kopf about watching: page size and timeouts.

kopf lists every object in one response, as it must here: in pages, a listing slower than the
API server keeps a continue token ended in a 410 that kopf does not retry, and the operator
stopped (a 50,000-object fill; docs/design/performance.md).
"""

from __future__ import annotations

import kopf

from controller.operator.handlers import apply_settings


def test_kopf_lists_in_one_response_that_no_continue_token_can_outlive() -> None:
    settings = kopf.OperatorSettings()
    settings.watching.chunk_size = 500  # as this operator once set it

    apply_settings(settings, verbose=False)

    assert settings.watching.chunk_size is None


def test_the_client_waits_longer_than_the_server_keeps_a_watch_open() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings, verbose=False)

    server, client = settings.watching.server_timeout, settings.watching.client_timeout
    assert server is not None
    assert client is not None
    assert client > server
