"""Whether the API server answers: the readiness probe's other half (the database is one).

Asks `/version`, which every API server serves to any authenticated client and which touches
no storage: an answer means the server is up and our credentials are accepted. On an HTTP
session of its own, so that the probe is not queued behind the operator's status patches.
"""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controller.kube.client import KubeApiError, connect

# The health loop asks every few seconds; an API server that takes longer than this to say
# its version is not serving us, whatever it would say eventually.
REQUEST_TIMEOUT_SECONDS = 3


class ApiReachability:
    """Asks the API server, again and again, whether it answers."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._version = client.VersionApi(api)

    @classmethod
    async def connect(cls) -> ApiReachability:
        """On the same credentials as the operator (in-cluster account or kubeconfig)."""
        return cls(await connect())

    async def check(self) -> None:
        """Return if the API server answers; KubeApiError saying why not otherwise."""
        try:
            await self._version.get_code(_request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            raise KubeApiError(f"API server: {exc.status} {exc.reason}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise KubeApiError(f"API server unreachable: {type(exc).__name__} {exc}") from exc

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._api.close()
