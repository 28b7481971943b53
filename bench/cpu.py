"""CPU time of the processes a scenario runs, read from /proc.

What a burst costs is the sum over every process taking part (API server, etcd, database,
controllers, agents, the load generator), since they share the machine's two cores; comparing
ourselves with Kubernetes means comparing those sums, process by process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from report import summary

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Fields of /proc/PID/stat after the command name: utime, stime, cutime, cstime (proc(5)).
UTIME, STIME, CUTIME, CSTIME = 11, 12, 13, 14


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def usage(pid: int) -> tuple[float, int]:
    """CPU seconds used so far and peak RSS bytes of a process."""
    fields = _stat(pid)
    cpu = (int(fields[UTIME]) + int(fields[STIME])) / CLK_TCK
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def family_cpu(pid: int) -> float:
    """CPU seconds of a process and its children, live and exited.

    PostgreSQL runs a process per connection: the postmaster's own time, what its exited
    children left it (cutime, cstime) and what its live children used so far add up to the
    server's whole cost.
    """
    fields = _stat(pid)
    total = sum(int(fields[index]) for index in (UTIME, STIME, CUTIME, CSTIME))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the listing and the read
        if int(child[1]) == pid:  # field 1 after the name: the parent's pid
            total += int(child[UTIME]) + int(child[STIME])
    return total / CLK_TCK


@dataclass(frozen=True)
class Process:
    """A process whose CPU a scenario accounts for; `family` adds its children's."""

    pid: int
    family: bool = False

    def cpu(self) -> float:
        return family_cpu(self.pid) if self.family else usage(self.pid)[0]


class Meter:
    """CPU seconds each named process spent between start() and stop()."""

    def __init__(self, processes: Mapping[str, Process]) -> None:
        self.processes = dict(processes)
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: process.cpu() for name, process in self.processes.items()}

    def stop(self) -> dict[str, float]:
        return {
            name: round(process.cpu() - self._before[name], 2)
            for name, process in self.processes.items()
        }


def postmaster_pid(data_dir: str) -> int:
    """The PostgreSQL server's pid, the first line of its postmaster.pid."""
    return int(Path(data_dir, "postmaster.pid").read_text().splitlines()[0])


def cpu_summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each process's CPU seconds over the runs (median, min, max), and their total's."""
    totals = [sum(run.values()) for run in runs]
    by_process = {name: summary([run[name] for run in runs]) for name in runs[0]}
    return {**by_process, "total": summary(totals)}
