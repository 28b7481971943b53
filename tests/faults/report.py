"""Write the figures of a `make reliability` run into RELIABILITY.md (between its markers).

Reads the JSON lines the fault suite appended (one per scenario: FOG_FAULTS_RESULTS) and the
junit report of the whole run (tests passed and failed), so that the document quotes only what
the last real run measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

BEGIN = "<!-- figures: written by `make reliability`, do not edit by hand -->"
END = "<!-- end of figures -->"


def _rows(results: Path) -> list[dict[str, object]]:
    lines = results.read_text().splitlines() if results.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def _junit(junit: Path) -> tuple[int, int, float, str]:
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests, failed = (
        int(suite.get("tests", 0)),
        int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
    )
    started = suite.get("timestamp") or f"{datetime.now(UTC):%Y-%m-%dT%H:%M}"
    return tests, failed, float(suite.get("time", 0.0)), started


def render(rows: list[dict[str, object]], junit: Path, command: str) -> str:
    tests, failed, seconds, started = _junit(junit)
    lines = [
        BEGIN,
        "",
        f"Last run: started {started[:16].replace('T', ' ')} (machine time), `{command}` on "
        f"{platform.machine()} ({len(rows)} fault scenarios recorded), Python "
        f"{platform.python_version()}: {tests} tests, {failed} failed, "
        f"{seconds / 60:.1f} min in all.",
        "",
        "| scenario | figures |",
        "| --- | --- |",
    ]
    for row in rows:
        test = str(row.pop("test"))
        figures = ", ".join(f"{key} {value}" for key, value in row.items())
        lines.append(f"| `{test}` | {figures} |")
    violations = sum(int(str(row.get("invariant_violations", 0))) for row in rows)
    lines += ["", f"Invariant violations found by `fogctl check --kube`: {violations}.", "", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--junit", type=Path, required=True)
    parser.add_argument("--document", type=Path, default=Path("RELIABILITY.md"))
    parser.add_argument("--command", default="make reliability", help="what was run, as quoted")
    args = parser.parse_args()
    text = args.document.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.document}: figure markers missing", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.document.write_text(head + render(_rows(args.results), args.junit, args.command) + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
