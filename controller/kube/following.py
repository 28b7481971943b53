"""One FogDeployment as it changes: a list, then a watch from that list's version.

What `fogctl rollout status` follows. A list by name, not a get, gives the resourceVersion to
watch from, so no change between the two is missed; an expired version (410 Gone, after a long
wait on a busy cluster) lists again rather than failing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from controller.errors import TerminalError
from controller.kube import resource
from controller.kube.client import KubeApiError, connect

# The server ends a watch after this long and we start another: the API server's own bound is
# 5-10 minutes, and a shorter one shows a lost connection sooner.
WATCH_SECONDS = 240
GONE = 410  # the watched resourceVersion is older than the server keeps


class ObjectGoneError(TerminalError):
    """The object does not exist, or was deleted while followed."""


async def versions(
    namespace: str, name: str, *, follow: bool
) -> AsyncGenerator[dict[str, Any], None]:
    """The object now, then (with `follow`) every new version of it until the caller stops."""
    api = await connect()
    objects = client.CustomObjectsApi(api)
    where = (resource.GROUP, resource.VERSION, namespace, resource.PLURAL)
    selector = f"metadata.name={name}"
    what = f'{resource.PLURAL}.{resource.GROUP} "{name}" in namespace {namespace}'
    try:
        while True:
            listed = await objects.list_namespaced_custom_object(*where, field_selector=selector)
            if not listed.get("items"):
                raise ObjectGoneError(f"{what} not found")
            yield listed["items"][0]
            if not follow:
                return
            version = listed["metadata"]["resourceVersion"]
            try:
                async for event in watch.Watch().stream(
                    objects.list_namespaced_custom_object,
                    *where,
                    field_selector=selector,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    if event["type"] == "DELETED":
                        raise ObjectGoneError(f"{what} was deleted")
                    yield event["object"]
            except ApiException as exc:
                if exc.status != GONE:
                    raise
    except ApiException as exc:
        raise KubeApiError(f"reading {what}: {exc.status} {exc.reason}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KubeApiError(f"reading {what}: {exc}") from exc
    finally:
        await api.close()
