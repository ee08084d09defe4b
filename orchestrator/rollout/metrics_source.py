"""Where the live judge's counts come from: the gateways' business metrics, per cohort and intent.

The gateway measures every trace before sampling (``mangaassist_*`` families, labelled by
``intent``, ``release_bundle``, ``deployment_stage`` and ``rollout_cohort``). A cohort is a label
selector:

- canary: ``deployment_stage="canary"``, ``release_bundle=<the canary's bundle_version>``;
- stable: ``deployment_stage="prod"``, ``rollout_cohort="control"``,
  ``release_bundle=<prod's bundle_version>`` (the router's concurrent control cohort, the
  canary's size).

:data:`QUERIES` is the one place the counts are defined (metric family and extra selector per
field); ``deploy/prometheus/rollout-rules.yaml`` records the same expressions for dashboards and
alerts (a test checks they agree). Two sources give the same document
(``orchestrator.rollout.counts``), cumulative since the step's start:

- :class:`PrometheusSource`: ``increase(<family>{selector}[<since start>s])`` summed by intent
  through Prometheus' HTTP API (``/api/v1/query``); counter resets are Prometheus' business;
- :class:`ScrapeSource` (no Prometheus configured, the embedded default): it reads each
  sidecar's ``/metrics`` itself and keeps its own deltas from the step's first scrape, counting a
  value that went down (a restarted gateway) as a reset.

Feedback is counted per served response (the gateway joins a thumbs vote to its trace's labels),
so a vote that arrives minutes later still lands in the cohort that earned it; votes for the last
minutes of a step are simply not in yet, which the judge's minimum feedback count absorbs.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.rollout.counts import bound_label

FIELDS_QUERIES: dict[str, tuple[str, Mapping[str, str]]] = {
    "requests": ("mangaassist_requests_total", {}),
    "errors": ("mangaassist_request_errors_total", {}),
    "guardrail_blocks": ("mangaassist_guardrail_fallbacks_total", {}),
    "grounding_failures": ("mangaassist_grounding_failures_total", {}),
    "feedback": ("mangaassist_feedback_total", {}),
    "thumbs_down": ("mangaassist_feedback_total", {"feedback": "thumbs_down"}),
    "sessions": ("mangaassist_sessions_total", {}),
    "cost_usd": ("mangaassist_bedrock_cost_usd_total", {}),
}
LATENCY_FAMILY = "mangaassist_request_latency_seconds_bucket"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
EXAMPLES_PER_FIELD = 5
QUERIES = {**FIELDS_QUERIES, "latency_buckets": (LATENCY_FAMILY, {})}
"""Field of the counts -> (series name, extra label selector)."""


COHORT_LABELS = ("release_bundle", "deployment_stage", "rollout_cohort", "intent")
RULES_GROUP = "mangaassist-rollout"


def recording_rules(window: str = "1m") -> dict[str, Any]:
    """Prometheus recording rules over the same families and selectors as :data:`QUERIES`, by
    cohort and intent: ``mangaassist:rollout_<field>:rate<window>``. ``deploy/prometheus/
    rollout-rules.yaml`` is this document (a test keeps them equal); dashboards and alerts read
    these series, the judge reads the same families with ``increase()`` over its step."""
    rules = []
    for name, (family, extra) in QUERIES.items():
        by = ", ".join((*COHORT_LABELS, "le")) if name == "latency_buckets" else ", ".join(COHORT_LABELS)
        selector = _selector(extra) if extra else ""
        rules.append(
            {
                "record": f"mangaassist:rollout_{name}:rate{window}",
                "expr": f"sum by ({by}) (rate({family}{selector}[{window}]))",
            }
        )
    return {"groups": [{"name": RULES_GROUP, "rules": rules}]}


@dataclass(frozen=True)
class Cohort:
    name: str  # stable | canary
    labels: Mapping[str, str]


def cohorts(canary_bundle: str, prod_bundle: str) -> tuple[Cohort, Cohort]:
    return (
        Cohort("stable", {"deployment_stage": "prod", "rollout_cohort": "control", "release_bundle": prod_bundle}),
        Cohort("canary", {"deployment_stage": "canary", "release_bundle": canary_bundle}),
    )


class SourceError(RuntimeError):
    """The metrics source cannot be read (the judge's ``error`` verdict)."""


def _empty() -> dict[str, Any]:
    return {
        "requests": 0,
        "errors": 0,
        "guardrail_blocks": 0,
        "grounding_failures": 0,
        "feedback": 0,
        "thumbs_down": 0,
        "sessions": 0,
        "cost_usd": 0.0,
        "latency_buckets": {},
    }


def _document(totals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """{cohort: {intent: {field: value}}} -> the judge's counts document (integers where counted)."""
    out: dict[str, Any] = {"cohorts": {}}
    for cohort_name in ("stable", "canary"):
        per_intent: dict[str, Any] = {}
        for intent, values in sorted(totals.get(cohort_name, {}).items()):
            doc = _empty()
            for key, value in values.items():
                if key.startswith("le="):
                    doc["latency_buckets"][key[3:]] = round(value)
                elif key == "cost_usd":
                    doc["cost_usd"] = round(value, 8)
                else:
                    doc[key] = round(value)
            if doc["latency_buckets"]:
                doc["latency_buckets"]["+Inf"] = doc["requests"]
            _clamp(doc)
            per_intent[intent] = doc
        out["cohorts"][cohort_name] = per_intent
    return out


def _clamp(doc: dict[str, Any]) -> None:
    """Counters scraped a moment apart can disagree by a few (a request counted, its error not yet);
    keep the document consistent: a part never exceeds its whole, buckets never decrease."""
    for part in ("errors", "guardrail_blocks", "grounding_failures", "feedback", "sessions"):
        doc[part] = min(doc[part], doc["requests"])
    doc["thumbs_down"] = min(doc["thumbs_down"], doc["feedback"])
    running = 0
    for bound in sorted(doc["latency_buckets"], key=lambda b: math.inf if b == "+Inf" else float(b)):
        running = max(running, min(doc["latency_buckets"][bound], doc["requests"]))
        doc["latency_buckets"][bound] = running


# --- Prometheus ---------------------------------------------------------------------------------


def _selector(labels: Mapping[str, str]) -> str:
    def quote(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{quote(v)}"' for k, v in sorted(labels.items())) + "}"


def promql(field_name: str, cohort: Cohort, window_s: int) -> str:
    family, extra = QUERIES[field_name]
    by = "intent, le" if field_name == "latency_buckets" else "intent"
    return f"sum by ({by}) (increase({family}{_selector({**cohort.labels, **extra})}[{max(window_s, 1)}s]))"


@dataclass
class PrometheusSource:
    """Counts since ``start`` (a UNIX time) from a Prometheus at ``url``."""

    url: str
    timeout_s: float = 5.0
    clock: Callable[[], float] = time.time
    examples: dict[str, list[str]] = field(default_factory=dict)
    """``canary/<field>`` -> trace ids of the canary's exemplars since the step began
    (``/api/v1/query_exemplars``; needs ``--enable-feature=exemplar-storage``)."""

    def reset(self) -> None:
        self.examples.clear()

    def counts(self, canary_bundle: str, prod_bundle: str, start: float) -> dict[str, Any]:
        now = self.clock()
        window = math.ceil(now - start)
        totals: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        canary = cohorts(canary_bundle, prod_bundle)[1]
        for name in ("errors", "guardrail_blocks", "grounding_failures", "thumbs_down"):
            family, extra = QUERIES[name]
            ids = self._exemplars(f"{family}{_selector({**canary.labels, **extra})}", start, now)
            if ids:
                self.examples[f"canary/{name}"] = ids[-EXAMPLES_PER_FIELD:]
        for cohort in cohorts(canary_bundle, prod_bundle):
            for name in QUERIES:
                for sample in self._query(promql(name, cohort, window)):
                    metric, (_, value) = sample["metric"], sample["value"]
                    intent = metric.get("intent", "none")
                    key = f"le={bound_label(float(metric['le']))}" if name == "latency_buckets" else name
                    if key != "le=+Inf":
                        totals[cohort.name][intent][key] = float(value)
        return _document(totals)

    def _exemplars(self, selector: str, start: float, end: float) -> list[str]:
        url = f"{self.url.rstrip('/')}/api/v1/query_exemplars?" + urllib.parse.urlencode(
            {"query": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except (OSError, ValueError):
            return []  # examples are a courtesy; the counts decide
        ids: list[str] = []
        for series in body.get("data") or []:
            for exemplar in series.get("exemplars") or []:
                trace_id = (exemplar.get("labels") or {}).get("trace_id", "")
                if trace_id and trace_id not in ids:
                    ids.append(trace_id)
        return ids

    def _query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.load(resp)
        except (OSError, ValueError) as exc:
            raise SourceError(f"Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise SourceError(f"Prometheus at {self.url}: {body.get('error', body)}")
        result = body["data"]["result"]
        assert isinstance(result, list)
        return result


# --- scraping the sidecars ----------------------------------------------------------------------


@dataclass
class ScrapeSource:
    """Counts since the first scrape of the step, read from each gateway's ``/metrics`` directly."""

    urls: Sequence[str]
    timeout_s: float = 5.0
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _total: dict[tuple[str, str], float] = field(default_factory=dict)
    _started: bool = False
    examples: dict[str, list[str]] = field(default_factory=dict)
    """``cohort/field`` -> up to :data:`EXAMPLES_PER_FIELD` trace ids (the counters' exemplars: the
    gateway keeps canary traces, so each one opens in MLflow), newest last."""

    def reset(self) -> None:
        """Start a new step: the next scrape is its baseline."""
        self._last.clear()
        self._total.clear()
        self.examples.clear()
        self._started = False

    def _example(self, key: str, trace_id: str) -> None:
        cohort_name, _intent, name = key.split("\x00")
        if not trace_id or name.startswith("le="):
            return
        ids = self.examples.setdefault(f"{cohort_name}/{name}", [])
        if trace_id not in ids:
            ids.append(trace_id)
            del ids[:-EXAMPLES_PER_FIELD]

    def counts(self, canary_bundle: str, prod_bundle: str, start: float = 0.0) -> dict[str, Any]:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families

        wanted = cohorts(canary_bundle, prod_bundle)
        first = not self._started
        seen: dict[tuple[str, str], float] = defaultdict(float)
        for url in self.urls:
            request = urllib.request.Request(url, headers={"Accept": OPENMETRICS})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    text = resp.read().decode()
                families = list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise SourceError(f"gateway metrics at {url}: {exc}") from None
            for family in families:
                for sample in family.samples:
                    for key in _keys(sample.name, sample.labels, wanted):
                        seen[(url, key)] += sample.value
                        if sample.exemplar is not None and not first:
                            self._example(key, sample.exemplar.labels.get("trace_id", ""))
        for series, value in seen.items():
            last = self._last.get(series)
            if not first:
                delta = value - last if last is not None and value >= last else value  # down: a reset
                self._total[series] = self._total.get(series, 0.0) + delta
            else:
                self._total.setdefault(series, 0.0)
            self._last[series] = value
        self._started = True
        totals: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for (_url, key), value in self._total.items():
            cohort_name, intent, name = key.split("\x00")
            totals[cohort_name][intent][name] = totals[cohort_name][intent].get(name, 0.0) + value
        return _document(totals)


def _keys(name: str, labels: Mapping[str, str], wanted: Sequence[Cohort]) -> list[str]:
    out = []
    for field_name, (family, extra) in QUERIES.items():
        if name != family or any(labels.get(k) != v for k, v in extra.items()):
            continue
        for cohort in wanted:
            if all(labels.get(k) == v for k, v in cohort.labels.items()):
                if field_name == "latency_buckets":
                    if labels.get("le") in (None, "+Inf"):
                        continue
                    key = f"le={bound_label(float(labels['le']))}"
                else:
                    key = field_name
                out.append(f"{cohort.name}\x00{labels.get('intent', 'none')}\x00{key}")
    return out
