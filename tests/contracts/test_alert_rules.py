"""The alert rules (deploy/prometheus/alerts.yaml, spec §14) are valid for Prometheus' own promtool,
pass their unit tests (deploy/prometheus/alerts.test.yaml), and keep the conventions the on-call
relies on: every alert has ``for``, a severity, a summary, a description naming the minimum volume,
and a runbook in the repository; business alerts keep the investigation pivot; every alert is tested
firing, not firing and below its minimum volume (or duration); every business alert's payload names
up to 3 example trace ids of its reason and pivot (``example_trace_ids``), rendered in every firing
unit test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import PROMETHEUS_BIN

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
ALERTS = PROM / "alerts.yaml"
UNIT_TESTS = PROM / "alerts.test.yaml"
PROMTOOL = PROMETHEUS_BIN.parent / "promtool"
PIVOTS = ("release_bundle", "prompt_version", "bedrock_model_id")
CASE_KINDS = ("fires", "not firing", "below minimum")  # required for every alert
EXTRA_KINDS = ("keeps firing",)  # fires, then stops once keep_firing_for has run out
# The fields promtool 2.42 reads; it ignores unknown ones, so a misspelt key would pass silently.
ALERT_TEST_KEYS = {"eval_time", "alertname", "exp_alerts"}
EXP_ALERT_KEYS = {"exp_labels", "exp_annotations"}


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _unit_tests() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(UNIT_TESTS.read_text())
    return doc


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} missing: run `make setup`")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_promtool_accepts_the_alert_rules() -> None:
    out = _promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = _promtool("test", "rules", str(UNIT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_for_severity_summary_description_and_a_runbook_in_the_repo() -> None:
    alerts = _alerts()
    assert len(alerts) >= 12
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), names
    for a in alerts:
        name = a["alert"]
        assert a.get("for"), name
        assert a.get("labels", {}).get("severity") in {"page", "ticket"}, name
        notes = a.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert notes.get(key), (name, key)
        runbook = REPO / notes["runbook_url"]
        assert notes["runbook_url"].startswith("deploy/runbooks/") and runbook.is_file(), (name, notes["runbook_url"])
        text = runbook.read_text()
        assert name.removesuffix("Fast").removesuffix("Slow") in text, (name, runbook)


def test_business_alerts_keep_the_pivot_exclude_shadow_traffic_and_guard_volume() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    recorded = {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    business = [a for a in _alerts() if a["alert"].startswith("MangaAssist")]
    assert {a["alert"] for a in business} >= {
        "MangaAssistP99LatencyHigh",
        "MangaAssistErrorRateHigh",
        "MangaAssistErrorBudgetBurnFast",
        "MangaAssistErrorBudgetBurnSlow",
        "MangaAssistGuardrailBlockRateHigh",
        "MangaAssistGroundingFailureRateHigh",
        "MangaAssistThumbsDownRateHigh",
        "MangaAssistBedrockCostPerSessionHigh",
    }
    for a in business:
        name, expr = a["alert"], a["expr"]
        used = set(re.findall(r"mangaassist:[a-z0-9_:]+", expr))
        assert used and used <= set(recorded), (name, used - set(recorded))
        for rec in used:
            by = re.search(r"sum by \(([^)]*)\)", recorded[rec])
            assert by and set(PIVOTS) <= {s.strip() for s in by.group(1).split(",")}, (rec, recorded[rec])
            assert 'deployment_stage!="shadow"' in recorded[rec], rec
        assert re.search(r">= \d+\s*$", expr), (name, "no minimum volume")
        assert "Minimum volume:" in a["annotations"]["description"], name
        assert all(p in a["annotations"]["summary"] for p in PIVOTS), name
        assert "mlflow_trace_filter" in a["annotations"], name


# Example trace ids (the gateway's mangaassist_example_trace series, gateway/process/examples.py):
# the reason each business alert's payload names.
EXAMPLE_REASONS = {
    "MangaAssistP99LatencyHigh": "slow",
    "MangaAssistErrorRateHigh": "error",
    "MangaAssistErrorBudgetBurnFast": "error",
    "MangaAssistErrorBudgetBurnSlow": "error",
    "MangaAssistGuardrailBlockRateHigh": "guardrail_fallback",
    "MangaAssistGroundingFailureRateHigh": "grounding_failure",
    "MangaAssistThumbsDownRateHigh": "thumbs_down",
    "MangaAssistBedrockCostPerSessionHigh": "costly",
}
NO_EXAMPLE_CASE = "no example stored"  # the one firing case whose annotation renders empty


def test_business_alerts_name_example_traces_of_their_reason_and_pivot() -> None:
    business = {a["alert"]: a for a in _alerts() if a["alert"].startswith("MangaAssist")}
    assert set(business) == set(EXAMPLE_REASONS), set(business) ^ set(EXAMPLE_REASONS)
    for name, a in business.items():
        tpl = a["annotations"].get("example_trace_ids", "")
        queries = re.findall(r"query \(printf `([^`]*)`((?: \$labels\.\w+)+)\)", tpl)
        assert len(queries) == 1, (name, tpl)
        promql, args = queries[0]
        selector = re.search(r"mangaassist_example_trace\{([^}]*)\}", promql)
        assert selector, (name, promql)
        matchers = dict(m.split("=", 1) for m in selector.group(1).split(","))
        assert matchers == {"reason": f'"{EXAMPLE_REASONS[name]}"', **{p: "%q" for p in PIVOTS}}, (name, matchers)
        assert args.split() == [f"$labels.{p}" for p in PIVOTS], (name, args)  # the alert's own pivot
        assert re.match(r"sort_desc\(topk\(3, max by \(trace_id\) \(", promql), (name, promql)  # 3 newest
        assert "{{ $s.Labels.trace_id }}" in tpl and "{{ if $i }} {{ end }}" in tpl, name  # no trailing space
        assert "mangaassist_example_trace" in a["annotations"]["description"], name
        assert a["annotations"].get("mlflow_trace_filter"), name
    for a in _alerts():
        if a["alert"].startswith("TraceGateway"):  # pods, not traces
            assert "example_trace_ids" not in a["annotations"], a["alert"]


def test_firing_cases_of_business_alerts_store_and_render_example_traces() -> None:
    empty = four = 0
    for group in _unit_tests()["tests"]:
        alert = group["name"].partition(": ")[0]
        if alert not in EXAMPLE_REASONS:
            continue
        examples = [
            s["series"]
            for s in group["input_series"]
            if s["series"].startswith("mangaassist_example_trace{")
            and f'reason="{EXAMPLE_REASONS[alert]}"' in s["series"]
            and 'release_bundle="rb-2026-12-01"' in s["series"]
        ]
        for t in group["alert_rule_test"]:
            for e in t.get("exp_alerts") or []:
                rendered = e["exp_annotations"]["example_trace_ids"]
                if NO_EXAMPLE_CASE in group["name"]:
                    assert rendered == "" and not examples, group["name"]
                    empty += 1
                    continue
                ids = rendered.split(" ")
                assert 1 <= len(ids) <= 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), (group["name"], ids)
                assert all(f'trace_id="{i}"' in " ".join(examples) for i in ids), group["name"]
                four += len({re.search(r'trace_id="(\w+)"', s).group(1) for s in examples}) > 3  # type: ignore[union-attr]
    assert empty >= 1 and four >= 1, (empty, four)


def test_gateway_ratio_alerts_guard_volume_and_the_rest_name_their_duration() -> None:
    for a in _alerts():
        if a["alert"].startswith("TraceGateway"):
            if "/" in a["expr"]:
                assert re.search(r">= \d+\s*$", a["expr"]), a["alert"]
                assert "Minimum volume:" in a["annotations"]["description"], a["alert"]
            else:
                assert "the minimum is the" in a["annotations"]["description"], a["alert"]


def test_every_alert_is_unit_tested_firing_not_firing_and_below_minimum() -> None:
    doc = _unit_tests()
    assert doc["rule_files"] == ["alerts.yaml"]  # the alerts carry their own recording rules
    cases: dict[str, dict[str, int]] = {}
    for group in doc["tests"]:
        alert, _, kind = group["name"].partition(": ")
        kinds = [k for k in CASE_KINDS + EXTRA_KINDS if kind.startswith(k)]
        assert kinds, group["name"]
        tests = group["alert_rule_test"]
        assert tests and all(set(t) <= ALERT_TEST_KEYS and t["alertname"] == alert for t in tests), group["name"]
        firing = [bool(t.get("exp_alerts")) for t in tests]
        if kinds[0] == "keeps firing":
            assert firing[0] and not firing[-1], group["name"]
        else:  # a "fires" case asserts an alert at every evaluation; the others assert none
            assert all(f == (kinds[0] == "fires") for f in firing), group["name"]
        for t in tests:
            exp = t.get("exp_alerts") or []
            assert all(set(e) <= EXP_ALERT_KEYS for e in exp), group["name"]
            for e in exp:
                assert e["exp_labels"].get("severity") and e["exp_annotations"].get("runbook_url"), group["name"]
        counts = cases.setdefault(alert, {k: 0 for k in CASE_KINDS + EXTRA_KINDS})
        counts[kinds[0]] += 1
    for a in _alerts():
        got = cases.get(a["alert"], {})
        assert all(got.get(k) for k in CASE_KINDS), (a["alert"], got)
        assert sum(got.values()) >= 3, (a["alert"], got)
    assert set(cases) <= {a["alert"] for a in _alerts()}, set(cases) - {a["alert"] for a in _alerts()}


def test_firing_cases_render_the_pivot_labels_of_business_alerts() -> None:
    for group in _unit_tests()["tests"]:
        for t in group["alert_rule_test"]:
            if not t["alertname"].startswith("MangaAssist"):
                continue
            for e in t.get("exp_alerts") or []:
                assert set(PIVOTS) <= set(e["exp_labels"]), group["name"]


def test_alerts_load_beside_the_rollout_rules_without_clashing() -> None:
    """Prometheus loads both files; group names and recorded series must not collide."""
    docs = [yaml.safe_load(f.read_text()) for f in (ALERTS, PROM / "rollout-rules.yaml")]
    groups = [g["name"] for d in docs for g in d["groups"]]
    records = [r["record"] for d in docs for g in d["groups"] for r in g["rules"] if "record" in r]
    assert len(groups) == len(set(groups)), groups
    assert len(records) == len(set(records)), records
    out = _promtool("check", "rules", str(ALERTS), str(PROM / "rollout-rules.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_that_flap_keep_firing() -> None:
    for a in _alerts():
        if a["alert"].endswith(("RateHigh", "LatencyHigh", "DroppingSpans", "Refusing", "MlflowUnreachable")):
            assert a.get("keep_firing_for"), a["alert"]
