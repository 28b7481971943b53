"""What the benchmark reports: the statistics of runs, the machine, and the BENCHMARKS.md table.

Kept apart from the scenarios so that the table's format, which BENCHMARKS.md and readers of
bench/results/*.json rely on, changes only here, and a scenario only returns its figures.
"""

from __future__ import annotations

import os
import platform
import statistics
from importlib.metadata import version
from pathlib import Path
from typing import Any

from controller.sandbox import binaries, postgres


def summary(values: list[float]) -> dict[str, float]:
    """Median of the runs, with min and max; one run's value alone, since it is no median.

    One run is what `make bench-quick` does: a check that every scenario works end to end,
    whose figures must not read as the medians `make bench` reports.
    """
    if len(values) == 1:
        return {"one_run": round(values[0], 3)}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def middle(figure: dict[str, float]) -> float:
    """The median of a summary, or its one run's value."""
    return figure["one_run"] if "one_run" in figure else figure["median"]


def of_runs(figure: dict[str, float], *, plural: bool = False) -> str:
    """What `middle` gives of a summary, for a label: "median(s)" or "one run"."""
    if "one_run" in figure:
        return "one run"
    return "medians" if plural else "median"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0-100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // 1024
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    versions = binaries.pinned_versions()

    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_mb": memory,
        "python": platform.python_version(),
        "kubernetes": versions.kubernetes,
        "etcd": versions.etcd,
        "postgresql": Path(postgres.find_bin_dir()).parent.name,
        "kopf": version("kopf"),
        "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"),
    }


def cell(figure: dict[str, float]) -> str:
    if "one_run" in figure:
        return f"{figure['one_run']}"
    return f"{figure['median']} ({figure['min']} - {figure['max']})"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


Figure = tuple[str, dict[str, float], str]  # what, the runs' summary, the target


def _pair(scenario: str, first: Figure, second: Figure) -> list[str]:
    """A scenario's two rows: its name on the first only, as the table groups them."""
    return [
        row(scenario, first[0], cell(first[1]), first[2]),
        f"| | {second[0]} | {cell(second[1])} | {second[2]} |",
    ]


def _burst_rows(b: dict[str, Any]) -> list[str]:
    """The burst: how fast, how many API writes, and how large the operator's batches were."""
    label = f"Burst: {b['nodes']} nodes, {b['deployments']} x {b['replicas_each']} replicas"
    lines = [
        f"| {label} | seconds until all Ready | {cell(b['seconds_to_all_ready'])} | |",
        row("", "replicas placed per second", cell(b["replicas_placed_per_second"]), ">= 1,000"),
        f"| | replicas Ready per second | {cell(b['replicas_ready_per_second'])} | >= 700 |",
        f"| | apply-to-Ready p50 (s) | {cell(b['apply_to_ready_p50_s'])} | |",
        f"| | apply-to-Ready p99 (s) | {cell(b['apply_to_ready_p99_s'])} | <= 15 |",
    ]
    if "api_writes_per_object" in b:
        writes = cell(b["api_writes_per_object"])
        lines.append(row("", "API writes per object (FogDeployments, Events)", writes, ""))
    if "batch_keys_until_placed" in b:
        batches = b["batch_keys_until_placed"]
        sizes = f"{cell(batches['mean'])}; p90 <= {cell(batches['p90_at_most'])}"
        lines.append(row("", "operator keys per batch until placed: mean; p90", sizes, ""))
    return lines


