"""`fogctl check`: prove the record's invariants from the data, in production or after a fault.

Exit 0 when no rule is broken, 1 with every offending row named when some are (and 1 with one
line when the check itself cannot run). The rules are in controller/model/invariants.py; with
`--kube` the live FogDeployments are compared with the record too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import database
from controller.cli.db_commands import add_database_url
from controller.cli.node_grace import add_node_grace
from controller.cli.tables import render
from controller.db.audit import Audit, audit
from controller.kube.inventory import live_objects
from controller.model.invariants import Violation, kube_violations

# `fogctl check` exits with this when a rule is broken (1 is also an error that stopped the
# check; scripts that need to tell them apart read `-o json`).
BROKEN = 1


def register(commands: Any) -> None:
    """Add `check` to the `fogctl` parser."""
    check = commands.add_parser(
        "check", help="verify the record's invariants; exit 1 naming every row that breaks one"
    )
    check.add_argument(
        "--kube",
        action="store_true",
        help="also compare live FogDeployments (current kubeconfig) with the record",
    )
    check.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="with --kube, compare only this namespace (repeatable), as `fogctl run -n` watches",
    )
    check.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(check)
    add_node_grace(check)
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    grace = timedelta(seconds=args.node_grace_seconds)

    async def job(sessions: async_sessionmaker[AsyncSession]) -> Audit:
        return await audit(sessions, grace=grace)

    found = database.run(args.database_url, job)
    violations = list(found.violations)
    objects: int | None = None
    if args.kube:
        live = asyncio.run(live_objects(args.namespace))
        objects = len(live)
        scope = set(args.namespace)
        recorded = [row for row in found.recorded if not scope or row.namespace in scope]
        violations += kube_violations(live=live, stored=recorded)
    checked = {"nodes": found.nodes, "deployments": found.deployments, "replicas": found.replicas}
    if objects is not None:
        checked["fogDeployments"] = objects
    if args.output == "json":
        print(json.dumps(_as_json(violations, checked), indent=2))
    else:
        print(_as_text(violations, checked))
    return BROKEN if violations else 0


def _as_json(violations: list[Violation], checked: dict[str, int]) -> dict[str, Any]:
    return {
        "ok": not violations,
        "checked": checked,
        "violations": [{**asdict(v), "rule": str(v.rule)} for v in violations],
    }


def _as_text(violations: list[Violation], checked: dict[str, int]) -> str:
    scope = ", ".join(f"{count} {what}" for what, count in checked.items())
    if not violations:
        return f"ok: no rule broken ({scope} checked)"
    rows = [[str(v.rule), v.subject, v.detail] for v in violations]
    table = render(["RULE", "SUBJECT", "DETAIL"], rows)
    return f"{table}\n{len(violations)} violations ({scope} checked)"
