"""`fogctl sandbox up|down|env`: the embedded local environment (see controller.sandbox)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from controller.sandbox import binaries, environment


def register(commands: Any) -> None:
    """Add `sandbox` and its sub-commands to the `fogctl` parser."""
    sandbox = commands.add_parser(
        "sandbox", help="local control plane (kube-apiserver + etcd) and PostgreSQL"
    )
    actions = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("up", _up, "start everything and write DIR/kubeconfig and DIR/env"),
        ("down", _down, "stop everything and remove DIR"),
        ("env", _env, "print the export lines of DIR/env"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--dir",
            type=Path,
            default=None,
            help=(
                f"sandbox folder (default: ${environment.DEFAULT_DIR_ENV} "
                f"or ./{environment.DEFAULT_DIR})"
            ),
        )
        action.set_defaults(handler=handler)
    build = actions.add_parser(
        "build", help="find or build the pinned kube-apiserver, kubectl and etcd (cached)"
    )
    build.set_defaults(handler=_build)


def _folder(args: argparse.Namespace) -> Path:
    return Path(args.dir).absolute() if args.dir else environment.default_dir()


def _up(args: argparse.Namespace) -> int:
    sandbox = environment.up(_folder(args))
    print(f"sandbox up in {sandbox.folder}")
    print(f"  kube-apiserver {sandbox.plane.server}  (etcd on port {sandbox.plane.etcd_port})")
    print(f"  postgresql     {sandbox.database_url}")
    print(f"use it:  source {sandbox.env_file}")
    return 0


def _down(args: argparse.Namespace) -> int:
    folder = _folder(args)
    environment.down(folder)
    print(f"sandbox in {folder} stopped and removed")
    return 0


def _env(args: argparse.Namespace) -> int:
    print(environment.load(_folder(args)).env_file.read_text(), end="")
    return 0


def _build(args: argparse.Namespace) -> int:
    found = binaries.ensure()
    print(f"control-plane binaries: {found.kube_apiserver.parent}")
    return 0
