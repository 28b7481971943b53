"""deploy/monitoring's alerts use only metrics the operator exports, with labels it sets.

An alert on a misspelt metric never fires and nobody notices; this keeps the example rules and
controller/operator/metrics.py in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from controller.operator.metrics import CONTROLLER, ELECTION, Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "prometheusrule.yaml"
# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL = {"sum", "max", "rate", "histogram_quantile", "by", "le", "and", "or", "unless"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every series name the operator's registry can produce, with its label names."""
    names: dict[str, set[str]] = {}
    for collector in list(Metrics().registry._collector_to_names):
        for family in collector.describe():
            labels = set(getattr(collector, "_labelnames", ()))
            for suffix in SUFFIXES.get(family.type, ("",)):
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def test_every_alert_names_an_exported_metric_with_its_labels() -> None:
    series = exported()
    for rule in rules():
        expr = rule["expr"]
        used = {
            word
            for word in re.findall(r"[a-z_]+(?=[{\[(\s)]|$)", expr)
            if word not in PROMQL and "_" in word
        }
        assert used, rule["alert"]
        for name in used:
            assert name in series, f"{rule['alert']}: {name} is not exported"
        for name, matchers in re.findall(r"([a-z_]+)\{([^}]*)\}", expr):
            for label, _ in re.findall(r'([a-z_]+)="([^"]*)"', matchers):
                assert label in series[name], f"{rule['alert']}: {name} has no label {label}"


def test_label_values_are_the_operators_own() -> None:
    text = RULES.read_text()
    assert f'controller="{CONTROLLER}"' in text
    assert f'name="{ELECTION}"' in text
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
