"""Free loopback ports, so that several sandboxes and test runs can live side by side."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1.

    The port is released before the caller binds it, so another process may take it in
    between; callers that start servers retry on a failed bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
