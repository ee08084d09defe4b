"""The Grafana dashboard (deploy/grafana/dashboards/mangaassist.json) is what
deploy/grafana/build_dashboard.py makes of deploy/prometheus/alerts.yaml now, has a panel for every
alert whose query is that alert's own expression (filters injected, guard and comparison dropped),
valid PromQL for promtool, the datasource variable everywhere, and exemplar links that open the
trace in MLflow the way the chat page does."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support import PROMETHEUS_BIN

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mangaassist.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DS_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "mangaassist.yaml"
PROMTOOL = PROMETHEUS_BIN.parent / "promtool"
PIVOTS = ("release_bundle", "prompt_version", "bedrock_model_id")
FILTER = ",".join(f'{p}=~"${p}"' for p in PIVOTS)
DS_REF = {"type": "prometheus", "uid": "${datasource}"}


@functools.cache
def _builder() -> ModuleType:
    """deploy/grafana/build_dashboard.py (a script, not a package), loaded once."""
    spec = importlib.util.spec_from_file_location("deploy_grafana_build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _alerts(doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    doc = doc or yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _norm(expr: str) -> str:
    return " ".join(expr.split())


def _spaced(expr: str) -> str:
    """Whitespace-normalized with a space around every parenthesis, to compare texts."""
    return _norm(expr.replace("(", " ( ").replace(")", " ) "))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_has_grafana_shape() -> None:
    d = _dashboard()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] and d["title"] and d["id"] is None
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), ids
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        assert p["type"] in {"row", "timeseries", "heatmap", "state-timeline"}, p["type"]
        assert p["title"], p["id"]
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and g["h"] > 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):  # no two panels overlap
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
        if p["type"] != "row":
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            assert all(t["expr"] for t in p["targets"]), p["title"]


def test_templating_has_the_datasource_and_the_three_pivots_multi_with_all() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for pivot in PIVOTS:
        v = variables[pivot]
        assert v["type"] == "query" and v["datasource"] == DS_REF, pivot
        assert v["multi"] is True and v["includeAll"] is True and v["allValue"] == ".*", pivot
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert re.fullmatch(rf"label_values\(mangaassist_[a-z_]+(\{{[^}}]*\}})?, {pivot}\)", query), query
        assert v["definition"] == query


def test_every_panel_uses_the_datasource_variable() -> None:
    for p in _dashboard()["panels"]:
        assert p["datasource"] == DS_REF, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"] == DS_REF, (p["title"], t["refId"])


def test_every_alert_has_a_panel_built_from_its_own_expression() -> None:
    by_title = {p["title"]: p for p in _panels()}
    for alert in _alerts():
        name, expr = alert["alert"], alert["expr"]
        panel = by_title.get(name)
        assert panel, f"no panel for alert {name}"
        assert panel["description"].startswith(f"Alert {name} "), name
        targets = panel["targets"]
        # one target per compared clause: every top-level `and` operand but the minimum-volume guard
        n_and = len(re.findall(r"\band\b", expr))
        assert len(targets) == max(1, n_and), (name, len(targets))
        text = _spaced(expr)
        for t in targets:
            query = t["expr"]
            own = query.replace("," + FILTER, "").replace("{" + FILTER + "}", "")
            assert own != query or not name.startswith("MangaAssist"), (name, "no filters injected")
            # the query minus the injected filters is the alert's text, directly before its comparison
            assert re.search(re.escape(_spaced(own)) + r" (\) )?(>|<|==|!=|>=|<=) ", text), (name, own)
            if name.startswith("MangaAssist"):
                selectors = re.findall(r"mangaassist:[a-z0-9_:]+(\{[^}]*\})?", query)
                assert selectors and all(s == "{" + FILTER + "}" for s in selectors), (name, query)
            else:
                assert "$release_bundle" not in query, (name, "gateway metrics carry no pivot labels")
        # the panel's red line is the alert's threshold
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        threshold = steps[-1]["value"]
        cmp = re.search(r"(?:>|<|==|!=) ([0-9.e*\s]+?)\s*(\)|\band\b|$)", _norm(expr))
        assert cmp, name
        expected = 1.0
        for factor in cmp.group(1).split("*"):
            expected *= float(factor)
        assert threshold == pytest.approx(expected), (name, threshold, expected)
    alert_names = {a["alert"] for a in _alerts()}
    alert_panels = {p["title"] for p in _panels() if p["description"].startswith("Alert ")}
    assert alert_panels == alert_names, alert_panels ^ alert_names


def test_committed_json_is_what_the_script_generates_from_alerts_yaml() -> None:
    builder = _builder()
    assert DASHBOARD.read_text() == builder.render(), (
        "stale dashboard: run .venv/bin/python deploy/grafana/build_dashboard.py"
    )
    assert builder.main(["--check"]) == 0


def test_a_new_or_changed_alert_changes_the_dashboard() -> None:
    builder = _builder()
    doc = yaml.safe_load(ALERTS.read_text())
    quality = next(g for g in doc["groups"] if g["name"] == "mangaassist-quality")
    quality["rules"].append(
        {
            "alert": "MangaAssistTestOnly",
            "expr": "mangaassist:alert_errors:rate1h / mangaassist:alert_requests:rate1h > 0.5\n"
            "and on (release_bundle, prompt_version, bedrock_model_id) mangaassist:alert_requests:rate1h * 3600 >= 10",
        }
    )
    panels = {p["title"]: p for p in builder.build(doc)["panels"]}
    new = panels["MangaAssistTestOnly"]
    assert new["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 0.5
    assert new["targets"][0]["expr"] == (
        f"mangaassist:alert_errors:rate1h{{{FILTER}}} / mangaassist:alert_requests:rate1h{{{FILTER}}}"
    )


def test_latency_panels_show_exemplars_of_the_gateway_histogram() -> None:
    metrics = (REPO / "gateway" / "metrics.py").read_text()
    assert '_request_latency_seconds"' in metrics  # the histogram the panels read
    latency = [
        p for p in _panels() if any("mangaassist_request_latency_seconds_bucket" in t["expr"] for t in p["targets"])
    ]
    assert len(latency) >= 2
    for p in latency:
        for t in p["targets"]:
            assert t["exemplar"] is True, p["title"]
            assert FILTER in t["expr"] and 'deployment_stage!="shadow"' in t["expr"], p["title"]
    assert any(p["type"] == "heatmap" for p in latency)


def test_gateway_health_panels() -> None:
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    defined = (REPO / "gateway" / "metrics.py").read_text()
    for metric in (
        "tracegw_spans_received_total",
        "tracegw_spans_dropped_total",
        "tracegw_spool_bytes",
        "tracegw_wal_bytes",
        "tracegw_circuit_state",
    ):
        assert metric in exprs, metric
        assert 'f"{p}' + metric.removeprefix("tracegw") + '"' in defined, metric  # still its name


def test_provisioning_files() -> None:
    provider = yaml.safe_load(PROVIDER_FILE.read_text())
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["options"]["path"]
    ds_doc = yaml.safe_load(DS_FILE.read_text())
    (ds,) = ds_doc["datasources"]
    assert ds["type"] == "prometheus" and re.fullmatch(r"\$\{[A-Z_]+\}", ds["url"]), ds["url"]
    (dest,) = ds["jsonData"]["exemplarTraceIdDestinations"]
    assert dest["name"] == "trace_id"  # the gateway's exemplar label
    assert 'exemplar={"trace_id": trace_id}' in (REPO / "gateway" / "process" / "measure.py").read_text()
    # the chat page's trace link: <ui>/#/experiments/<id>/traces?selectedEvaluationId=tr-<trace id>
    app = (REPO / "orchestrator" / "web" / "app.js").read_text()
    link = re.search(r'ui \+ "(/#/experiments/)" \+ encodeURIComponent\(exp\) \+ "([^"]+)" \+ traceId', app)
    assert link, "orchestrator/web/app.js traceUrl changed: update the datasource's exemplar link"
    expected = "${MANGAASSIST_MLFLOW_UI_URL}" + link.group(1) + "${MANGAASSIST_MLFLOW_EXPERIMENT_ID}" + link.group(2)
    assert dest["url"] == expected + "$${__value.raw}", dest["url"]  # $$: not an env var for provisioning


def _promql(expr: str) -> str:
    """Grafana's interval macros replaced by a duration; template variables stay (inside strings)."""
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")


def test_promtool_accepts_every_panel_and_variable_expression(tmp_path: Path) -> None:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} missing: run `make setup`")
    rules = []
    for p in _panels():
        for t in p["targets"]:
            rules.append({"record": f"grafana_panel_{p['id']}_{t['refId']}", "expr": _promql(t["expr"])})
    for v in _dashboard()["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+), \w+\)", query)
            assert m, query
            rules.append({"record": f"grafana_variable_{v['name']}", "expr": m.group(1)})
    assert "$" not in "".join(r["expr"].replace('"$', "") for r in rules)  # only quoted variables remain
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana-panels", "rules": rules}]}))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(rules)} rules found" in out.stdout, out.stdout
