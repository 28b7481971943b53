"""`fogctl rollout undo`'s one write: a merge patch of a FogDeployment's spec, by the CLI.

The operator never writes spec; a person does, through this command, the way `kubectl rollout
undo` patches a Deployment's pod template. The patch carries the resourceVersion the command
read, so an edit made in between (a GitOps sync, a colleague) fails it with 409 Conflict
instead of being overwritten by a template chosen from an older spec. The field manager is
`fogctl`: managedFields, and so the new revision's `created_by`, say who made the change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controller.errors import TerminalError
from controller.kube import resource
from controller.kube.client import CONFLICT, NOT_FOUND, KubeApiError, connect
from controller.kube.following import ObjectGoneError

FIELD_MANAGER = "fogctl"


class ChangedMeanwhileError(TerminalError):
    """The object changed after it was read: the undo was computed from an older spec."""


async def patch_spec(
    namespace: str, name: str, spec: Mapping[str, Any], *, resource_version: str
) -> None:
    """Merge `spec` into the object's spec if it is still at `resource_version`."""
    what = f'{resource.PLURAL}.{resource.GROUP} "{name}" in namespace {namespace}'
    api = await connect()
    body = {"metadata": {"resourceVersion": resource_version}, "spec": dict(spec)}
    try:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            resource.GROUP,
            resource.VERSION,
            namespace,
            resource.PLURAL,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        if exc.status == NOT_FOUND:
            raise ObjectGoneError(f"{what} not found") from None
        if exc.status == CONFLICT:
            raise ChangedMeanwhileError(
                f"{what} changed while the undo was prepared; run it again"
            ) from None
        raise KubeApiError(f"patching {what}: {exc.status} {exc.reason}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise KubeApiError(f"patching {what}: {exc}") from exc
    finally:
        await api.close()
