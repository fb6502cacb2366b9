"""The Grafana dashboard deploy/grafana/recstream.json: its structure (Prometheus datasource as a
variable, unique panel ids, a grid position for every panel), every panel's PromQL parses
(promtool, from Debian's prometheus package; missing promtool fails, never skips) and names only
series a real :class:`recstream.adapters.metrics.Metrics` exports, with their labels.

The checkers are plain functions of the dashboard's JSON; the last tests run them on a fake
dashboard with known faults, so a checker that accepts everything fails here. Grafana's own
schema (unknown fields, wrong types) is test_grafana_import.py's part."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "recstream.json"

# Every panel and query variable queries through this datasource variable, so the dashboard
# works with whatever the Prometheus datasource is called where it is imported.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in for its global variables when it runs a query; any valid value parses.
GRAFANA_GLOBALS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Series that Prometheus adds to every target, not the worker.
PROMETHEUS_SERIES = {"up"}
# Labels that Prometheus adds (job, instance) or histograms carry (le).
TARGET_LABELS = {"job", "instance", "le"}
# Every selector of a worker series filters by these, so the variables choose the workers.
FILTERS = ('job=~"$job"', 'instance=~"$instance"')

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
# A worker series, with its matchers when it has any: the prefixes of recstream's own metrics
# and of prometheus_client's process and platform collectors.
WORKER_SELECTOR = re.compile(r"\b((?:recstream|process|python)_\w+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
RATE_OF = re.compile(r"\b(?:rate|irate|increase)\s*\(\s*([a-zA-Z_:][\w:]*)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard: a panel target or a query variable."""

    where: str  # "panel 12 'Events by type' A" or "variable instance", for messages
    record: str  # a valid metric name, to name the expression in promtool's rules file
    expr: str  # as in the JSON, with the Grafana variables
    legend: str = ""


# --- the dashboard's model ---------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    found = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            ref = target.get("refId", "")
            found.append(
                Query(
                    where=f"panel {panel.get('id')} {panel.get('title', '')!r} {ref}",
                    record=f"panel_{panel.get('id')}_{ref}",
                    expr=target.get("expr", ""),
                    legend=target.get("legendFormat", ""),
                )
            )
    for name, variable in variables(dashboard).items():
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query)
        # label_values(selector, label): the selector is PromQL (the short form has no selector)
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", text, re.S)
        found.append(
            Query(f"variable {name}", f"variable_{name}", match.group(1) if match else text)
        )
    return found


def substitute(expr: str, dashboard: Mapping[str, Any]) -> str:
    """The expression as Grafana sends it, with a sample value for each variable; ValueError
    for a variable the dashboard does not define."""
    defined = variables(dashboard)

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in GRAFANA_GLOBALS:
            return GRAFANA_GLOBALS[name]
        variable = defined.get(name)
        if variable is None or variable.get("type") == "datasource":
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        if variable.get("type") in ("interval", "custom"):
            return str(variable.get("query", "")).split(",")[0].strip()
        return "127.0.0.1:6066" if name == "instance" else "recstream"

    return VARIABLE.sub(value, expr)


# --- the worker's metrics ----------------------------------------------------------------------


def exported_series() -> tuple[set[str], set[str]]:
    """(series names, label names) that a real worker's /metrics has, or will have once its
    labelled metrics have children: counters as ``_total``, histograms as their
    ``_bucket``/``_sum``/``_count`` series (prometheus_client lists families by their base
    name)."""
    from prometheus_client.metrics import MetricWrapperBase

    from recstream.adapters.metrics import Metrics

    metrics = Metrics()
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update(family.name + s for s in ("", "_sum", "_count"))
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
    labels = set(TARGET_LABELS)
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            labels.update(metric._labelnames)  # no public accessor; stable in prometheus_client
    return names, labels


# --- the checkers: each returns its complaints, [] when all is well -----------------------------


def promtool_exe() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: run `make stack` as root (apt-get install -y prometheus)")
    return exe


