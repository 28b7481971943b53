"""deploy/monitoring's alerts use only metrics fog-controller exports, with labels it sets.

An alert on a misspelt metric never fires and nobody notices; this keeps the example rules,
controller/operator/metrics.py and the agent API's controller/agentapi/metrics.py in step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from controller.agentapi import metrics as agent_api
from controller.agentapi.metrics import AgentApiMetrics
from controller.operator.metrics import CONTROLLER, ELECTION, Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "prometheusrule.yaml"
# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL = {"sum", "max", "rate", "histogram_quantile", "by", "le", "and", "or", "unless", "absent"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Every series name the operator's and the agent API's registries can produce, with labels."""
    names: dict[str, set[str]] = {}
    registries = [Metrics().registry, AgentApiMetrics().registry]
    for collector in [c for r in registries for c in list(r._collector_to_names)]:
        # prometheus-client's own collectors (python_gc_*) only collect: their labels are
        # on the samples.
        describe = getattr(collector, "describe", collector.collect)
        for family in describe():
            labels = set(getattr(collector, "_labelnames", ()))
            labels |= {label for sample in family.samples for label in sample.labels}
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
    assert f'fog_agent_api_refused_total{{reason="{agent_api.FORBIDDEN}"}}' in text
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]


def test_the_agent_api_is_watched_for_refusals_and_for_being_down() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    forbidden = by_name["FogAgentApiForbiddenRequests"]
    # Any forbidden request at all: the rate over 5 minutes above zero, at once.
    assert forbidden["expr"] == (
        f'sum(rate(fog_agent_api_refused_total{{reason="{agent_api.FORBIDDEN}"}}[5m])) > 0'
    )
    assert "for" not in forbidden
    down = by_name["FogAgentApiDown"]
    assert down["expr"].startswith("absent(fog_agent_api_")
    assert down["labels"]["severity"] == "critical"
