"""`fogctl cost` as a person runs it: a bad prices file or DURATION is one line; output formats.

The figures themselves are checked against hand computations in tests/unit/test_cost_model.py,
tests/db/test_cost_history.py and, end to end, tests/kube/test_cost_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL
from test_bad_input import REFUSED, USAGE, assert_one_line
from test_db_cli import _url, fogctl
from test_node_cli import place_a_replica, register

from controller.cli import prices

PRICES = """\
currency: EUR
classes:
  - name: edge
    nodeSelector: {matchLabels: {tier: edge}}
    prices: {cpuCoreHour: "0.03", memoryGBHour: "0.004", storageGBHour: "0.0001"}
"""


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("24", "argument --since: not a duration like 90s, 15m, 24h, 7d or 1h30m: '24'"),
        ("1.5h", "not a duration like"),
        ("-1h", "expected one argument"),  # argparse reads -1h as a flag
        ("1y", "not a duration like"),
        ("0s", "argument --since: must be more than 0 and at most 366d, got 0s"),
        ("367d", "must be more than 0 and at most 366d, got 367d"),
    ],
)
def test_a_bad_since_is_one_line(since: str, expected: str) -> None:
    assert_one_line(fogctl("cost", "--since", since), USAGE, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("currency: eur\nclasses: []", "prices file {path}: currency: String should match"),
        ("currency: EUR\nclasses: []", "classes: List should have at least 1 item"),
        (
            "currency: EUR\nclasses: [{name: a, nodeSelector: {}, prices: {cpuCoreHour: -1}}]",
            "classes[0].prices.cpuCoreHour: Input should be greater than or equal to 0",
        ),
        (
            "currency: EUR\nclasses: [{name: a, nodeSelector: {}, prices: {cpuCorehour: 1}}]",
            "classes[0].prices.cpuCorehour: Extra inputs are not permitted",
        ),
        (
            "currency: EUR\nclasses: [{name: a, nodeSelector: {}, prices: {gpuUnitHour: .nan}}]",
            "classes[0].prices.gpuUnitHour: Input should be a finite number",
        ),
        (
            "currency: EUR\nclasses:\n- name: a\n  nodeSelector:\n"
            "    matchExpressions: [{key: gpu, operator: In}]\n  prices: {}",
            "classes[0].nodeSelector.matchExpressions[0]: operator In needs at least one value",
        ),
        (
            "currency: EUR\nclasses:\n- {name: a, nodeSelector: {}, prices: {}}\n"
            "- {name: a, nodeSelector: {}, prices: {}}",
            "classes: class names must be unique; repeated: a",
        ),
        ("[1, 2", "prices file {path} is not YAML or JSON at line 1, column 6"),
        ("just words", "prices file {path}: expected a mapping with currency and classes"),
    ],
)
def test_a_bad_prices_file_is_one_line_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    result = fogctl("cost", "--prices", str(path))
    assert_one_line(result, REFUSED, expected.format(path=path))


def test_no_prices_at_all_is_one_line(tmp_path: Path) -> None:
    assert_one_line(fogctl("cost"), REFUSED, "no prices: give --prices FILE or set")
    missing = tmp_path / "nowhere.yaml"
    assert_one_line(
        fogctl("cost", env={"FOG_PRICES_FILE": str(missing)}),
        REFUSED,
        f"cannot read prices file {missing}: No such file or directory",
    )


def test_the_last_hour_of_a_replica_running_for_two(tmp_path: Path, database_url: URL) -> None:
    register(database_url, "edge-1", "4", "8192", "100", "--label", "tier=edge")
    place_a_replica(database_url, on="edge-1")  # 1 core, 1 GiB, 10 GB, running
    with psycopg.connect(_url(database_url).replace("+psycopg", ""), autocommit=True) as db:
        db.execute("UPDATE replica_status_history SET changed_at = now() - interval '2 hours'")
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    common = ("--since", "1h", "--database-url", _url(database_url))

    printed = fogctl("cost", "--prices", str(prices), "-o", "json", *common)
    assert printed.returncode == 0, printed.stderr
    report = json.loads(printed.stdout)
    # One hour of 1 core at 0.03, 1 GB at 0.004 and 10 GB at 0.0001: 0.035 EUR.
    line = {
        "cost": "0.035000",
        "costByResource": {
            "cpu": "0.030000",
            "memory": "0.004000",
            "gpu": "0.000000",
            "storage": "0.001000",
        },
        "heldSeconds": "3600.000000",
        "unpricedSeconds": "0.000000",
    }
    assert report["currency"] == "EUR"
    assert report["deployments"] == [{"namespace": "team-a", "name": "web", **line}]
    assert report["namespaces"] == [{"namespace": "team-a", **line}]
    assert report["total"] == line
    assert report["unpricedNodes"] == []

    table = fogctl("cost", *common, env={"FOG_PRICES_FILE": str(prices)})
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "DEPLOYMENT", "REPLICA-HOURS", "UNPRICED-HOURS", "EUR"]
    assert lines[1].split() == ["team-a", "web", "1.00", "0.00", "0.0350"]
    assert lines[2].split() == ["team-a", "(namespace", "total)", "1.00", "0.00", "0.0350"]
    assert lines[3].split() == ["(all)", "(total)", "1.00", "0.00", "0.0350"]

    elsewhere = fogctl("cost", "-n", "team-b", *common, env={"FOG_PRICES_FILE": str(prices)})
    assert elsewhere.stdout.startswith("no replica held capacity since ")


def test_the_example_prices_file_is_valid_and_first_match_wins() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "prices.yaml"
    price_list = prices.load(example)
    assert [c.name for c in price_list.classes] == ["gpu", "edge", "core"]
    assert price_list.class_for({"tier": "edge", "accelerator": "nvidia-t4"}).name == "gpu"
    assert price_list.class_for({"tier": "datacenter"}).name == "core"
    assert price_list.class_for({"zone": "a"}) is None