def _latency_rows(s: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "burst" in s:
        lines += _burst_rows(s["burst"])
    if "burst_quota" in s:
        lines += _quota_rows(s["burst_quota"], s.get("burst"))
    if "kubernetes" in s:
        lines += _baseline_rows(s["kubernetes"], s.get("burst"))
    if "single" in s:
        g = s["single"]
        lines += _pair(
            f"Single: 10 replicas, {g['repeats']} times"
            + (f", started {g['pace_seconds']} s apart or more" if g.get("pace_seconds") else "")
            + (f" after {g['warmups']} untimed" if g.get("warmups") else ""),
            ("apply-to-Ready p50 (s)", g["apply_to_ready_p50_s"], ""),
            ("apply-to-Ready p99 (s)", g["apply_to_ready_p99_s"], "<= 0.3"),
        )
    if "report" in s:
        r = s["report"]
        lines += _pair(
            f"Agent report -> status ({r['samples']} reports)",
            ("p50 (s)", r["report_to_status_p50_s"], ""),
            ("p99 (s)", r["report_to_status_p99_s"], "<= 0.1"),
        )
        lines.append(
            row("", "p99 until the agent API answered (s)", cell(r["report_answered_p99_s"]), "")
        )
    if "agents" in s:
        lines += _fleet_rows(s["agents"])
    if "node_loss" in s:
        n = s["node_loss"]
        lines += _pair(
            f"Node loss: 1 of {n['nodes']} nodes silent, grace {n['grace_seconds']} s",
            ("seconds until its replica failed (NodeLost)", n["seconds_to_node_lost"], ""),
            ("seconds until Ready again", n["seconds_to_ready_again"], ""),
        )
    if "takeover" in s:
        t = s["takeover"]
        lines += _pair(
            f"Leader SIGKILLed, 2 operators, lease {t['lease_seconds']} s",
            ("seconds until the standby leads", t["seconds_to_new_leader"], ""),
            ("seconds until a change made at the kill runs", t["seconds_to_change_running"], ""),
        )
    return lines


def _quota_rows(q: dict[str, Any], burst: dict[str, Any] | None) -> list[str]:
    """The burst again with a FogQuota in its namespace that it never reaches (issue 17)."""
    rows = _pair(
        f"Burst with a FogQuota ({q['quota']['replicas']:g} replicas, never reached)",
        ("replicas placed per second", q["replicas_placed_per_second"], ""),
        ("seconds until all Ready", q["seconds_to_all_ready"], ""),
    )
    if burst:
        on, off = q["replicas_placed_per_second"], burst["replicas_placed_per_second"]
        label = f"placed per second, quota on / off ({of_runs(on, plural=True)})"
        rows.append(row("", label, f"{middle(on) / middle(off):.2f}", ""))
    return rows


def _cpu_cell(cpu: dict[str, dict[str, float]]) -> str:
    """Median CPU seconds of each process (or one run's), largest first, then the total."""
    parts = sorted(
        ((name, middle(figure)) for name, figure in cpu.items() if name != "total"),
        key=lambda part: -part[1],
    )
    listed = ", ".join(f"{name} {seconds:g}" for name, seconds in parts)
    return f"{middle(cpu['total']):g} ({listed})"


def _baseline_rows(k: dict[str, Any], burst: dict[str, Any] | None) -> list[str]:
    """Kubernetes' own controllers on the same burst (issue 15), and how we compare."""
    label = (
        f"Kubernetes {k['version']} on the same burst: {k['deployments']} Deployments x "
        f"{k['replicas_each']} on {k['nodes']} fake nodes (kube-controller-manager's deployment"
        " and replicaset controllers, kube-scheduler, client QPS unthrottled)"
    )
    lines = [
        row(label, "seconds until all pods bound", cell(k["seconds_to_all_bound"]), ""),
        row("", "pods bound per second", cell(k["pods_bound_per_second"]), ""),
        row(
            "",
            f"CPU seconds until all bound, {of_runs(k['cpu_seconds']['total'])} (by process)",
            _cpu_cell(k["cpu_seconds"]),
            "",
        ),
        row("", "CPU ms per pod, all processes", cell(k["cpu_ms_per_pod"]), ""),
    ]
    if burst and "cpu_seconds_until_placed" in burst:
        ours, theirs = burst["replicas_placed_per_second"], k["pods_bound_per_second"]
        cpu = burst["cpu_seconds_until_placed"]
        lines += [
            row(
                "Ours, the burst above",
                f"CPU seconds until all placed, {of_runs(cpu['total'])} (by process)",
                _cpu_cell(cpu),
                "",
            ),
            row("", "CPU ms per replica, all processes", cell(burst["cpu_ms_per_replica"]), ""),
            row(
                "",
                "ratio: our replicas placed/s over its pods bound/s"
                f" ({of_runs(ours, plural=True)})",
                f"{middle(ours) / middle(theirs):.2f}",
                ">= 4",
            ),
        ]
    return lines


def _fleet_rows(a: dict[str, Any]) -> list[str]:
    """The fleet scenario (issue 14): one agent process, thousands of nodes, the burst on top."""
    label = (
        f"{a['nodes']:,} nodes heartbeating every {a['heartbeat_seconds']} s, one agent"
        f" process; then {a['deployments']} x {a['replicas_each']} replicas"
    )
    figures = [
        ("agent API CPU at rest (% of one core)", a["agent_api_cpu_percent_at_rest"], ""),
        ("agent CPU at rest (% of one core)", a["agent_cpu_percent_at_rest"], ""),
        ("report-to-status p99 at rest (s)", a["report_to_status_p99_s_at_rest"], "<= 0.1"),
        ("report answered by the API, p99 at rest (s)", a["report_answered_p99_s_at_rest"], ""),
        ("seconds until all Ready", a["seconds_to_all_ready"], ""),
        ("agent API CPU during the burst (s)", a["agent_api_cpu_seconds_burst"], ""),
        ("agent API CPU during the burst (% of one core)", a["agent_api_cpu_percent_burst"], ""),
        ("agent CPU during the burst (% of one core)", a["agent_cpu_percent_burst"], ""),
        ("report-to-status p99 during the burst (s)", a["report_to_status_p99_s_burst"], ""),
        ("report answered by the API, p99, burst (s)", a["report_answered_p99_s_burst"], ""),
    ]
    lines = [
        row(label if i == 0 else "", what, cell(f), target)
        for i, (what, f, target) in enumerate(figures)
    ]
    peaks = ", ".join(f"{what} {count}" for what, count in a["peaks"].items())
    lines.append(row("", "peaks over the runs (connections, operator queue depth)", peaks, ""))
    return lines


def _cost_rows(s: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "idle" in s:
        i = s["idle"]
        label = (
            f"Idle: {i['objects']:,} Ready objects x {i['replicas_each']} replicas on"
            f" {i['nodes']:,} nodes ({i.get('agent_processes', 1)} agent processes"
            + (f", usage sampled every {u} s" if (u := i.get("agent_usage_seconds")) else "")
            + f"), {i['seconds']:.0f} s"
        )
        lines += [
            row(
                label,
                "operator CPU (% of one core)",
                cell(i["operator_cpu_percent_of_one_core"]),
                "< 5",
            ),
            f"| | operator peak RSS (MB) | {i['operator_peak_rss_mb']} | < 1,500 |",
            row(
                "",
                "operator restarted: seconds until every object reconciled once",
                cell(i["seconds_restart_to_all_reconciled"]),
                "< 120",
            ),
            row(
                "",
                "operator restarted: seconds until kopf's watch handed over its listing",
                cell(i["seconds_restart_to_watch_listed"])
                if "seconds_restart_to_watch_listed" in i
                else "not measured",
                "",
            ),
            row(
                "",
                "API writes (FogDeployments, Events) the restart caused",
                cell(i["api_writes_on_restart"]),
                "0",
            ),
            row(
                "",
                "operator peak RSS after the restarts (MB)",
                i["operator_peak_rss_mb_after_restart"],
                "< 1,500",
            ),
        ]
    if "statements" in s:
        for replicas, figures in s["statements"]["by_replicas"].items():
            lines.append(
                row(
                    f"Statements per reconcile, {replicas} replicas",
                    "create / after reports / steady",
                    f"{figures['create']} / {figures['after_agents_report']} / {figures['steady']}",
                    "<= 10, flat",
                )
            )
    if "usage" in s:
        lines += _usage_rows(s["usage"])
    if "history" in s:
        lines += _history_rows(s["history"])
    if "placement" in s:
        p = s["placement"]
        for strategy, figure in p["microseconds_per_placement"].items():
            label = f"Pure placement: {p['replicas']:,} replicas on {p['nodes']:,} nodes"
            lines.append(
                row(f"{label} ({strategy})", "microseconds per placement", cell(figure), "")
            )
    return lines


def _usage_rows(u: dict[str, Any]) -> list[str]:
    """Issue 17: a year of usage rollups and what reading and writing them costs (one run)."""

    def ms(figure: dict[str, float]) -> str:
        return f"{figure['median_ms']} ({figure['min_ms']} - {figure['max_ms']})"

    label = (
        f"Usage history: a year of hourly rollups of {u['replicas']:,} replicas in"
        f" {u['deployments']:,} deployments ({u['rollup_rows']:,} rows, {u['rollup_megabytes']} MB)"
    )
    batch = u["record_batch"]
    return [
        row(
            label,
            "one deployment's summary over the year (ms, 25 deployments)",
            ms(u["summary"]),
            "< 1,000",
        ),
        row(
            "",
            f"one sampling round, a batch of {batch['samples']:,} (ms, first / again)",
            f"{batch['first_ms']} / {batch['again_ms']}",
            "",
        ),
        row(
            "",
            "fogctl top deployments / nodes, every replica (ms)",
            f"{u['top_deployments']['median_ms']} / {u['top_nodes']['median_ms']}",
            "",
        ),
    ]


def _history_rows(h: dict[str, Any]) -> list[str]:
    """Issue 15 item 6: `fogctl history NS/NAME` over many rows in monthly partitions."""
    label = (
        f"History: {h['rows']:,} rows over {h['months']} months ({h['partitions_per_table']}"
        f" partitions per table, {h['megabytes']:,} MB), {h['entries_per_query']} per deployment"
    )
    return [
        row(label, "fogctl history NS/NAME, p99 (ms)", cell(h["p99_ms"]), "< 10"),
        row("", "fogctl history NS/NAME, p50 (ms)", cell(h["p50_ms"]), ""),
        row(
            "",
            "first query on a new connection (ms)",
            cell(h["first_query_on_a_new_connection_ms"]),
            "",
        ),
    ]


def _each_figure(runs: int) -> str:
    """What each figure of the table is: a median of the runs, or one run's value."""
    if runs == 1:
        return (
            "Each figure: one run (a check that every scenario works end to end, as"
            " `make bench-quick` runs; not a median, and not a reported figure)."
        )
    return f"Each figure: median of {runs} runs (min - max)."


# Where the table goes in BENCHMARKS.md. The rest of that page is the record kept by hand (runs of
# single scenarios, earlier figures and what they showed); `make bench` rewrites only what lies
# between these two lines, so that an hour of benchmarks cannot wipe out that record.
BEGIN = "<!-- written by make bench (bench/fogbench.py --markdown) from here ... -->"
END = "<!-- ... to here; what follows is kept as it is -->"


def splice(page: str | None, table: str) -> str:
    """`page` with the part between BEGIN and END replaced by `table`; a new page if None.

    Raises ValueError, naming the marks, for a page that lacks them: such a page is someone's
    own writing, and overwriting it would lose it.
    """
    if page is None:
        return f"{BEGIN}\n{table}{END}\n"
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page has no {BEGIN!r} ... {END!r} lines to write the table between")
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md page for one result."""
    s = result["scenarios"]
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {result['date']} by `{result['command']}` on {m['cores']} cores "
        f"({m['cpu']}), {m['memory_mb']} MiB; Python {m['python']}, Kubernetes "
        f"{m['kubernetes']}, etcd {m['etcd']}, PostgreSQL {m['postgresql']} (fsync off, "
        f"throwaway), kopf {m['kopf']}, SQLAlchemy {m['sqlalchemy']}, psycopg {m['psycopg']}.",
        "Everything (API server, etcd, PostgreSQL, operator, agent, load generator) shares the "
        f"machine. {_each_figure(result['runs'])}",
        "",
        "| Scenario | Figure | Result | Target |",
        "| --- | --- | --- | --- |",
    ]
    lines += _latency_rows(s) + _cost_rows(s)
    return "\n".join(lines) + "\n"
