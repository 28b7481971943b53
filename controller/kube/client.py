"""The few Kubernetes API calls the operator makes itself.

It lists FogDeployments once at start, patches status and posts events. kopf owns the watch;
reconciles run in the operator's own workers (any of a watch event, a database notification, a
requeue or the resync may start one), and every status write goes through one path under one
per-object lock so that an older status never overwrites a newer one. The client is async
(kubernetes_asyncio) like the rest of the operator. Failures leave here as KubeApiError
(retryable), with the server's suggested delay when it throttled us: callers never look at the
client's own exceptions.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from controller.errors import RetryableError, TerminalError
from controller.kube import resource
from controller.model.conditions import rfc3339
from controller.model.events import Occurrence

# Shown as the source of our events in `kubectl describe`.
COMPONENT = "fog-controller"
# HTTP 200: the request was served.
OK = 200
# HTTP 404: the object is gone (deleted between the notification and our read).
NOT_FOUND = 404
# HTTP 409: an object of that name exists already (an earlier attempt's create got through).
CONFLICT = 409
# HTTP 422: the API server refused a request's parameters (Invalid).
UNPROCESSABLE = 422
# HTTP 429: the API server's priority and fairness throttled us; it says how long to wait.
TOO_MANY_REQUESTS = 429
# Kubernetes caps event messages at 1 KiB in practice (kubectl truncates); keep ours within.
EVENT_MESSAGE_MAX = 1024
# kubernetes_asyncio's own read buffer (rest.py), kept where we replace its session: a watch
# event carries a whole object, and etcd takes requests of up to 1.5 MiB.
READ_BUFSIZE = 2**21
# Objects per page of the listing at start, the page size of kubectl (--chunk-size) and of
# client-go's pager: 50,000 objects are never one response held in memory at once.
LIST_PAGE = 500
# The probe for streaming lists selects by a label no object carries, so that its answer is
# the initial-events bookmark alone, and the server ends it after a second in any case.
PROBE_SELECTOR = f"{resource.GROUP}/streaming-list-probe=none"
PROBE_SERVER_SECONDS = 1
# The probe's own bound: the API server answered our discovery just before, so an answer
# slower than this means trouble, and the operator then lists as kopf does by default.
PROBE_TIMEOUT_SECONDS = 10


class KubeApiError(RetryableError):
    """An API call failed; retrying later may help (the server may say when)."""


def _api_error(what: str, exc: ApiException) -> KubeApiError:
    """The API client's error as ours, with the server's Retry-After when it throttled us."""
    headers: Mapping[str, str] = exc.headers or {}
    retry_after = headers.get("Retry-After", "") if exc.status == TOO_MANY_REQUESTS else ""
    delay = float(retry_after) if retry_after.isdigit() else None
    return KubeApiError(f"{what}: {exc.status} {exc.reason}", delay=delay)


class KubeConfigError(TerminalError):
    """No usable kubeconfig or in-cluster account: retrying will not help, the user must act."""


async def connect() -> client.ApiClient:
    """An API client from the in-cluster service account, else the kubeconfig."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            await config.load_kube_config()
    except (config.ConfigException, OSError) as exc:
        raise KubeConfigError(f"cannot load the Kubernetes configuration: {exc}") from exc
    api = client.ApiClient()
    _look_up_the_environment_once(api)
    return api


def _look_up_the_environment_once(api: client.ApiClient) -> None:
    """Stop the client from reading the proxy variables and ~/.netrc again for every request.

    kubernetes_asyncio opens its aiohttp session with trust_env=True, and aiohttp then looks up
    the proxy environment and ~/.netrc in a worker thread for each request: two thread hand-offs
    per status patch or event, about a tenth of the operator's CPU in the burst (py-spy,
    docs/design/performance.md). The environment does not change while we run, so it is read
    here once: when no proxy applies to the API server, the session is replaced by one that
    does not trust the environment, on the same connector (its TLS settings). When a proxy does
    apply, the library's session is kept, and it keeps finding the proxy. ~/.netrc is not how
    Kubernetes authenticates (the kubeconfig or the service account is), so nothing is lost.
    """
    server = urllib.parse.urlsplit(api.configuration.host)
    proxy = urllib.request.getproxies().get(server.scheme)
    if proxy and not urllib.request.proxy_bypass(server.hostname or ""):
        return
    rest = api.rest_client
    library_session: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=library_session.connector, read_bufsize=READ_BUFSIZE
    )
    library_session.detach()  # the connector is the new session's now; closed with it


