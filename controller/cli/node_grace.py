"""The `--node-grace-seconds` option, in a module of its own because two commands share it.

`run` (the operator) and `check` (the invariant checker) must agree on when a node is offline,
and `check` should not import the operator (kopf and the Kubernetes client) to learn it.
"""

from __future__ import annotations

import argparse

from controller.cli import arguments

GRACE_ENV = "FOG_NODE_GRACE_SECONDS"
# Nodes silent for longer are offline and their replicas replaced. 40 s tolerates a few lost
# heartbeats on a flaky edge link (Kubernetes uses 50 s, Nomad 10 s TTL + 10 s grace).
DEFAULT_NODE_GRACE_SECONDS = 40.0


def add_node_grace(parser: argparse.ArgumentParser) -> None:
    """Add `--node-grace-seconds` (its default from the environment) to `parser`."""
    parser.add_argument(
        "--node-grace-seconds",
        type=arguments.seconds(),
        default=arguments.from_env(GRACE_ENV, arguments.seconds(), DEFAULT_NODE_GRACE_SECONDS),
        help=f"heartbeat age after which a node is offline (default: ${GRACE_ENV} or "
        f"{DEFAULT_NODE_GRACE_SECONDS:g})",
    )
