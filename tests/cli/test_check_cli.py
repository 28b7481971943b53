"""`fogctl check` as an administrator runs it: ok on a sound record, exit 1 naming a broken row."""

from __future__ import annotations

import json

from sqlalchemy.engine import URL
from test_db_cli import _assert_one_line_error, _url, fogctl
from test_node_cli import place_a_replica, register


def test_a_sound_record_passes_and_a_broken_one_is_named(database_url: URL) -> None:
    url = _url(database_url)
    register(database_url, "edge-1", "4", "8192", "100")
    ok = fogctl("check", "--database-url", url)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout == "ok: no rule broken (1 nodes, 0 deployments, 0 replicas checked)\n"

    # A replica written straight as running, as a writer that skips the lifecycle would:
    # its history starts at running, not pending.
    place_a_replica(database_url, on="edge-1")
    broken = fogctl("check", "--database-url", url)
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert lines[0].split() == ["RULE", "SUBJECT", "DETAIL"]
    assert lines[1].split()[0] == "replica-history"
    assert "history starts with - -> running, not - -> pending" in lines[1]
    assert lines[-1] == "1 violations (1 nodes, 1 deployments, 1 replicas checked)"

    report = json.loads(fogctl("check", "-o", "json", "--database-url", url).stdout)
    assert report["ok"] is False
    assert report["checked"] == {"nodes": 1, "deployments": 1, "replicas": 1}
    assert [v["rule"] for v in report["violations"]] == ["replica-history"]


def test_an_unreachable_database_is_one_line() -> None:
    result = fogctl("check", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    _assert_one_line_error(result)
