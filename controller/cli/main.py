"""`fogctl`: the entry point that wires sub-commands and turns known errors into one line.

Each sub-command lives in a module of its own that adds its parser (`register`) and the
function to run; this module only dispatches. Errors the user can act on (a bad URL, an
unreachable database, a missing binary) are printed as `fogctl: error: ...` with exit code 1,
never as a traceback; a command line that cannot be parsed gets one line too, with exit code 2
(controller/cli/arguments.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from controller.cli import arguments
from controller.errors import FogError
from controller.sandbox.errors import SandboxError

# Known failures a person can fix (ours are all FogErrors: a bad command, URL or database
# state, an outage); anything else is a bug and keeps its traceback.
USER_ERRORS = (FogError, SandboxError)

# Each command and the module that holds it, in the order `fogctl --help` lists them. The
# modules are imported only when their command is asked for: together they import kopf, the
# Kubernetes client and the agent API, about 2.5 s of CPU that every fogctl process (each
# simulated agent, each check) paid at start when main imported them all.
COMMANDS = {
    "db": "controller.cli.db_commands",
    "sandbox": "controller.cli.sandbox_commands",
    "run": "controller.cli.run_command",
    "node": "controller.cli.node_commands",
    "agent": "controller.cli.agent_commands",
    "serve-agents": "controller.cli.serve_agents_command",
    "history": "controller.cli.history_command",
    "rollout": "controller.cli.rollout_commands",
    "top": "controller.cli.top_command",
    "cost": "controller.cli.cost_command",
    "check": "controller.cli.check_command",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command tree: every command (the docs and the CLI tests use it), or `only` one.

    A parser with one command parses that command's line as the whole tree would, but reads
    from the environment only the defaults of that command's options; help, a missing or an
    unknown command build the whole tree so they can list every command.
    """
    parser = arguments.Parser(
        prog="fogctl", description="Operate fog-controller: database, sandbox, nodes, operator."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only in (None, name):
            importlib.import_module(module).register(commands)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command a command line asks for, if its first word names one.

    fogctl has no options of its own before the command, only --help.
    """
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the return value is the process exit code.

    A command line that cannot be parsed exits inside `parse_args` (one line, exit code 2);
    building the parser is inside the `try` because flag defaults read the environment.
    """
    try:
        words = sys.argv[1:] if argv is None else argv
        args = build_parser(command_of(words)).parse_args(words)
        result: int = args.handler(args)
    except USER_ERRORS as exc:
        print(f"fogctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # the shell's convention for a command ended by SIGINT
    return result


if __name__ == "__main__":
    sys.exit(main())
