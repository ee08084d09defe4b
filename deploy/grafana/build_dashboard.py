"""Generate the Grafana dashboard ``dashboards/mangaassist.json`` from ``deploy/prometheus/alerts.yaml``.

One panel per alert, so the dashboard and the alerts cannot drift: each alert's ``expr`` is split
at its top-level ``and`` into clauses; the last clause of a multi-clause expression is the
minimum-volume guard (the alerts' convention, ``and ... >= N``) and is left out; every other
clause becomes a target showing the value the alert compares (the clause without its comparison)
with the comparison's right-hand side drawn as a threshold line. Selectors of series that carry
the investigation pivot (the ``mangaassist:alert_*`` recording rules and the raw business
metrics) get the dashboard's ``$release_bundle``/``$prompt_version``/``$bedrock_model_id``
filters injected. Below the alert panels: request latency from the raw histogram with exemplars
(each one links to its trace in MLflow through the datasource's exemplarTraceIdDestinations, see
``provisioning/datasources/prometheus.yaml``) and the trace gateway's health.

    python deploy/grafana/build_dashboard.py           # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check   # exit 1 if the committed JSON is stale

tests/contracts/test_grafana_dashboard.py runs the drift check and checks every panel expression
with promtool.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
OUT = HERE / "dashboards" / "mangaassist.json"

PIVOTS = ("release_bundle", "prompt_version", "bedrock_model_id")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTER = ",".join(f'{p}=~"${p}"' for p in PIVOTS)
# Raw business metric families used by the extra panels (every one carries the pivot labels).
BUSINESS_METRICS = (
    "mangaassist_requests_total",
    "mangaassist_request_errors_total",
    "mangaassist_request_latency_seconds_bucket",
)
NOT_SHADOW = 'deployment_stage!="shadow"'
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
WIDTH, HEIGHT = 12, 8


@dataclass(frozen=True)
class Clause:
    """One compared value of an alert: ``value op threshold``."""

    value: str
    op: str
    threshold: str


def _depth_map(expr: str) -> list[int]:
    """Bracket depth at each character, -1 inside string literals."""
    depths: list[int] = []
    depth, quote, escaped = 0, "", False
    for ch in expr:
        if quote:
            depths.append(-1)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
            depths.append(-1)
            continue
        if ch in "([{":
            depths.append(depth)
            depth += 1
            continue
        if ch in ")]}":
            depth -= 1
        depths.append(depth)
    if depth != 0 or quote:
        raise ValueError(f"unbalanced expression: {expr!r}")
    return depths


def _normalize(expr: str) -> str:
    return " ".join(expr.split())


def _strip_parens(expr: str) -> str:
    """Drop parentheses that wrap the whole expression."""
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depths = _depth_map(expr)
        # the opening paren closes at the very end iff depth never returns to 0 before it
        if any(d == 0 for d in depths[1:-1]):
            break
        expr = expr[1:-1].strip()
    return expr


def split_and(expr: str) -> list[str]:
    """Top-level ``and`` operands, the ``on (...)``/``ignoring (...)`` modifier dropped."""
    expr = _normalize(expr)
    depths = _depth_map(expr)
    parts, start = [], 0
    for m in re.finditer(r"\band\b", expr):
        if depths[m.start()] == 0:
            parts.append(expr[start : m.start()])
            start = m.end()
    parts.append(expr[start:])
    out = []
    for i, part in enumerate(parts):
        part = part.strip()
        if i:
            part = re.sub(r"^(on|ignoring)\s*\([^)]*\)\s*", "", part)
        out.append(_strip_parens(part))
    return out


def split_comparison(clause: str) -> Clause:
    """``value op threshold`` at the last top-level comparison operator."""
    depths = _depth_map(clause)
    found: tuple[int, str] | None = None
    i = 0
    while i < len(clause):
        if depths[i] == 0:
            op = next((o for o in COMPARISONS if clause.startswith(o, i)), None)
            if op is not None and not clause.startswith("=~", i):
                found = (i, op)
                i += len(op)
                continue
        i += 1
    if found is None:
        raise ValueError(f"no comparison in {clause!r}")
    pos, op = found
    return Clause(_strip_parens(clause[:pos]), op, clause[pos + len(op) :].strip())


def alert_clauses(expr: str) -> list[Clause]:
    """The compared values of an alert expression, without the minimum-volume guard."""
    clauses = [split_comparison(c) for c in split_and(expr)]
    if len(clauses) > 1:
        guard = clauses.pop()
        if guard.op != ">=":
            raise ValueError(f"last clause of {expr!r} is not a minimum-volume guard (>= N)")
    return clauses


def number(text: str) -> float:
    """Evaluate a threshold such as ``14.4 * 0.005`` (numbers and + - * / only)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Div | ast.Add | ast.Sub):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            return a + b if isinstance(node.op, ast.Add) else a - b
        raise ValueError(f"threshold is not a number expression: {text!r}")

    return float(f"{ev(ast.parse(text, mode='eval')):.12g}")


