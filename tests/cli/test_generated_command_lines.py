"""Generated bad command lines for every `fogctl` command: one line and a non-zero exit, always.

The command tree is read from the parser itself, so a command or flag added later is covered
without editing this test. Each example is a command path, then flags of that command (and
unknown ones) with bad values, and stray positionals; `main()` runs in-process (no servers: the
database URLs drawn are all malformed, so nothing connects) and must end with exit code 1 or
2 and exactly one line on stderr, or print the usage when `--help` was asked for.
`sandbox up`, `down` and `build` are left out: with a valid command line they start, remove
or build things rather than refuse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from controller.cli.main import build_parser, main

LEFT_OUT = {("sandbox", "up"), ("sandbox", "down"), ("sandbox", "build")}
# Values a person might mistype: text for numbers, NaN and infinities, out of range, empty,
# path-like, label-like, flag-like, non-ASCII. Database URLs are all malformed on purpose.
BAD_VALUES = [
    *("x", "-1", "0", "nan", "inf", "-inf", "1e400", "1e300", "1.5", "2147483648", ""),
    *("a/b", "/", "a=b", "=", "--", "-", "--bogus", "-x", "🙂", "é/é", " ", "a" * 300),
]
BAD_URLS = ["not a url", "mysql://root@127.0.0.1/fog", "postgresql+psycopg://u@127.0.0.1"]
typed = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
value = st.sampled_from(BAD_VALUES) | typed


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command path of the tree with its parser, groups included (`node`, `db` ...)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


TREE = [(path, parser) for path, parser in commands(build_parser()) if path not in LEFT_OUT]


def _flags(parser: argparse.ArgumentParser) -> list[tuple[str, bool]]:
    """(flag, takes a value) for each optional argument but --help."""
    return [
        (action.option_strings[-1], action.nargs != 0)
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    ]


@st.composite
def command_line(draw: Callable[..., Any]) -> list[str]:
    path, parser = draw(st.sampled_from(TREE))
    argv = list(path)
    flags = [*_flags(parser), ("--bogus", True), ("-Z", False)]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            flag, takes_value = draw(st.sampled_from(flags))
            argv.append(flag)
            if takes_value and draw(st.integers(0, 9)):  # sometimes the value is missing
                argv.append(draw(st.sampled_from(BAD_URLS) if "url" in flag else value))
        else:
            argv.append(draw(value))
    if draw(st.integers(0, 19)) == 0:
        argv.append("--help")
    return argv


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: Any = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@given(argv=command_line())
def test_a_generated_bad_command_line_is_one_line(argv: list[str]) -> None:
    # No database from the environment and no sandbox folder: only what the line says counts.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FOG_")}
    clean["FOG_SANDBOX_DIR"] = "/nonexistent/fog-sandbox"
    with mock.patch.dict(os.environ, clean, clear=True):
        code, out, err = run(argv)
    asked_for_help = any(arg in ("-h", "--help") for arg in argv)
    if code == 0:
        assert asked_for_help, (argv, out, err)
        assert out.startswith("usage: fogctl")
        return
    assert code in (1, 2), (argv, code, err)
    lines = err.splitlines()
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("fogctl")
    assert ": error: " in lines[0]


def test_the_tree_has_every_command() -> None:
    paths = {" ".join(path) for path, _ in TREE}
    expected = {"db upgrade", "run", "node register", "agent simulate", "history", "check"}
    assert expected <= paths
