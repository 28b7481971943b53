"""Where a server listens: HOST:PORT, as controller-runtime's flags spell it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    """Where to listen: HOST:PORT (an empty host means every interface, as in Go)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
