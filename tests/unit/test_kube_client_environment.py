"""The operator's Kubernetes client reads the proxy environment once, not at every request.

kubernetes_asyncio's session trusts the environment, so aiohttp looked up the proxy variables
and ~/.netrc in a worker thread for every status patch and event. `connect()` resolves the
proxy once: with none for the API server, its session no longer trusts the environment; with
one, the library's session is kept so the proxy is still used.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.config import kube_config

from controller.kube import client as kube_client

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: someone
  user: {token: not-a-real-token}
contexts:
- name: local
  context: {cluster: local, user: someone}
current-context: local
"""


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig naming a local API server (nothing is contacted), and no proxy set.

    The library reads $KUBECONFIG when imported, so its default location is patched; loading
    the file sets the library's default configuration, which is put back afterwards.
    """
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def _session_after_connect() -> tuple[bool, bool]:
    """connect(), then whether its session trusts the environment and its connector is open;
    closing the client must close the connector whichever session holds it."""
    api = await kube_client.connect()
    try:
        session = api.rest_client.pool_manager
        connector = session.connector
        trusts, open_ = session.trust_env, connector is not None and not connector.closed
    finally:
        await api.close()
    assert connector is not None
    assert connector.closed
    return trusts, open_


PROXY = "http://proxy.example:3128"


@pytest.mark.usefixtures("kubeconfig")
@pytest.mark.parametrize(
    ("environment", "trusted"),
    [
        pytest.param({}, False, id="no proxy: read once"),
        pytest.param({"HTTPS_PROXY": PROXY}, True, id="a proxy: the library's session kept"),
        pytest.param(
            {"HTTPS_PROXY": PROXY, "NO_PROXY": "127.0.0.1,.cluster.local"},
            False,
            id="a proxy the API server bypasses: read once",
        ),
    ],
)
async def test_the_session_reads_the_environment_per_request_only_for_a_proxy(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], trusted: bool
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert await _session_after_connect() == (trusted, True)
