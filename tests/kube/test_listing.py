"""The operator's listing at start, on a real kube-apiserver: every object, page by page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Kubectl, fresh_namespace
from test_operator import manifest

from controller.kube import client
from controller.kube.client import KubeClient


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from fresh_namespace(kubectl)


async def test_pages_cover_every_object_of_the_scope_once(
    kube: KubeClient,
    kubectl: Kubectl,
    fogdeployment_crd: str,
    namespace: str,
    other_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"web-{index}" for index in range(5)]
    stream = "---\n".join(manifest(name, replicas=0) for name in names)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=stream)
    kubectl("apply", "-n", other_namespace, "-f", "-", stdin=manifest("elsewhere", replicas=0))
    monkeypatch.setattr(client, "LIST_PAGE", 2)  # 5 objects: pages of 2, 2 and 1

    pages = [page async for page in kube.list_deployments(namespace)]
    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [item["metadata"]["name"] for page in pages for item in page]
    assert sorted(listed) == names
    assert {item["spec"]["replicas"] for page in pages for item in page} == {0}

    everywhere = [
        (item["metadata"]["namespace"], item["metadata"]["name"])
        async for page in kube.list_deployments(None)
        for item in page
    ]
    ours = [key for key in everywhere if key[0] in (namespace, other_namespace)]
    assert sorted(ours) == sorted(
        [(namespace, name) for name in names] + [(other_namespace, "elsewhere")]
    )
    assert len(everywhere) == len(set(everywhere))  # no object twice across pages


async def test_the_api_server_is_asked_whether_it_streams_lists_before_kopf_is_told_to(
    kube: KubeClient, fogdeployment_crd: str, namespace: str
) -> None:
    # Kubernetes v1.37.2 streams lists (the WatchList gate is on from 1.34); the fault suite
    # restarts it with the gate off, where the answer is no and kopf lists instead.
    assert await kube.serves_streaming_lists(None) is True
    assert await kube.serves_streaming_lists(namespace) is True