class KubeClient:
    """FogDeployment status patches and events over one API client."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    async def close(self) -> None:
        """Release the HTTP session."""
        await self._api.close()

    async def served(self, plurals: Collection[str]) -> bool:
        """Whether the API server's discovery lists all our kinds `plurals` now.

        Discovery is what kopf reads once, at its start, to choose what to watch: a kind not
        listed then (its CRD not installed yet, or an API server just restarted that has not
        loaded the CRDs again) is never watched for the life of the process.
        """
        try:
            found = await self._objects.get_api_resources(resource.GROUP, resource.VERSION)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return False  # no kind of the group is served yet
            raise _api_error("reading the API server's discovery", exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"reading the API server's discovery: {exc}") from exc
        return set(plurals) <= {kind.name for kind in found.resources}

    async def serves_streaming_lists(self, namespace: str | None) -> bool:
        """Whether the API server serves FogDeployments as a streaming list (sendInitialEvents).

        Kubernetes serves a watch that begins with every object as an event from 1.34 on (the
        WatchList feature gate: alpha from 1.27, on in 1.32, off again in 1.33), and refuses
        the parameter with 422 Invalid where the gate is off. kopf asked for one where it is
        not served fails its watch and stops the operator, so we ask first, with a watch that
        selects nothing. `namespace` None asks cluster-wide, as kopf would watch.
        """
        scope = "" if namespace is None else f"/namespaces/{urllib.parse.quote(namespace)}"
        try:
            response = await self._api.call_api(
                f"/apis/{resource.GROUP}/{resource.VERSION}{scope}/{resource.PLURAL}",
                "GET",
                query_params=[
                    ("watch", "true"),
                    ("sendInitialEvents", "true"),
                    ("resourceVersionMatch", "NotOlderThan"),
                    ("allowWatchBookmarks", "true"),
                    ("labelSelector", PROBE_SELECTOR),
                    ("timeoutSeconds", str(PROBE_SERVER_SECONDS)),
                ],
                auth_settings=["BearerToken"],
                _preload_content=False,  # the raw response: a watch is a stream
                _request_timeout=PROBE_TIMEOUT_SECONDS,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"asking for a streaming list: {exc}") from exc
        try:
            if response.status == UNPROCESSABLE:
                return False
            if response.status != OK:
                raise KubeApiError(
                    f"asking for a streaming list: {response.status} {response.reason}"
                )
            return True
        finally:
            response.close()  # the status says it all; the bookmark need not be read

    async def list_deployments(self, namespace: str | None) -> AsyncIterator[list[dict[str, Any]]]:
        """The FogDeployments of `namespace` (None: every one), a page (LIST_PAGE) at a time."""
        scope = () if namespace is None else (namespace,)
        listing = (
            self._objects.list_cluster_custom_object
            if namespace is None
            else self._objects.list_namespaced_custom_object
        )
        token: str | None = None
        while True:
            try:
                page = await listing(
                    resource.GROUP,
                    resource.VERSION,
                    *scope,
                    resource.PLURAL,
                    limit=LIST_PAGE,
                    _continue=token,
                )
            except ApiException as exc:
                raise _api_error("listing FogDeployments", exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeApiError(f"listing FogDeployments: {exc}") from exc
            yield page["items"]
            token = page["metadata"].get("continue")
            if not token:
                return

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        plural: str = resource.PLURAL,
    ) -> None:
        """Merge `status` into the object's `.status` through the status subresource.

        A FogDeployment's unless `plural` names another of our kinds (FogQuota).
        """
        try:
            await self._objects.patch_namespaced_custom_object_status(
                resource.GROUP,
                resource.VERSION,
                namespace,
                plural,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return  # deleted meanwhile: nothing to report on
            raise _api_error(f"patching {namespace}/{name}", exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"patching {namespace}/{name}: {exc}") from exc

    async def post_event(self, ref: resource.ObjectRef, occurrence: Occurrence) -> None:
        """Record a Kubernetes Event about `ref` (core/v1, as `kubectl describe` shows them).

        The first occurrence creates the Event object; a repeat raises its count and
        lastTimestamp. A repeat whose object is gone (expired by the API server's event TTL,
        or never created because its first post was dropped) creates it with the count so far;
        a first post that meets the object (its earlier attempt got through, the response did
        not) updates it instead.
        """
        try:
            if occurrence.count > 1 and await self._update_event(ref, occurrence):
                return
            try:
                await self._core.create_namespaced_event(
                    ref.namespace, _event_body(ref, occurrence)
                )
            except ApiException as exc:
                if exc.status != CONFLICT or not await self._update_event(ref, occurrence):
                    raise
        except ApiException as exc:
            raise _api_error(f"posting event {occurrence.event.reason}", exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(f"posting event {occurrence.event.reason}: {exc}") from exc

    async def _update_event(self, ref: resource.ObjectRef, occurrence: Occurrence) -> bool:
        """Set the count and last time of the posted Event object; False if it is gone."""
        try:
            await self._core.patch_namespaced_event(
                occurrence.name,
                ref.namespace,
                {"count": occurrence.count, "lastTimestamp": rfc3339(moment=occurrence.last)},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return False
            raise
        return True


def _event_body(ref: resource.ObjectRef, occurrence: Occurrence) -> client.CoreV1Event:
    event = occurrence.event
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=occurrence.name, namespace=ref.namespace),
        involved_object=client.V1ObjectReference(
            api_version=f"{resource.GROUP}/{resource.VERSION}",
            kind=resource.KIND,
            name=ref.name,
            namespace=ref.namespace,
            uid=ref.uid,
        ),
        reason=event.reason,
        message=event.message[:EVENT_MESSAGE_MAX],
        type=str(event.type),
        source=client.V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT,
        reporting_instance=os.environ.get("HOSTNAME", COMPONENT),
        first_timestamp=occurrence.first,
        last_timestamp=occurrence.last,
        count=occurrence.count,
    )
