"""`make bench` writes its table into BENCHMARKS.md between two marks and keeps the rest.

The rest of that page is the record of measurements made by hand; an hour of benchmarks that
overwrote it would lose it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _report() -> ModuleType:
    # bench/ is a directory of scripts, not a package: load its report module by path.
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _report()


def test_the_table_replaces_only_what_lies_between_the_marks() -> None:
    page = f"intro\n{report.BEGIN}\nold table\n{report.END}\n\n## Kept\nby hand\n"

    written = report.splice(page, "new table\n")

    assert written == f"intro\n{report.BEGIN}\nnew table\n{report.END}\n\n## Kept\nby hand\n"
    assert report.splice(written, "newer\n").endswith("## Kept\nby hand\n")


def test_a_page_without_the_marks_is_refused_not_overwritten() -> None:
    refused = r"the page has no .* lines to write the table between"
    with pytest.raises(ValueError, match=refused):
        report.splice("# Benchmarks\nsomeone's notes\n", "table\n")
    with pytest.raises(ValueError, match=refused):
        report.splice(f"{report.BEGIN}\nan end mark missing\n", "table\n")


def test_a_new_page_is_the_table_between_the_marks() -> None:
    assert report.splice(None, "table\n") == f"{report.BEGIN}\ntable\n{report.END}\n"


def test_benchmarks_md_has_the_marks() -> None:
    page = (REPO / "BENCHMARKS.md").read_text()

    assert page.index(report.BEGIN) < page.index(report.END)
