"""`fogctl rollout status NAMESPACE/NAME`: follow a rollout until it finishes, as kubectl does.

`kubectl rollout status` refuses custom resources, so scripts that deploy with `kubectl apply`
and then wait need this (or `kubectl wait --for=condition=Ready`, see the README). The flags
and the exit codes are kubectl's: 0 once rolled out, 1 when the rollout failed (Stalled) or
the timeout passed, each with one line.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from controller.cli import arguments
from controller.errors import FogError
from controller.kube.following import versions
from controller.model.rollout import progress


class RolloutFailedError(FogError):
    """The rollout cannot finish as things stand: the reason, for one line and exit code 1."""


def register(commands: Any) -> None:
    """Add `rollout` and its `status` to the `fogctl` parser."""
    rollout = commands.add_parser("rollout", help="follow a FogDeployment's rollout")
    actions = rollout.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="watch until the current spec runs on every replica (kubectl rollout status)",
    )
    status.add_argument("target", type=arguments.namespaced_name, metavar="NAMESPACE/NAME")
    status.add_argument(
        "-w",
        "--watch",
        type=arguments.boolean,
        default=True,
        metavar="BOOL",
        help="follow until done (default true); false prints where it stands and exits",
    )
    status.add_argument(
        "--timeout",
        type=arguments.duration,
        default=None,
        metavar="DURATION",
        help="give up after this long, e.g. 5m (default: wait for ever, as kubectl)",
    )
    status.set_defaults(handler=_status)


async def _follow(namespace: str, name: str, *, watch: bool) -> None:
    """Print each new state until the rollout is done; raise if it failed."""
    said = ""
    async for body in versions(namespace, name, follow=watch):
        state = progress(body)
        if state.failed:
            raise RolloutFailedError(state.message)
        if state.message != said:
            print(state.message, flush=True)
            said = state.message
        if state.done:
            return


async def _with_timeout(namespace: str, name: str, *, watch: bool, limit: timedelta | None) -> None:
    try:
        async with asyncio.timeout(limit.total_seconds() if limit else None):
            await _follow(namespace, name, watch=watch)
    except TimeoutError:
        raise RolloutFailedError("timed out waiting for the condition") from None


def _status(args: argparse.Namespace) -> int:
    namespace, name = args.target
    asyncio.run(_with_timeout(namespace, name, watch=args.watch, limit=args.timeout))
    return 0
