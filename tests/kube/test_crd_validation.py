"""The API server itself rejects bad FogDeployment manifests, naming the field.

Every file under tests/manifests/invalid starts with `# expect: <field path>`; both a dry run
(`kubectl apply --dry-run=server`) and a real apply must fail with that path in the message,
and nothing may be stored. Every file under tests/manifests/valid must be accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import Kubectl

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
INVALID = sorted((MANIFESTS / "invalid").glob("*.yaml"))
VALID = sorted((MANIFESTS / "valid").glob("*.yaml"))


def _expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <field>'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_at_least_twenty_invalid_manifests() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("manifest", INVALID, ids=lambda path: path.stem)
@pytest.mark.parametrize("mode", ["--dry-run=server", "--dry-run=none"])
def test_invalid_manifest_is_rejected_naming_the_field(
    kubectl: Kubectl, fogdeployment_crd: str, namespace: str, manifest: Path, mode: str
) -> None:
    field = _expected_field(manifest)
    result = kubectl("apply", mode, "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert field in result.stderr, result.stderr
    stored = json.loads(kubectl("get", "fogdeployments", "-n", namespace, "-o", "json").stdout)
    assert stored["items"] == []


@pytest.mark.parametrize("manifest", VALID, ids=lambda path: path.stem)
def test_valid_manifest_is_accepted_unchanged(
    kubectl: Kubectl, fogdeployment_crd: str, namespace: str, manifest: Path
) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", str(manifest))
    stored = json.loads(kubectl("get", "fogdeployments", "-n", namespace, "-o", "json").stdout)
    assert len(stored["items"]) == 1
    # No schema defaults and no pruning: what Git holds is what the cluster holds.
    assert stored["items"][0]["spec"] == yaml.safe_load(manifest.read_text())["spec"]
