"""`fogctl`: the entry point that wires sub-commands and turns known errors into one line.

Each sub-command lives in a module of its own that adds its parser (`register`) and the
function to run; this module only dispatches. Errors the user can act on (a bad URL, an
unreachable database, a missing binary) are printed as `fogctl: error: ...` with exit code 1,
never as a traceback; a command line that cannot be parsed gets one line too, with exit code 2
(controller/cli/arguments.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller.cli import (
    agent_commands,
    arguments,
    check_command,
    cost_command,
    db_commands,
    history_command,
    node_commands,
    rollout_commands,
    run_command,
    sandbox_commands,
    serve_agents_command,
    top_command,
)
from controller.errors import FogError
from controller.sandbox.errors import SandboxError

# Known failures a person can fix (ours are all FogErrors: a bad command, URL or database
# state, an outage); anything else is a bug and keeps its traceback.
USER_ERRORS = (FogError, SandboxError)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the docs and the CLI tests)."""
    parser = arguments.Parser(
        prog="fogctl", description="Operate fog-controller: database, sandbox, nodes, operator."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db_commands.register(commands)
    sandbox_commands.register(commands)
    run_command.register(commands)
    node_commands.register(commands)
    agent_commands.register(commands)
    serve_agents_command.register(commands)
    history_command.register(commands)
    rollout_commands.register(commands)
    top_command.register(commands)
    cost_command.register(commands)
    check_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the process exit code.

    A command line that cannot be parsed exits inside `parse_args` (one line, exit code 2);
    building the parser is inside the `try` because flag defaults read the environment.
    """
    try:
        args = build_parser().parse_args(argv)
        result: int = args.handler(args)
    except USER_ERRORS as exc:
        print(f"fogctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # the shell's convention for a command ended by SIGINT
    return result


if __name__ == "__main__":
    sys.exit(main())
