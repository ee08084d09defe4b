"""The rollout judge and the dashboards read one definition of the cohort counts: the recording
rules in deploy/prometheus/rollout-rules.yaml are generated from the judge's QUERIES, and
Prometheus' own promtool accepts them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from orchestrator.rollout.metrics_source import QUERIES, recording_rules
from tests.support import PROMETHEUS_BIN

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rollout-rules.yaml"


def test_the_rules_file_is_generated_from_the_judges_queries() -> None:
    assert yaml.safe_load(RULES.read_text()) == recording_rules()
    recorded = " ".join(r["expr"] for r in recording_rules()["groups"][0]["rules"])
    for family, _extra in QUERIES.values():
        assert family in recorded


def test_promtool_accepts_the_rules() -> None:
    promtool = PROMETHEUS_BIN.parent / "promtool"
    out = subprocess.run([str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(QUERIES)} rules found" in out.stdout
