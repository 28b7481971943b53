"""`--log-format json`: one object per line, with the object and reconcile id from context."""

from __future__ import annotations

import json
import logging
import sys

from controller.operator.logs import ContextFilter, JsonFormatter, reconciling


def record(message: str, **extra: object) -> logging.LogRecord:
    """A record as logger.warning(message, extra=extra) makes it, passed through the filter."""
    made = logging.makeLogRecord({"name": "controller.x", "levelname": "WARNING", "msg": message})
    made.__dict__.update(extra)
    ContextFilter().filter(made)
    return made


def test_a_line_inside_a_reconcile_names_the_object_and_the_reconcile() -> None:
    with reconciling("team-a", "web") as reconcile_id:
        line = JsonFormatter().format(record("retrying", reason="DatabaseUnavailable"))
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["object"] == "team-a/web"
    assert parsed["reconcileID"] == reconcile_id
    assert parsed["reason"] == "DatabaseUnavailable"
    assert parsed["msg"] == "retrying"
    assert parsed["level"] == "warning"


def test_each_reconcile_has_its_own_id_and_lines_outside_have_none() -> None:
    with reconciling("team-a", "web") as first:
        pass
    with reconciling("team-a", "web") as second:
        pass
    assert first != second
    parsed = json.loads(JsonFormatter().format(record("idle")))
    assert "object" not in parsed
    assert "reconcileID" not in parsed


def test_kopf_per_object_lines_name_their_object() -> None:
    made = record("handler succeeded", k8s_ref={"namespace": "team-a", "name": "web"})
    assert json.loads(JsonFormatter().format(made))["object"] == "team-a/web"


def test_a_traceback_stays_on_the_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    line = JsonFormatter().format(made)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["error"]
