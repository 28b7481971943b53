"""`fogctl cost [-n NS] [--since DURATION] [--prices FILE] [-o json]`: what replicas cost.

Read from the replica history (controller.model.cost says exactly what counts), priced by the
node classes of a prices file (controller/cli/prices.py). Money and seconds are printed as
decimal strings in JSON, so that no float rounding touches them on the way to a bill.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.cli import arguments, database, prices
from controller.cli.db_commands import add_database_url
from controller.cli.errors import CommandError
from controller.cli.tables import render
from controller.db import cost as db_cost
from controller.model.cost import Amount, CostReport, cost_report, hours, rounded, seconds

# Where the prices file is found when --prices is not given (e.g. a mounted ConfigMap).
PRICES_ENV_VAR = "FOG_PRICES_FILE"
# The table rounds money to a hundredth of a cent (JSON keeps six places): a sandbox's
# minutes of replica time cost fractions of a cent, which two places would show as 0.00.
TABLE_MONEY_PLACES = 4
# Replica time in the table: hours to two places, 36 seconds.
TABLE_HOURS_PLACES = 2


def register(commands: Any) -> None:
    """Add `cost` to the `fogctl` parser."""
    cost = commands.add_parser(
        "cost", help="cost per deployment and namespace, from the time replicas held capacity"
    )
    cost.add_argument("-n", "--namespace", help="one namespace (default: all)")
    cost.add_argument(
        "--since",
        type=arguments.duration,
        metavar="DURATION",
        help="only the last DURATION: 90s, 15m, 24h, 7d, 1h30m (default: all the history)",
    )
    cost.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help=f"node classes and their prices, YAML or JSON (default: ${PRICES_ENV_VAR})",
    )
    cost.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_database_url(cost)
    cost.set_defaults(handler=_cost)


def _cost(args: argparse.Namespace) -> int:
    path = args.prices or os.environ.get(PRICES_ENV_VAR)
    if not path:
        raise CommandError(f"no prices: give --prices FILE or set ${PRICES_ENV_VAR}")
    price_list = prices.load(Path(path))  # a bad file fails before the database is asked

    async def job(sessions: async_sessionmaker[AsyncSession]) -> db_cost.CostInput:
        async with sessions() as session:
            return await db_cost.read(session, namespace=args.namespace, since=args.since)

    read = database.run(args.database_url, job)
    report = cost_report(
        replicas=read.replicas, nodes=read.nodes, prices=price_list, window=read.window
    )
    print(json.dumps(as_json(report), indent=2) if args.output == "json" else as_table(report))
    return 0


def _amount(amount: Amount) -> dict[str, Any]:
    charge = amount.charge
    return {
        "cost": str(rounded(charge.total)),
        "costByResource": {
            "cpu": str(rounded(charge.cpu)),
            "memory": str(rounded(charge.memory)),
            "gpu": str(rounded(charge.gpu)),
            "storage": str(rounded(charge.storage)),
        },
        "heldSeconds": str(seconds(amount.held)),
        "unpricedSeconds": str(seconds(amount.unpriced)),
    }


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def as_json(report: CostReport) -> dict[str, Any]:
    """The report as `-o json` prints it (held and unpriced time in replica-seconds)."""
    return {
        "currency": report.currency,
        "window": {"start": _time(report.window.start), "end": _time(report.window.end)},
        "deployments": [
            {"namespace": namespace, "name": name, **_amount(amount)}
            for (namespace, name), amount in report.deployments.items()
        ],
        "namespaces": [
            {"namespace": namespace, **_amount(amount)}
            for namespace, amount in report.namespaces.items()
        ],
        "total": _amount(report.total),
        "unpricedNodes": list(report.unpriced_nodes),
    }


def _hours(replica_micros: int) -> str:
    return str(hours(replica_micros, TABLE_HOURS_PLACES))


def _row(namespace: str, name: str, amount: Amount) -> list[str]:
    money = str(rounded(amount.charge.total, TABLE_MONEY_PLACES))
    return [namespace, name, _hours(amount.held), _hours(amount.unpriced), money]


def as_table(report: CostReport) -> str:
    """Deployments, then each namespace's total and the grand total, then what had no price."""
    start = report.window.start
    since = f"since {start:%Y-%m-%d %H:%M:%S}" if start else "over the whole history"
    if not report.deployments:
        return f"no replica held capacity {since}"
    rows = [
        *(_row(ns, name, amount) for (ns, name), amount in report.deployments.items()),
        *(_row(ns, "(namespace total)", amount) for ns, amount in report.namespaces.items()),
        _row("(all)", "(total)", report.total),
    ]
    headers = ["NAMESPACE", "DEPLOYMENT", "REPLICA-HOURS", "UNPRICED-HOURS", report.currency]
    lines = [render(headers, rows), f"replica time held {since}, priced in {report.currency}"]
    if report.unpriced_nodes:
        lines.append(
            f"unpriced ({_hours(report.total.unpriced)} replica-hours, no class selects the node):"
            f" {', '.join(report.unpriced_nodes)}"
        )
    return "\n".join(lines)
