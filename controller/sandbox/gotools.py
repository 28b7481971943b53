"""Small Go commands the tests run (GitOps verdicts, a manifest linter), built once and cached.

Each lives in `tools/<name>/` as a Go module that pins what it builds. Like the control-plane
binaries (binaries.py) it is built from the Go module proxy into the per-user cache, under a key
derived from its module files, so an edit rebuilds it and a clean clone needs nothing but Go.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controller.sandbox import binaries
from controller.sandbox.errors import SandboxError

TOOLS = binaries.TOOLS_DIR.parent


@dataclass(frozen=True, slots=True)
class GoTool:
    """A command built from `tools/<folder>` (`package`: "." or an import path in its module)."""

    name: str
    folder: str
    package: str
    sources: tuple[str, ...]

    @property
    def module(self) -> Path:
        """The Go module's folder."""
        return TOOLS / self.folder

    def _cache_key(self) -> str:
        digest = hashlib.sha256(self.package.encode())
        for source in self.sources:
            digest.update((self.module / source).read_bytes())
        return digest.hexdigest()[:16]

    def ensure(self) -> Path:
        """The built command, building it first when its module changed."""
        target = binaries.cache_root().parent / self.folder / self._cache_key()
        binary = target / self.name
        if binary.is_file():
            return binary
        if shutil.which("go") is None:
            raise SandboxError(f"{self.name} is not built and 'go' is not on PATH: install Go")
        with binaries.build_lock(target.parent):
            if binary.is_file():  # another process built it while we waited
                return binary
            staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
            try:
                flags = ["-ldflags", "-s -w"]
                binaries.go_build(
                    self.module, flags, [self.package], str(staging / self.name), None
                )
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return binary
