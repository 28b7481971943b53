"""Deployment templates as teams share them: kustomize bases, components and overlays.

deploy/examples/templates/ holds a base, components a platform team shares and overlays teams
own; no template engine of ours. Each overlay is rendered by the pinned kubectl's kustomize
(the one `kubectl apply -k` runs; Argo CD and Flux embed kustomize too), checked for what its
kustomization asks for, and applied with `--server-side --dry-run=server` to a real API server
holding the CRD: full validation, nothing stored. Broken overlays, written here and never
shipped, must be refused by the API server naming the field.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
TEMPLATES = EXAMPLES / "templates"
BASE_IMAGE = "ghcr.io/fog-controller/hello:1.0"


@dataclass(frozen=True)
class Expected:
    """What an overlay's kustomization asks for, field by field."""

    name: str
    namespace: str
    image: str
    replicas: int
    resources: dict[str, int | float]
    labels: dict[str, str]
    node_selector: dict[str, str] | None = None
    strategy: str = "Spread"


LARGE: dict[str, int | float] = {"cpuCores": 4, "memoryMB": 8192, "storageGB": 20}
OVERLAYS = {
    "team-a-staging": Expected(
        name="team-a-web",
        namespace="team-a-staging",
        image="ghcr.io/team-a/web:1.5.0-rc.1",
        replicas=1,
        resources={"cpuCores": 0.5, "memoryMB": 512, "storageGB": 1},
        labels={"team": "team-a", "environment": "staging"},
    ),
    "team-a-production": Expected(
        name="team-a-web",
        namespace="team-a",
        image="ghcr.io/team-a/web@sha256:"
        "4c1e9a33b1f1ab7d3f7cbc5d1e5b0e1b9f2a8d7c6e5f4a3b2c1d0e9f8a7b6c5d",
        replicas=6,
        resources=LARGE,
        labels={"team": "team-a", "environment": "production"},
    ),
    "team-b-inference": Expected(
        name="team-b-web-inference",
        namespace="team-b",
        image="ghcr.io/team-b/detector:2.3.0",
        replicas=2,
        resources={**LARGE, "gpuUnits": 1},
        labels={"team": "team-b", "environment": "production"},
        node_selector={"accelerator": "gpu"},
        strategy="BinPack",
    ),
}