def inject_filters(expr: str, pivot_series: set[str]) -> str:
    """Add the pivot filters to every selector of a series in ``pivot_series``."""
    depths = _depth_map(expr)
    out, last = [], 0
    for m in re.finditer(r"(?<![\w:])([a-zA-Z_:][\w:]*)(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2)
        if name not in pivot_series or depths[m.start()] == -1:
            continue
        inner = matchers[1:-1].strip() if matchers else ""
        out.append(expr[last : m.start()])
        out.append(f"{name}{{{inner + ',' if inner else ''}{FILTER}}}")
        last = m.end()
    out.append(expr[last:])
    return "".join(out)


def strip_filters(expr: str) -> str:
    """Inverse of :func:`inject_filters` (used by the test to find the alert's own text)."""
    return expr.replace("," + FILTER, "").replace("{" + FILTER + "}", "")


def _pivot_series(doc: dict[str, Any]) -> set[str]:
    series = set(BUSINESS_METRICS)
    for group in doc["groups"]:
        for rule in group["rules"]:
            by = re.search(r"\bby \(([^)]*)\)", rule.get("expr", ""))
            if "record" in rule and by and set(PIVOTS) <= {s.strip() for s in by.group(1).split(",")}:
                series.add(rule["record"])
    return series


def _legend(expr: str) -> str:
    by = re.search(r"\bby \(([^)]*)\)", expr)
    labels = [s.strip() for s in by.group(1).split(",")] if by else []
    if not by and "mangaassist:" in expr:
        labels = list(PIVOTS)
    labels = [lbl for lbl in labels if lbl != "le"]
    return " / ".join("{{" + lbl + "}}" for lbl in labels) or "__auto"


def _unit(expr: str) -> str:
    if "histogram_quantile" in expr:
        return "s"
    if "cost_usd" in expr:
        return "currencyUSD"
    if "_bytes" in expr:
        return "bytes"
    if "/" in expr:
        return "percentunit"
    return "none"


def _target(ref: str, expr: str, legend: str, *, exemplar: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "instant": False,
        "exemplar": exemplar,
        "format": fmt,
    }


def _field_config(unit: str, threshold: float | None = None, **extra: Any) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never"}
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
        custom["thresholdsStyle"] = {"mode": "line"}
    defaults = {"unit": unit, "custom": custom, "thresholds": {"mode": "absolute", "steps": steps}, **extra}
    return {"defaults": defaults, "overrides": []}


class _Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "datasource": DATASOURCE,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any]) -> None:
        panel = {"id": len(self.panels) + 1, **panel}
        panel["gridPos"] = {"h": HEIGHT, "w": WIDTH, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += WIDTH
        if self.x >= 24:
            self._newline()

    def _newline(self) -> None:
        if self.x:
            self.x = 0
            self.y += HEIGHT


_OPTIONS = {
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
    "tooltip": {"mode": "multi", "sort": "desc"},
}


def _alert_panel(alert: dict[str, Any], pivot_series: set[str]) -> dict[str, Any]:
    name = alert["alert"]
    clauses = alert_clauses(alert["expr"])
    notes = alert.get("annotations", {})
    minimum = re.search(r"(Minimum volume: [^.]*\.|Not a ratio: [^.]*\.)", notes.get("description", ""))
    thresholds = {number(c.threshold) for c in clauses}
    if len(thresholds) != 1:
        raise ValueError(f"{name}: clauses compare against different thresholds {thresholds}")
    threshold = thresholds.pop()
    targets = []
    for i, clause in enumerate(clauses):
        legend = _legend(clause.value)
        window = re.search(r"rate(\d+[smhd])|\[(\d+[smhd])\]", clause.value)
        if len(clauses) > 1 and window:
            legend = f"{window.group(1) or window.group(2)} {legend}"
        targets.append(_target(chr(ord("A") + i), inject_filters(clause.value, pivot_series), legend))
    ops = {c.op for c in clauses}
    description = (
        f"Alert {name} ({alert.get('labels', {}).get('severity', '?')}, for {alert.get('for', '0s')}): "
        f"fires when {' and '.join(t['refId'] for t in targets)} {'/'.join(sorted(ops))} {threshold:g} "
        f"(red line). {minimum.group(1) + ' ' if minimum else ''}"
        f"Runbook: {notes.get('runbook_url', '-')}. Generated from deploy/prometheus/alerts.yaml."
    )
    extra: dict[str, Any] = {}
    if name == "TraceGatewayMlflowUnreachable":
        extra["mappings"] = _CIRCUIT_MAPPINGS
    return {
        "type": "timeseries",
        "title": name,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": _field_config(_unit(clauses[0].value), threshold, **extra),
        "options": _OPTIONS,
        "targets": targets,
    }


_CIRCUIT_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half-open", "color": "yellow", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]


def _business(metric: str, extra: str = "") -> str:
    matchers = ",".join(m for m in (NOT_SHADOW, extra, FILTER) if m)
    return f"{metric}{{{matchers}}}"


def _latency_panels() -> list[dict[str, Any]]:
    bucket = f"rate({_business('mangaassist_request_latency_seconds_bucket')}[$__rate_interval])"
    pivots = ", ".join(PIVOTS)
    quantiles = [
        _target(
            chr(ord("A") + i),
            f"histogram_quantile({q}, sum by (le) ({bucket}))",
            f"p{round(q * 100)}",
            exemplar=True,
        )
        for i, q in enumerate((0.5, 0.95, 0.99))
    ]
    exemplar_note = (
        "Exemplars (dots) carry trace_id; hovering one offers 'View trace in MLflow' "
        "(the datasource's exemplarTraceIdDestinations). Prometheus needs --enable-feature=exemplar-storage."
    )
    return [
        {
            "type": "timeseries",
            "title": "Request latency p50 / p95 / p99 (exemplars)",
            "description": "mangaassist_request_latency_seconds (handle_message), shadow excluded. " + exemplar_note,
            "datasource": DATASOURCE,
            "fieldConfig": _field_config("s", 3.0),
            "options": _OPTIONS,
            "targets": quantiles,
        },
        {
            "type": "timeseries",
            "title": "Request latency p99 by release / prompt / model (exemplars)",
            "description": "The latency alert's pivot, from the raw histogram. " + exemplar_note,
            "datasource": DATASOURCE,
            "fieldConfig": _field_config("s", 3.0),
            "options": _OPTIONS,
            "targets": [
                _target(
                    "A",
                    f"histogram_quantile(0.99, sum by (le, {pivots}) ({bucket}))",
                    " / ".join("{{" + p + "}}" for p in PIVOTS),
                    exemplar=True,
                )
            ],
        },
        {
            "type": "heatmap",
            "title": "Request latency distribution (exemplars)",
            "description": "Latency buckets per interval. " + exemplar_note,
            "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": "s"}, "overrides": []},
            "options": {
                "calculate": False,
                "yAxis": {"unit": "s"},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "exemplars": {"color": "rgba(255,0,255,0.7)"},
                "tooltip": {"mode": "single", "yHistogram": False},
                "legend": {"show": True},
            },
            "targets": [
                _target(
                    "A",
                    f"sum by (le) (increase({_business('mangaassist_request_latency_seconds_bucket')}"
                    "[$__rate_interval]))",
                    "{{le}}",
                    exemplar=True,
                    fmt="heatmap",
                )
            ],
        },
        {
            "type": "timeseries",
            "title": "Requests and errors per second (error exemplars)",
            "description": "mangaassist_requests_total and mangaassist_request_errors_total, shadow excluded; "
            "the error series' exemplars are failing traces. " + exemplar_note,
            "datasource": DATASOURCE,
            "fieldConfig": _field_config("reqps"),
            "options": _OPTIONS,
            "targets": [
                _target(
                    "A",
                    f"sum by ({pivots}) (rate({_business('mangaassist_requests_total')}[$__rate_interval]))",
                    "requests " + " / ".join("{{" + p + "}}" for p in PIVOTS),
                ),
                _target(
                    "B",
                    f"sum by ({pivots}) (rate({_business('mangaassist_request_errors_total')}[$__rate_interval]))",
                    "errors " + " / ".join("{{" + p + "}}" for p in PIVOTS),
                    exemplar=True,
                ),
            ],
        },
    ]


