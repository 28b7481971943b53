"""fog-controller benchmarks: what it costs to converge, at scale, on this machine.

Runs against real parts only: a local kube-apiserver + etcd and a throwaway PostgreSQL, the
operator as a separate `fogctl run` process, the agent API as a `fogctl serve-agents` process and
the simulated agent as a separate `fogctl agent simulate` process with zero start delay, which
speaks only to the agent API, all started by the harness the end-to-end tests use
(controller/sandbox/harness.py). Each scenario runs three times on fresh state (a new namespace
and a new database copied from a migrated template, a new operator process); the report gives
the median with min and max.

    python bench/fogbench.py [--quick] [--out bench/results/latest.json] [--markdown BENCHMARKS.md]

--quick (`make bench-quick`) is a developer's check, in minutes, that every scenario still works
end to end before an hour of `make bench`: small sizes, shorter waits where they only pad, and
one run of each scenario, which the report calls one run, not a median.

Figures are reported, never asserted: tests assert behaviour, benchmarks measure it. The
scenarios are in bench/scenarios.py (one run's set-up in bench/runs.py), the table in
bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import baseline
import report
import scale
import scenarios
import usage_history
from history import history_scale
from kubernetes_asyncio import client, config

from controller.sandbox import harness

REPO = Path(__file__).resolve().parents[1]
# In the order they run: the cheap ones first, so that a broken set-up shows in seconds.
SCENARIOS = [
    "placement",
    "usage",
    "statements",
    "single",
    "report",
    "node_loss",
    "takeover",
    "burst",
    "burst_quota",
    "kubernetes",
    "agents",
    "idle",
    "history",
]

Runner = Callable[[harness.Servers, scenarios.Sizes, client.ApiClient], Awaitable[dict[str, Any]]]
# The scenarios that need the servers, by their key in the results.
RUNNERS: dict[str, Runner] = {
    "usage": usage_history.history,
    "history": history_scale,
    "statements": lambda servers, _sizes, _api: scenarios.statements(servers),
    "single": scenarios.single,
    "report": scenarios.agent_report,
    "node_loss": scenarios.node_loss,
    "takeover": scenarios.takeover,
    "burst": scenarios.burst,
    "burst_quota": scenarios.burst_quota,
    "kubernetes": baseline.kubernetes,
    "agents": scenarios.fleet,
    "idle": scale.idle,
}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    if args.runs is not None:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.history_rows is not None:
        sizes = dataclasses.replace(sizes, history_rows=args.history_rows)
    chosen = args.only or SCENARIOS
    results: dict[str, Any] = {}
    if "placement" in chosen:
        print("placement ...", flush=True)
        results["placement"] = scenarios.placement(sizes)
    if set(chosen) & set(RUNNERS):
        with harness.servers(template="fog_bench_template") as servers:
            await config.load_kube_config(servers.plane.kubeconfig)
            api_client = client.ApiClient()
            try:
                for name, runner in RUNNERS.items():
                    if name in chosen:
                        print(f"{name} ...", flush=True)
                        began = time.monotonic()
                        results[name] = await runner(servers, sizes, api_client)
                        results[name]["wall_seconds"] = round(time.monotonic() - began, 1)
            finally:
                await api_client.close()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench-quick" if args.quick else "make bench",
        "runs": sizes.runs,
        "machine": report.machine(),
        "scenarios": results,
    }


def _page(path: Path) -> str | None:
    """The page's text, or None for a page not yet written."""
    return path.read_text() if path.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="write the table into this page, between its marks (a new page if there is none)",
    )
    parser.add_argument("--only", action="append", choices=SCENARIOS)
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs per scenario (>= 3 to report; default {scenarios.FULL.runs},"
        f" --quick {scenarios.QUICK.runs})",
    )
    parser.add_argument(
        "--history-rows", type=int, help="history rows of the history scenario (a size between)"
    )
    args = parser.parse_args()
    # Checked before the hour of runs, not after: a page that cannot take the table is refused now.
    if args.markdown:
        try:
            report.splice(_page(args.markdown), "")
        except ValueError as error:
            parser.error(f"--markdown {args.markdown}: {error}")
    began = time.monotonic()
    result = asyncio.run(main_async(args))
    result["total_seconds"] = round(time.monotonic() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown(result)
    print(table)
    if args.markdown:
        # Read again: the page may have been edited while the benchmarks ran.
        args.markdown.write_text(report.splice(_page(args.markdown), table))
    print(f"results: {args.out} ({result['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
