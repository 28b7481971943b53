"""Bad input to every `fogctl` command, as a person types it: one line on stderr, a non-zero exit.

Never a traceback and never argparse's usage block: a command line that cannot be parsed exits
with 2 (argparse's usage error), a command that ran and was refused with 1. `--help` still
prints the usage.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import URL
from test_db_cli import _url, fogctl
from test_node_cli import node, place_a_replica, register

USAGE = 2  # argparse's exit code for a command line it cannot parse
REFUSED = 1  # a command that ran and was refused


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Exactly one line on stderr, starting 'fogctl', with every fragment; nothing on stdout."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fogctl"), lines[0]
    assert ": error: " in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.returncode == code
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "fogctl: error: the following arguments are required: COMMAND"),
        (["deploy"], "fogctl: error: argument COMMAND: invalid choice: 'deploy'"),
        (["db"], "fogctl db: error: the following arguments are required: ACTION"),
        (["db", "downgrade"], "fogctl db downgrade: error: the following arguments are required"),
        (["db", "current", "--database-url"], "argument --database-url: expected one argument"),
        (["sandbox", "up", "--dir"], "fogctl sandbox up: error: argument --dir: expected one"),
        (["sandbox", "start"], "fogctl sandbox: error: argument ACTION: invalid choice: 'start'"),
        (["run", "--resync-seconds", "x"], "argument --resync-seconds: not a number: 'x'"),
        (["run", "--resync-seconds", "nan"], "must be a finite number, got 'nan'"),
        (["run", "--node-grace-seconds", "0"], "argument --node-grace-seconds: must be > 0, got 0"),
        (["run", "--restart-delay-seconds", "1e300"], "must be <= 31622400, got 1e300"),
        (["run", "--restart-max-delay-seconds", "inf"], "must be a finite number, got 'inf'"),
        (["run", "--failure-limit", "0"], "argument --failure-limit: must be >= 1, got 0"),
        (["run", "--failure-limit", "2.5"], "argument --failure-limit: not a whole number"),
        (["run", "--history-retention", "1y"], "argument --history-retention: not a duration"),
        (["run", "--history-retention", "0d"], "must be more than 0 and at most 3660d, got 0d"),
        (["run", "--history-retention", "3661d"], "at most 3660d, got 3661d"),
        (["run", "-A", "-n", "team-a"], "argument -n/--namespace: not allowed with argument -A"),
        (["run", "--replicas", "3"], "fogctl: error: unrecognized arguments: --replicas 3"),
        (["node", "list", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
        (["node", "cordon"], "fogctl node cordon: error: the following arguments are required"),
        (["node", "remove", "a", "b"], "unrecognized arguments: b"),
        (["node", "register", "e", "--cpu", "1"], "required: --memory-mb, --storage-gb"),
        (
            ["node", "register", "e", "--cpu", "1", "--memory-mb", "1e9", "--storage-gb", "1"],
            "argument --memory-mb: not a whole number: '1e9'",
        ),
        (
            ["node", "register", "e", "--cpu", "3e6", "--memory-mb", "1", "--storage-gb", "1"],
            "argument --cpu: must be <= 2147483.647, got 3e6",
        ),
        (
            ["node", "register", "e", "--cpu", "1", "--memory-mb", "1", "--gpu", "2147483648"],
            "argument --gpu: must be <= 2147483647",
        ),
        (["agent", "simulate", "--tick", "0"], "argument --tick: must be > 0, got 0"),
        (["agent", "simulate", "--start-delay", "-1"], "argument --start-delay: must be >= 0"),
        (["agent", "simulate", "--tokens-file"], "argument --tokens-file: expected one argument"),
        (["agent", "simulate", "--server", "ftp://x"], "argument --server: not an http(s)://"),
        (["agent", "simulate", "--token", "a", "--tokens-file", "b"], "not allowed with argument"),
        (["serve-agents", "--listen", "nowhere"], "argument --listen: not HOST:PORT"),
        (["node", "revoke"], "the following arguments are required: name"),
        (["history", "web"], "argument NAMESPACE/NAME: expected NAMESPACE/NAME, got 'web'"),
        (["history", "team-a/"], "expected NAMESPACE/NAME, got 'team-a/'"),
        (["history", "team-a/web", "-o", "csv"], "argument -o/--output: invalid choice: 'csv'"),
        (["rollout", "status", "web"], "expected NAMESPACE/NAME, got 'web'"),
        (["rollout", "status", "a/b/c"], "expected NAMESPACE/NAME, got 'a/b/c'"),
        (["rollout", "status", "a/b", "--watch", "yes"], "argument -w/--watch: expected true"),
        (["rollout", "status", "a/b", "--timeout", "5"], "argument --timeout: not a duration"),
        (["rollout", "sideways", "a/b"], "argument ACTION: invalid choice: 'sideways'"),
        (["rollout", "undo", "web"], "expected NAMESPACE/NAME, got 'web'"),
        (["rollout", "promote", "web"], "expected NAMESPACE/NAME, got 'web'"),
        (["rollout", "undo", "a/b", "--to-revision", "-1"], "argument --to-revision: must be >= 0"),
        (["rollout", "history", "a/b", "-o", "yaml"], "argument -o/--output: invalid choice"),
        (["check", "--node-grace-seconds", "-5"], "argument --node-grace-seconds: must be > 0"),
        (["check", "--kube=yes"], "argument --kube: ignored explicit argument 'yes'"),
    ],
)
def test_a_command_line_that_cannot_be_parsed_is_one_line(args: list[str], expected: str) -> None:
    assert_one_line(fogctl(*args), USAGE, expected)


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("FOG_RESYNC_SECONDS", "soon", ["run", "--help"]),
        ("FOG_NODE_GRACE_SECONDS", "-1", ["check"]),
        ("FOG_NODE_GRACE_SECONDS", "inf", ["run", "--help"]),
    ],
)
def test_a_bad_default_from_the_environment_is_one_line_naming_the_variable(
    variable: str, value: str, args: list[str]
) -> None:
    # A command's parser reads the defaults of its own options when it is built, so a
    # command refuses a bad one even when asked only for its help.
    assert_one_line(fogctl(*args, env={variable: value}), REFUSED, f"${variable}: ")


@pytest.mark.parametrize(
    "args", [["--help"], ["node", "register", "--help"], ["run", "--help"], ["check", "-h"]]
)
def test_help_still_prints_the_usage(args: list[str]) -> None:
    result = fogctl(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fogctl")
    assert result.stderr == ""


def test_capacity_shrunk_below_what_replicas_hold_is_one_line(database_url: URL) -> None:
    register(database_url, "edge-1", "4", "8192", "100")
    place_a_replica(database_url, on="edge-1")  # 1 core, 1024 MB, 10 GB
    shrunk = fogctl(
        *("node", "register", "edge-1", "--cpu", "4", "--memory-mb", "512", "--storage-gb"),
        *("100", "--database-url", _url(database_url)),
    )
    assert_one_line(
        shrunk,
        REFUSED,
        "node edge-1: the new memory capacity is below what its replicas hold",
        "fogctl node drain",
    )
    listed = node(database_url, "list").stdout.splitlines()[1].split()
    assert listed[:4] == ["edge-1", "online", "1/4", "1024/8192"]  # nothing was changed


@pytest.mark.parametrize("name", ["", "edge\n1", "edge\t1", "\x1b[31medge"])
def test_an_empty_or_unprintable_node_name_is_one_line(database_url: URL, name: str) -> None:
    refused = fogctl(
        *("node", "register", name, "--cpu", "1", "--memory-mb", "512", "--storage-gb", "1"),
        *("--database-url", _url(database_url)),
    )
    assert_one_line(refused, REFUSED, "must be printable characters, at least one")
    assert node(database_url, "list", "-o", "json").stdout.strip() == '{\n  "nodes": []\n}'


def test_a_node_name_too_long_for_its_agent_is_one_line(database_url: URL) -> None:
    # 249 characters: "agent:" + the name still fits the history's actor column (255).
    register(database_url, "n" * 249, "1", "512", "1")
    too_long = fogctl(
        *("node", "register", "n" * 250, "--cpu", "1", "--memory-mb", "512", "--storage-gb"),
        *("1", "--database-url", _url(database_url)),
    )
    assert_one_line(too_long, REFUSED, "is 250 characters; at most 249")


# An agent API that nobody serves: these commands must fail before they would connect.
NO_SERVER = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ("[unclosed\n", "cannot read"),
        ("- edge-1\n", "expected a mapping of node names to tokens"),
        ("edge-1: [a, b]\n", "expected a mapping of node names to tokens"),
    ],
)
def test_a_bad_tokens_file_is_one_line(tmp_path: Path, content: str | None, fragment: str) -> None:
    tokens_file = tmp_path / "tokens.yaml"
    if content is not None:
        tokens_file.write_text(content)
    result = fogctl("agent", "simulate", "--tokens-file", str(tokens_file), "--server", NO_SERVER)
    assert_one_line(result, REFUSED, fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["edge-1", "--token", "hunter2"], "not a fog token"),
        (["--token", "fogn_abc"], "--token plays one node: name it"),
    ],
)
def test_a_bad_agent_token_is_one_line(args: list[str], fragment: str) -> None:
    result = fogctl("agent", "simulate", *args, "--server", NO_SERVER)
    assert_one_line(result, REFUSED, fragment)


def test_an_agent_without_a_server_is_one_line() -> None:
    env_free = fogctl("agent", "simulate", "edge-1", "--token", "fogn_abc")
    assert_one_line(
        env_free, REFUSED, "the agent API is not given: --server URL or $FOG_AGENT_SERVER"
    )


@pytest.mark.parametrize(
    ("action", "revision"), [("upgrade", "no_such_revision"), ("downgrade", "-99")]
)
def test_an_unknown_revision_is_one_line(database_url: URL, action: str, revision: str) -> None:
    result = fogctl("db", action, revision, "--database-url", _url(database_url))
    assert_one_line(result, REFUSED)


@pytest.mark.parametrize(
    "args",
    [["run"], ["check"], ["history", "team-a/web"], ["serve-agents"], ["node", "list"]],
)
def test_a_database_at_no_revision_is_one_line(empty_database_url: URL, args: list[str]) -> None:
    result = fogctl(*args, "--database-url", _url(empty_database_url))
    assert_one_line(result, REFUSED, "run 'fogctl db upgrade' first")


def test_an_unknown_sandbox_folder_is_one_line(tmp_path: Path) -> None:
    for action in ("env", "down"):
        result = fogctl("sandbox", action, "--dir", str(tmp_path / "none"))
        assert_one_line(result, REFUSED, "no sandbox in")
