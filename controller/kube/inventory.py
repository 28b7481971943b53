"""Every live FogDeployment, read once for `fogctl check --kube`.

The checker compares what the API server says (a Ready status, the objects that exist) with the
database record; it reads in pages so that tens of thousands of objects stay cheap to hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from controller.kube import resource
from controller.kube.client import KubeApiError, connect
from controller.model.invariants import LiveObject

# Objects per list call: the API server's own default page for kubectl (500) is a fair balance
# between round trips and the size of one response.
PAGE = 500


def live_object(body: Mapping[str, Any]) -> LiveObject:
    """Reduce one FogDeployment to what the checker compares."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    try:
        parsed = resource.parse_spec(str(meta["name"]), spec)
    except ValidationError:
        parsed = None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return LiveObject(
        namespace=str(meta["namespace"]),
        name=str(meta["name"]),
        uid=str(meta["uid"]),
        replicas=parsed.replicas if parsed else None,
        revision=parsed.revision if parsed else None,
        claims_ready=ready and status.get("observedGeneration") == meta.get("generation"),
    )


async def live_objects(namespaces: Sequence[str] = ()) -> list[LiveObject]:
    """Every FogDeployment in `namespaces` (all if none), from the current kubeconfig."""
    api = await connect()
    objects = client.CustomObjectsApi(api)
    found: list[LiveObject] = []
    try:
        scopes: Sequence[str | None] = namespaces or [None]  # None: every namespace
        for namespace in scopes:
            token: str | None = None
            while True:
                page = await _page(objects, namespace, token)
                found += [live_object(item) for item in page.get("items") or []]
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        return found
    except ApiException as exc:
        raise KubeApiError(f"listing FogDeployments: {exc.status} {exc.reason}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KubeApiError(f"listing FogDeployments: {exc}") from exc
    finally:
        await api.close()


async def _page(
    objects: client.CustomObjectsApi, namespace: str | None, token: str | None
) -> dict[str, Any]:
    """One page of the listing, of one namespace or of all of them."""
    where = (resource.GROUP, resource.VERSION)
    if namespace is None:
        page: dict[str, Any] = await objects.list_cluster_custom_object(
            *where, resource.PLURAL, limit=PAGE, _continue=token
        )
    else:
        page = await objects.list_namespaced_custom_object(
            *where, namespace, resource.PLURAL, limit=PAGE, _continue=token
        )
    return page
