"""Log lines for people (the default) or for log pipelines (`--log-format json`).

A log pipeline (Loki, Elasticsearch, Cloud Logging) wants one JSON object per line and fields
it can filter on without parsing prose: which object (`object`: namespace/name), which
reconcile (`reconcileID`, as controller-runtime names it: every line one reconcile wrote shares
it, so its story can be pulled out of an interleaved log), and why (`reason`, where the line
has one, such as an event's reason or an error's kind).

The object and the reconcile id come from a context variable that the controller sets around
each reconcile (`reconciling`), so that every line written inside it, whichever module writes
it, carries them without being passed along. kopf's own per-object lines carry the object too
(kopf attaches it to the record as `k8s_ref`).

Secrets: nothing here adds a value that could hold one. The database URL is never logged (its
password is masked wherever SQLAlchemy renders it), and the operator reads it from a file or
the environment, never the command line; tests/kube/test_production.py greps for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class LogFormat(StrEnum):
    """The values of `--log-format`."""

    TEXT = "text"
    JSON = "json"


_context: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "fog_reconcile", default=None
)


@contextlib.contextmanager
def reconciling(namespace: str, name: str, reconcile_id: str | None = None) -> Iterator[str]:
    """Every log line inside names this object and its reconcile id (returned; fresh if None).

    A batch's key is in several such blocks (checked, published, decided): one id for all.
    """
    reconcile_id = str(uuid.uuid4()) if reconcile_id is None else reconcile_id
    token = _context.set((f"{namespace}/{name}", reconcile_id))
    try:
        yield reconcile_id
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the current reconcile's object and id on each record (for either format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate, never drop."""
        current = _context.get()
        if current is not None:
            record.object, record.reconcileID = current
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and what is known of context."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        obj = getattr(record, "object", None) or _kopf_object(record)
        if obj:
            line["object"] = obj
        for field in ("reconcileID", "reason"):
            value = getattr(record, field, None)
            if value:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _kopf_object(record: logging.LogRecord) -> str | None:
    """namespace/name of the object a kopf per-object line is about, if it is one."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    return f"{ref.get('namespace') or ''}/{ref['name']}"


def configure(log_format: LogFormat) -> None:
    """Switch every handler of the root logger (kopf installed them) to `log_format`.

    kopf.configure() sets up the root logger first; this then adds the reconcile context to
    each handler and, for JSON, replaces the formatter, so kopf's own lines are JSON too.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(ContextFilter())
        if log_format is LogFormat.JSON:
            handler.setFormatter(JsonFormatter())
