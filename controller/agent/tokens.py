"""An agent's credentials on disk: node name -> token, in a YAML (or JSON) mapping.

A bootstrap token is good for one exchange; the node token the agent gets for it must outlive
a restart, so the agent writes it back to the same file (mode 0600, replaced atomically) and
never needs the bootstrap token again. The file is re-read when it changes, so nodes added to
it (`fogctl node register` and an operator's provisioning) are served without a restart.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from controller.errors import TerminalError


class TokensFileError(TerminalError):
    """The tokens file cannot be read, or is not a mapping of node names to tokens."""


class TokensFile:
    """The file and what it said when last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.tokens: dict[str, str] = {}

    def changed(self) -> bool:
        """Re-read the file if it changed since the last read; say whether it did."""
        try:
            status = self.path.stat()
        except OSError as exc:
            raise TokensFileError(f"cannot read {self.path}: {exc.strerror}") from None
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return False
        self.tokens = self._read()
        self._stamp = stamp
        return True

    def _read(self) -> dict[str, str]:
        try:
            loaded = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TokensFileError(
                f"cannot read {self.path}: {' '.join(str(exc).split())}"
            ) from None
        if not isinstance(loaded, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in loaded.items()
        ):
            raise TokensFileError(f"{self.path}: expected a mapping of node names to tokens")
        return dict(loaded)

    def save(self, replaced: Mapping[str, str]) -> None:
        """Set these entries, keeping every other one; safe against another writer.

        The agent writes back exchanged tokens while provisioning may add nodes: both take the
        same lock file, read, merge and replace the file atomically, so neither loses the other's.
        """
        lock = self.path.with_name(f".{self.path.name}.lock")
        with open(lock, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            self.tokens = self._read() if self.path.exists() else {}
            merged = {**self.tokens, **replaced}
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(handle, "w") as out:
                yaml.safe_dump(merged, out)
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        self._stamp = None
        self.changed()