def promql_errors(dashboard: Mapping[str, Any]) -> list[str]:
    """promtool's verdict on every expression, variables substituted: each one becomes a
    recording rule of a temporary rules file (this promtool has no plain "parse" command;
    `check rules` parses every rule's PromQL and reports each failure with the rule's name)."""
    problems: list[str] = []
    rules = []
    where = {}
    for query in queries(dashboard):
        if not query.expr.strip():
            problems.append(f"{query.where}: empty expression")
            continue
        try:
            expr = substitute(query.expr, dashboard)
        except ValueError as e:
            problems.append(f"{query.where}: {e}")
            continue
        rules.append({"record": query.record, "expr": expr})
        where[query.record] = query.where
    if not rules:
        return [*problems, "no expression to check"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard.rules.yml"
        # JSON is YAML: no quoting of PromQL's quotes and braces to get wrong.
        path.write_text(json.dumps({"groups": [{"name": "grafana", "rules": rules}]}, indent=1))
        result = subprocess.run(
            [promtool_exe(), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        named = [w for record, w in where.items() if re.search(rf'"{record}"', output)]
        problems.append(f"promtool check rules failed for {named or 'the file'}:\n{output}")
    return problems


def metric_errors(dashboard: Mapping[str, Any], exported: set[str], labels: set[str]) -> list[str]:
    """Metric and label names the worker does not export, selectors without the job/instance
    filters, rate() of a gauge."""
    problems = []
    for query in queries(dashboard):
        expr = query.expr
        selectors = WORKER_SELECTOR.findall(expr)  # [(name, matchers or "")]
        names = {name for name, _ in selectors}
        # any other name{...}: Prometheus' own series (up) or a metric nobody exports
        others = [(n, m) for n, m in SELECTOR.findall(expr) if n not in names]
        selectors += others
        names.update(name for name, _ in others if name not in PROMETHEUS_SERIES)
        for name in sorted(names - exported):
            problems.append(f"{query.where}: {name} is not a series the worker exports")
        if query.record.startswith("panel_"):
            if not selectors:
                problems.append(f"{query.where}: queries no metric")
            for name, matchers in selectors:
                missing = [f for f in FILTERS if f not in matchers]
                if missing:
                    problems.append(f"{query.where}: {name} is not filtered by {missing}")
        used = {m for _, matchers in selectors for m in MATCHER.findall(matchers)}
        for group in GROUPING.findall(expr):
            used.update(label.strip() for label in group.split(",") if label.strip())
        used.update(LEGEND_LABEL.findall(query.legend))
        for label in sorted(used - labels):
            problems.append(f"{query.where}: no worker metric has the label {label!r}")
        for name in RATE_OF.findall(expr):
            if not re.search(r"_(total|bucket|sum|count)$", name):
                problems.append(f"{query.where}: rate()/increase() of {name}, not a counter")
    return problems


def structure_errors(dashboard: Mapping[str, Any]) -> list[str]:
    """What would stop the JSON from importing as-is or leave a panel without data."""
    problems = []
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"no {key!r}")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append("schemaVersion < 36: datasources as {type, uid} need Grafana 8.3+")
    if dashboard.get("id") is not None:
        problems.append("'id' must be null: an import gets its own")
    if dashboard.get("__inputs"):
        problems.append("__inputs: the datasource is the 'datasource' variable, not an input")
    ds = variables(dashboard).get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no variable 'datasource' of type datasource, query prometheus")
    for name, variable in variables(dashboard).items():
        if variable.get("type") == "query" and variable.get("datasource") != DATASOURCE:
            problems.append(f"variable {name}: datasource is not {DATASOURCE}")
    panel_types = {r["id"] for r in dashboard.get("__requires", []) if r.get("type") == "panel"}
    ids = []
    boxes = []
    for panel in iter_panels(dashboard.get("panels", [])):
        name = f"panel {panel.get('id')} {panel.get('title', '')!r}"
        ids.append(panel.get("id"))
        if not isinstance(panel.get("id"), int):
            problems.append(f"{name}: no integer id")
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        pos = panel.get("gridPos")
        if not isinstance(pos, dict) or not all(isinstance(pos.get(k), int) for k in "hwxy"):
            problems.append(f"{name}: gridPos needs integer h, w, x, y")
        elif not (pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24):
            problems.append(f"{name}: gridPos {pos} is off the 24-column grid")
        elif panel in dashboard.get("panels", []):
            boxes.append((name, pos))
        if panel.get("type") == "row":
            continue
        if panel.get("type") not in panel_types:
            problems.append(f"{name}: type {panel.get('type')!r} not in __requires")
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{name}: datasource {panel.get('datasource')} is not {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{name}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{name}: refIds {refs} are not unique")
        for target in targets:
            if target.get("datasource") != DATASOURCE:
                problems.append(f"{name} {target.get('refId')}: datasource is not {DATASOURCE}")
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates:
        problems.append(f"duplicate panel ids {duplicates}")
    for i, (name, a) in enumerate(boxes):
        for other, b in boxes[i + 1 :]:
            if (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            ):
                problems.append(f"{name} overlaps {other}")
    return problems


# --- the dashboard -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def exported() -> tuple[set[str], set[str]]:
    return exported_series()


def test_the_dashboard_s_structure_is_sound(dashboard: dict[str, Any]) -> None:
    assert structure_errors(dashboard) == []
    rows = [p["title"] for p in iter_panels(dashboard["panels"]) if p["type"] == "row"]
    for row in (
        "Throughput",
        "Latency",
        "Quality",
        "Errors & DLQ",
        "Kafka & Redis health",
        "Encoder",
        "Checkpoints",
        "Worker state",
    ):
        assert row in rows


def test_every_expression_parses(dashboard: dict[str, Any]) -> None:
    assert len(queries(dashboard)) > 40
    assert promql_errors(dashboard) == []


def test_every_expression_names_only_what_the_worker_exports(
    dashboard: dict[str, Any], exported: tuple[set[str], set[str]]
) -> None:
    assert metric_errors(dashboard, *exported) == []


def test_the_issue_s_panels_are_there(dashboard: dict[str, Any]) -> None:
    """Issue 13: throughput by event type, event → list latency quantiles, consumer lag per
    partition, DLQ rate by reason, online hr/ndcg, encoder queue and batch time, Redis and Kafka
    send errors, checkpoint age."""
    exprs = "\n".join(q.expr for q in queries(dashboard))
    for needle in (
        r"sum by \(type\) \(rate\(recstream_events_total\{",
        r"histogram_quantile\(0\.99, sum by \(le\) \(rate\("
        r"recstream_event_to_recommendation_seconds_bucket\{",
        r"max by \(topic, partition\) \(recstream_consumer_lag\{",
        r"sum by \(reason\) \(rate\(recstream_dlq_total\{",
        r"recstream_online_hit_rate\{",
        r"recstream_online_ndcg\{",
        r"recstream_encode_queue_items\{",
        r"rate\(recstream_encode_batch_seconds_bucket\{",
        r"rate\(recstream_redis_errors_total\{",
        r"rate\(recstream_kafka_send_errors_total\{",
        r"time\(\) - recstream_last_checkpoint_timestamp_seconds\{",
        r"rate\(recstream_checkpoint_seconds_bucket\{",
        r"recstream_kafka_up\{",
        r"recstream_redis_up\{",
        r"recstream_redis_pending_writes\{",
        r"recstream_halted\{",
        r"recstream_offset_resets_total\{",
        r"recstream_users_forgotten_total\{",
    ):
        assert re.search(needle, exprs), needle


# --- the checkers find faults ------------------------------------------------------------------


def _fake(*targets: tuple[str, str], panel: dict[str, Any] | None = None) -> dict[str, Any]:
    """A one-panel dashboard in the real one's shape, with the given (expr, legend) targets."""
    real = load_dashboard()
    panel = panel or {
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
        "id": 1,
        "title": "fake",
        "type": "timeseries",
    }
    panel["targets"] = [
        {"datasource": DATASOURCE, "expr": e, "legendFormat": leg, "refId": chr(65 + i)}
        for i, (e, leg) in enumerate(targets)
    ]
    return {**real, "panels": [panel]}


GOOD = 'sum by (type) (rate(recstream_events_total{job=~"$job", instance=~"$instance"}[5m]))'


def test_the_checkers_accept_a_good_panel(exported: tuple[set[str], set[str]]) -> None:
    fake = _fake((GOOD, "{{type}}"))
    assert structure_errors(fake) == []
    assert promql_errors(fake) == []
    assert metric_errors(fake, *exported) == []


def test_promtool_reports_a_broken_expression() -> None:
    fake = _fake((GOOD, ""), (GOOD.replace("[5m]))", "[5m])"), ""))
    problems = promql_errors(fake)
    assert len(problems) == 1
    assert "panel 1 'fake' B" in problems[0]
    assert "panel 1 'fake' A" not in problems[0]


def test_an_unknown_variable_is_reported() -> None:
    fake = _fake((GOOD.replace("[5m]", "[$window]"), ""))
    assert ["unknown variable $window" in p for p in promql_errors(fake)] == [True]
    fake = _fake((GOOD.replace("[5m]", "[$__rate_interval]"), ""))
    assert promql_errors(fake) == []


def test_unknown_metrics_labels_and_filters_are_reported(
    exported: tuple[set[str], set[str]],
) -> None:
    f = '{job=~"$job", instance=~"$instance"}'
    fake = _fake(
        (f"rate(recstream_nope_total{f}[5m])", ""),  # no such metric
        (f"recstream_halted_total{f}", ""),  # a gauge has no _total
        (f"rate(recstream_encode_batch_seconds_total{f}[5m])", ""),  # a histogram neither
        (f"rate(recstream_halted{f}[5m])", ""),  # rate() of a gauge
        (f"sum by (reasons) (rate(recstream_dlq_total{f}[5m]))", "{{reasons}}"),  # label typo
        ("sum(rate(recstream_dlq_total[5m]))", ""),  # not filtered by the variables
    )
    problems = "\n".join(metric_errors(fake, *exported))
    for expected in (
        "'fake' A: recstream_nope_total is not a series the worker exports",
        "'fake' B: recstream_halted_total is not a series the worker exports",
        "'fake' C: recstream_encode_batch_seconds_total is not a series the worker exports",
        "'fake' D: rate()/increase() of recstream_halted, not a counter",
        "'fake' E: no worker metric has the label 'reasons'",
        "'fake' F: recstream_dlq_total is not filtered by",
    ):
        assert expected in problems, problems
    assert len(problems.splitlines()) == 6, problems  # one each: A's filters are right


def test_structure_faults_are_reported() -> None:
    panel = {"id": 1, "title": "fake", "type": "timeseries", "datasource": "Prometheus"}
    fake = _fake((GOOD, ""), panel=panel)
    fake["panels"].append({**fake["panels"][0], "gridPos": {"h": 8, "w": 30, "x": 0, "y": 0}})
    fake["templating"] = {"list": []}
    problems = "\n".join(structure_errors(fake))
    for expected in (
        "panel 1 'fake': gridPos needs integer h, w, x, y",
        "panel 1 'fake': datasource Prometheus is not",
        "off the 24-column grid",
        "duplicate panel ids [1]",
        "no variable 'datasource'",
    ):
        assert expected in problems, problems