def _gateway_panels() -> list[dict[str, Any]]:
    def ts(title: str, description: str, unit: str, targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "fieldConfig": _field_config(unit, **extra),
            "options": _OPTIONS,
            "targets": targets,
        }

    return [
        ts(
            "Spans received and written per second",
            "tracegw_spans_received_total by receiver, tracegw_spans_written_total (acknowledged by MLflow).",
            "short",
            [
                _target(
                    "A", "sum by (receiver) (rate(tracegw_spans_received_total[$__rate_interval]))", "{{receiver}}"
                ),
                _target("B", "sum(rate(tracegw_spans_written_total[$__rate_interval]))", "written"),
            ],
        ),
        ts(
            "Spans dropped per second by reason",
            "tracegw_spans_dropped_total by stage and reason; sampled_out is sampling, not a loss.",
            "short",
            [
                _target(
                    "A",
                    "sum by (stage, reason) (rate(tracegw_spans_dropped_total[$__rate_interval]))",
                    "{{stage}} {{reason}}",
                )
            ],
        ),
        ts(
            "Spool and WAL bytes",
            "tracegw_spool_bytes (what waits for MLflow; spool_full drops past TRACEGW_SPOOL_MAX_BYTES) and "
            "tracegw_wal_bytes (a few seconds of traffic while the pipeline keeps up).",
            "bytes",
            [
                _target("A", "max by (pod) (tracegw_spool_bytes)", "spool {{pod}}"),
                _target("B", "max by (pod) (tracegw_wal_bytes)", "wal {{pod}}"),
            ],
        ),
        {
            "type": "state-timeline",
            "title": "Circuit towards MLflow",
            "description": "tracegw_circuit_state: 0 closed, 1 half-open, 2 open (batches spool).",
            "datasource": DATASOURCE,
            "fieldConfig": {
                "defaults": {
                    "mappings": _CIRCUIT_MAPPINGS,
                    "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
                    "color": {"mode": "thresholds"},
                },
                "overrides": [],
            },
            "options": {"showValue": "auto", "mergeValues": True, "legend": {"showLegend": False}},
            "targets": [_target("A", "max by (pod) (tracegw_circuit_state)", "{{pod}}")],
        },
    ]