def render(kubectl: Kubectl, folder: Path | str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize` renders from `folder` (a path or a kustomize URL)."""
    return [doc for doc in yaml.safe_load_all(kubectl("kustomize", str(folder)).stdout) if doc]


def dry_run(
    kubectl: Kubectl, objects: list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Apply `objects` server-side as a dry run; return kubectl's result, unchecked."""
    return kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-o",
        "json",
        *extra,
        "-f",
        "-",
        stdin=yaml.safe_dump_all(objects),
        check=False,
    )


def accepted(kubectl: Kubectl, objects: list[dict[str, Any]], *extra: str) -> list[dict[str, Any]]:
    """The objects as the API server would store them; fails the test if it refused any."""
    result = dry_run(kubectl, objects, *extra)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    items: list[dict[str, Any]] = answer["items"] if answer["kind"] == "List" else [answer]
    return items


def write_kustomization(folder: Path, kind: str = "Kustomization", **fields: Any) -> Path:
    """Write `folder`/kustomization.yaml, a Kustomization or a Component; return `folder`."""
    version = "v1alpha1" if kind == "Component" else "v1beta1"
    folder.mkdir(exist_ok=True)
    body = {"apiVersion": f"kustomize.config.k8s.io/{version}", "kind": kind, **fields}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return folder


def to_every_fogdeployment(patch: Any) -> dict[str, Any]:
    """A `patches:` entry applying `patch` to every FogDeployment, as the shared components do."""
    return {
        "target": {"group": "fogcompute.io", "kind": "FogDeployment"},
        "patch": yaml.safe_dump(patch),
    }


def spec_patch(spec: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of `spec`; with a target, the name is only there to be valid."""
    return {
        "apiVersion": "fogcompute.io/v1alpha1",
        "kind": "FogDeployment",
        "metadata": {"name": "any"},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def team_namespaces(kubectl: Kubectl, fogdeployment_crd: str) -> Iterator[set[str]]:
    """The overlays' namespaces: a dry run checks that the namespace exists, it creates none."""
    names = {expected.namespace for expected in OVERLAYS.values()}
    for name in names:
        kubectl("create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_every_overlay_is_tested() -> None:
    assert {path.parent.name for path in TEMPLATES.glob("overlays/*/kustomization.yaml")} == set(
        OVERLAYS
    )


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_what_it_asks_for_and_the_server_accepts_it(
    kubectl: Kubectl, team_namespaces: set[str], overlay: str
) -> None:
    expected = OVERLAYS[overlay]
    (rendered,) = render(kubectl, TEMPLATES / "overlays" / overlay)
    assert (rendered["apiVersion"], rendered["kind"]) == ("fogcompute.io/v1alpha1", "FogDeployment")
    metadata, spec = rendered["metadata"], rendered["spec"]
    assert (metadata["name"], metadata["namespace"]) == (expected.name, expected.namespace)
    assert expected.labels.items() <= metadata["labels"].items()
    # `images:` and `replicas:` reach these fields only through the base's configuration.
    assert spec["image"] == expected.image
    assert spec["replicas"] == expected.replicas
    assert spec["resources"] == expected.resources
    assert spec.get("nodeSelector") == expected.node_selector
    assert spec["placement"] == {"strategy": expected.strategy}

    (stored,) = accepted(kubectl, [rendered])
    # No defaults and nothing pruned: what the overlay renders is what the cluster would hold.
    assert stored["spec"] == spec
    assert stored["metadata"]["labels"] == metadata["labels"]


LOG_LEVEL = {"name": "LOG_LEVEL", "value": "debug"}


@pytest.mark.parametrize(
    ("patch", "env"),
    [
        # Strategic merge: kustomize has no schema for FogDeployment, so the list is replaced.
        (spec_patch({"env": [LOG_LEVEL]}), [LOG_LEVEL]),
        # JSON 6902 `add` to the end: the way README.md gives to add one item.
        (
            [{"op": "add", "path": "/spec/env/-", "value": LOG_LEVEL}],
            [{"name": "MODEL", "value": "yolo-v8n"}, LOG_LEVEL],
        ),
    ],
    ids=["strategic-merge-replaces", "json6902-appends"],
)
def test_a_patch_replaces_a_list_unless_it_is_a_json6902_add(
    kubectl: Kubectl, tmp_path: Path, patch: Any, env: list[dict[str, str]]
) -> None:
    """README.md's "Patches replace lists", on top of team B's overlay (env: MODEL)."""
    write_kustomization(
        tmp_path,
        resources=[os.path.relpath(TEMPLATES / "overlays" / "team-b-inference", tmp_path)],
        patches=[to_every_fogdeployment(patch)],
    )
    (rendered,) = render(kubectl, tmp_path)
    assert rendered["spec"]["env"] == env


def test_the_base_alone_is_a_valid_fogdeployment(
    kubectl: Kubectl, fogdeployment_crd: str, namespace: str
) -> None:
    (rendered,) = render(kubectl, TEMPLATES / "base")
    assert (rendered["metadata"]["name"], rendered["spec"]["image"]) == ("web", BASE_IMAGE)
    (stored,) = accepted(kubectl, [rendered], "-n", namespace)
    assert stored["spec"] == rendered["spec"]


def test_deploy_examples_renders_the_demo_alone(kubectl: Kubectl) -> None:
    """Flux applies deploy/examples: its kustomization must keep templates/ out of it."""
    assert render(kubectl, EXAMPLES) == [
        yaml.safe_load((EXAMPLES / "fogdeployment.yaml").read_text())
    ]


def _git(repo: Path, *args: str) -> None:
    # Identity and signing set here so that no global git configuration changes the outcome.
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=platform",
            "-c",
            "user.email=platform@example.com",
            "-c",
            "commit.gpgSign=false",
            "-c",
            "tag.gpgSign=false",
            *args,
        ],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_a_team_pins_the_shared_base_by_tag(
    kubectl: Kubectl, fogdeployment_crd: str, namespace: str, tmp_path: Path
) -> None:
    """A remote base with ?ref=TAG, as README.md there shows: kustomize clones that tag.

    The platform repository is a local git repository reached by a file:// URL, which kustomize
    clones exactly as it clones https:// ones; after the tag its main branch moves on.
    """
    platform = tmp_path / "platform"
    shutil.copytree(TEMPLATES, platform / "templates")
    _git(platform, "init", "-q")
    _git(platform, "add", ".")
    _git(platform, "commit", "-q", "-m", "templates v1.0.0")
    _git(platform, "tag", "v1.0.0")
    base = platform / "templates" / "base" / "fogdeployment.yaml"
    base.write_text(base.read_text().replace(BASE_IMAGE, "ghcr.io/fog-controller/hello:2.0"))
    _git(platform, "commit", "-q", "-a", "-m", "a newer default image")

    url = f"file://{platform}//templates"
    team = write_kustomization(
        tmp_path / "team-c",
        namespace=namespace,
        namePrefix="team-c-",
        resources=[f"{url}/base?ref=v1.0.0"],
        components=[f"{url}/components/gpu?ref=v1.0.0"],
        replicas=[{"name": "web", "count": 3}],
    )
    (rendered,) = render(kubectl, team)
    assert rendered["metadata"]["name"] == "team-c-web"
    assert rendered["spec"]["image"] == BASE_IMAGE  # the tag's base, not main's
    assert rendered["spec"]["replicas"] == 3  # the remote base's configuration applies
    assert rendered["spec"]["resources"]["gpuUnits"] == 1
    (stored,) = accepted(kubectl, [rendered])
    assert stored["spec"] == rendered["spec"]


@pytest.mark.parametrize(
    ("overlay", "component", "field"),
    [
        ({"replicas": [{"name": "web", "count": -1}]}, None, "spec.replicas"),
        (
            {"images": [{"name": "ghcr.io/fog-controller/hello", "newTag": "x" * 500}]},
            None,
            "spec.image",
        ),
        ({}, {"resources": {"gpuUnits": 9}}, "spec.resources.gpuUnits"),
        ({}, {"resources": {"gpuUnit": 1}}, "spec.resources.gpuUnit"),
        ({}, {"nodeSelector": {"gpu/": "yes"}}, "spec.nodeSelector"),
        ({}, {"placement": {"strategy": "Random"}}, "spec.placement.strategy"),
    ],
    ids=[
        "negative-replicas",
        "too-long-image",
        "gpu-over-8",
        "misspelt-field",
        "bad-label-key",
        "unknown-strategy",
    ],
)
def test_a_broken_overlay_is_refused_naming_the_field(
    kubectl: Kubectl,
    fogdeployment_crd: str,
    namespace: str,
    tmp_path: Path,
    overlay: dict[str, Any],
    component: dict[str, Any] | None,
    field: str,
) -> None:
    """A team's mistake renders; the API server refuses it, naming the field."""
    if component is not None:
        write_kustomization(
            tmp_path / "broken",
            "Component",
            patches=[to_every_fogdeployment(spec_patch(component))],
        )
        overlay = {**overlay, "components": ["../broken"]}
    folder = tmp_path / "overlay"
    write_kustomization(
        folder,
        namespace=namespace,
        # kustomize takes bases only by relative path or URL, never by absolute path.
        resources=[os.path.relpath(TEMPLATES / "base", folder)],
        **overlay,
    )

    result = dry_run(kubectl, render(kubectl, folder))
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert field in result.stderr, result.stderr
