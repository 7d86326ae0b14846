"""The Grafana dashboard: valid JSON, wired to the provisioned data source, and every metric a
panel (or template variable) queries is one the code exports (consumer.metrics, trainer.metrics)
or Prometheus' own `up`. A renamed metric breaks this test instead of a panel silently going
blank."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry

import consumer.metrics
import trainer.metrics
from tests.deploy.conftest import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "levy-drift.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2"}
# Series names each metric type exposes (the _created series exist but nothing should query
# them).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",), "summary": ("_sum", "_count", ""), "info": ("_info",)}


def exported_names(*registries: CollectorRegistry) -> set[str]:
    """Queryable series names. Uses metric families, not samples: a labelled metric with no
    children yet has no samples but is still part of the contract."""
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not function calls, keywords,
    label names in matchers or grouping clauses, range durations or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables ($__rate_interval, $signal)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        following = expr[match.end():].lstrip()
        if word.lower() in KEYWORDS or following.startswith("("):
            continue
        if re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
        yield f"variable {variable['name']!r}", inner.group(1) if inner else query


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_expression_parser_sees_through_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, signal) (rate(a_bucket{signal=~"$signal"}'
            '[$__rate_interval]))) / on (job) group_left (model) b_total offset 5m > bool 3'
            ' or time() - max by (model) (c_seconds)')
    assert metric_names(expr) == {"a_bucket", "b_total", "c_seconds"}


def test_exported_names_include_suffixes() -> None:
    names = exported_names(consumer.metrics.REGISTRY, trainer.metrics.REGISTRY)
    assert "levydrift_consumer_records_total" in names
    assert "levydrift_consumer_batch_duration_seconds_bucket" in names
    assert "levydrift_detector_statistic" in names
    assert "levydrift_trainer_last_promotion_timestamp_seconds" in names


def test_dashboard_queries_only_exported_metrics() -> None:
    known = exported_names(consumer.metrics.REGISTRY, trainer.metrics.REGISTRY) | {"up"}
    seen, problems = set(), []
    for where, expr in queries(load()):
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name in sorted(names - known):
            problems.append(f"{where}: {name} is not exported by the code")
        seen |= names
    assert not problems, "\n".join(problems)
    # The panels the operations contract asks for are present.
    for required in ("levydrift_consumer_records_total", "levydrift_consumer_lag_records",
                     "levydrift_consumer_dead_letters_total", "levydrift_drift_events_total",
                     "levydrift_detector_statistic", "levydrift_detector_threshold",
                     "levydrift_consumer_champion_version", "levydrift_trainer_retrains_total",
                     "levydrift_trainer_retrain_duration_seconds_bucket"):
        assert required in seen, f"no panel shows {required}"


def test_dashboard_structure_and_datasource() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCES.read_text(), re.M).group(1)
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