def _variables() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Prometheus",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "includeAll": False,
            "multi": False,
            "options": [],
        }
    ]
    for i, pivot in enumerate(PIVOTS):
        before = ",".join(f'{p}=~"${p}"' for p in PIVOTS[:i])
        selector = f"mangaassist_requests_total{{{before}}}" if before else "mangaassist_requests_total"
        query = f"label_values({selector}, {pivot})"
        out.append(
            {
                "type": "query",
                "name": pivot,
                "label": pivot,
                "datasource": DATASOURCE,
                "definition": query,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "options": [],
            }
        )
    return out


def build(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dashboard for the alert rules ``doc`` (default: alerts.yaml as it is now)."""
    if doc is None:
        doc = yaml.safe_load(ALERTS.read_text())
    pivot_series = _pivot_series(doc)
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    layout = _Layout()
    layout.row("Alerts: MangaAssist (filtered by release / prompt / model)")
    for alert in alerts:
        if not alert["alert"].startswith("TraceGateway"):
            layout.add(_alert_panel(alert, pivot_series))
    layout.row("Alerts: trace gateway")
    for alert in alerts:
        if alert["alert"].startswith("TraceGateway"):
            layout.add(_alert_panel(alert, pivot_series))
    layout.row("Latency and errors (exemplars open the trace in MLflow)")
    for panel in _latency_panels():
        layout.add(panel)
    layout.row("Trace gateway health")
    for panel in _gateway_panels():
        layout.add(panel)
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "Generated by deploy/grafana/build_dashboard.py from deploy/prometheus/alerts.yaml; "
        "do not edit by hand.",
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout.panels,
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["mangaassist", "tracegw", "generated"],
        "templating": {"list": _variables()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "MangaAssist",
        "uid": "mangaassist",
        "version": 1,
    }


def render(doc: dict[str, Any] | None = None) -> str:
    return json.dumps(build(doc), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python {Path(__file__).relative_to(REPO)}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
