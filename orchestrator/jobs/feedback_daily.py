"""``tracegw-feedback-daily``: a day's feedback, aggregated into one MLflow run (spec §10).

    tracegw-feedback-daily --date 2026-11-26 [--tracking-uri URI] [--experiment NAME]
                           [--source-experiments a,b] [--lookback-days 2]

Reads the ``user_feedback`` assessments the gateway wrote on traces (MLflow's client: traces
found by their ``user_feedback`` tag, started within ``--lookback-days`` before the day's end)
whose time falls on the given UTC day, and groups them by the trace's ``intent``,
``prompt_version``, ``release_bundle`` and ``bedrock_model_id`` tags. Writes one run per day in
``--experiment`` (default ``mangaassist-feedback-daily``):

- metrics ``feedback_count``, ``thumbs_up_count``, ``thumbs_down_count``, ``thumbs_down_rate``,
  and the same per value of each pivot (``release_bundle/<value>/thumbs_down_rate``, ...);
- artifacts ``feedback_daily.csv`` and ``feedback_daily.json``: one row per combination of the
  four pivots with its counts and thumbs-down rate.

Re-running for the same day updates the same run (found by its ``feedback_daily.date`` tag):
metrics get a newer value, artifacts are overwritten. Feedback whose trace is not in MLflow
(orphans) is not here; it is in the event stream. The time of a feedback is the assessment's
``feedback_time_ms`` metadata when the writer sets it, else the assessment's creation time.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from orchestrator import config as config_mod

PIVOTS = ("intent", "prompt_version", "release_bundle", "bedrock_model_id")
DATE_TAG = "feedback_daily.date"
DEFAULT_EXPERIMENT = "mangaassist-feedback-daily"
ASSESSMENT_NAME = "user_feedback"
VALUES = ("thumbs_down", "thumbs_up")
_METRIC_UNSAFE = re.compile(r"[^\w\-. /]")


@dataclass(frozen=True, slots=True)
class FeedbackFact:
    """One feedback assessment on a stored trace."""

    event_id: str
    trace_id: str
    value: str  # thumbs_up / thumbs_down
    time_ms: int
    pivots: tuple[str, str, str, str]


def day_bounds_ms(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def facts_from_traces(traces: Iterable[Any], start_ms: int, end_ms: int) -> list[FeedbackFact]:
    """The feedback assessments of ``traces`` (MLflow ``Trace`` objects) made in [start_ms, end_ms)."""
    seen: set[str] = set()
    out: list[FeedbackFact] = []
    for trace in traces:
        info = trace.info
        tags = info.tags or {}
        pivots = tuple(tags.get(k) or "none" for k in PIVOTS)
        for a in info.assessments or []:
            if a.name != ASSESSMENT_NAME or a.feedback is None:
                continue
            meta = a.metadata or {}
            when = int(meta.get("feedback_time_ms") or a.create_time_ms or 0)
            event_id = meta.get("feedback_event_id") or a.assessment_id
            if not start_ms <= when < end_ms or event_id in seen:
                continue
            seen.add(event_id)
            value = "thumbs_up" if a.feedback.value is True or a.feedback.value == "thumbs_up" else "thumbs_down"
            out.append(FeedbackFact(event_id, info.trace_id, value, when, pivots))  # type: ignore[arg-type]
    return out


def table(facts: Iterable[FeedbackFact]) -> list[dict[str, Any]]:
    """One row per combination of the four pivots, sorted, with counts and the thumbs-down rate."""
    counts: Counter[tuple[tuple[str, ...], str]] = Counter((f.pivots, f.value) for f in facts)
    rows = []
    for pivots in sorted({p for p, _ in counts}):
        down, up = counts[(pivots, "thumbs_down")], counts[(pivots, "thumbs_up")]
        rows.append(
            {
                **dict(zip(PIVOTS, pivots, strict=True)),
                "thumbs_up": up,
                "thumbs_down": down,
                "feedback": up + down,
                "thumbs_down_rate": round(down / (up + down), 6),
            }
        )
    return rows


def metric_key(*parts: str) -> str:
    return "/".join(_METRIC_UNSAFE.sub("_", p)[:100] or "_" for p in parts)


def metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Totals, and per value of each pivot, of counts and thumbs-down rate."""
    out: dict[str, float] = {}

    def put(prefix: tuple[str, ...], up: int, down: int) -> None:
        total = up + down
        out[metric_key(*prefix, "feedback_count")] = total
        out[metric_key(*prefix, "thumbs_up_count")] = up
        out[metric_key(*prefix, "thumbs_down_count")] = down
        out[metric_key(*prefix, "thumbs_down_rate")] = down / total if total else 0.0

    put((), sum(r["thumbs_up"] for r in rows), sum(r["thumbs_down"] for r in rows))
    for pivot in PIVOTS:
        for value in sorted({r[pivot] for r in rows}):
            sel = [r for r in rows if r[pivot] == value]
            put((pivot, value), sum(r["thumbs_up"] for r in sel), sum(r["thumbs_down"] for r in sel))
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*PIVOTS, "thumbs_up", "thumbs_down", "feedback", "thumbs_down_rate"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _experiment_ids(client: Any, names: list[str], exclude: str) -> list[str]:
    if names:
        found = [client.get_experiment_by_name(n) for n in names]
        return [e.experiment_id for e in found if e is not None]
    return [e.experiment_id for e in client.search_experiments() if e.name != exclude]


def read_traces(client: Any, experiment_ids: list[str], since_ms: int, until_ms: int) -> Iterator[Any]:
    """Traces with a ``user_feedback`` tag started in [since_ms, until_ms), without their spans."""
    for value in VALUES:
        flt = f"tags.user_feedback = '{value}' and trace.timestamp_ms >= {since_ms} and trace.timestamp_ms < {until_ms}"
        for exp_id in experiment_ids:  # one experiment per call: the SQL store handles it best
            token = None
            while True:
                page = client.search_traces(
                    locations=[exp_id], filter_string=flt, max_results=500, page_token=token, include_spans=False
                )
                yield from page
                token = page.token
                if not token:
                    break


def run_daily(
    client: Any,
    day: date,
    experiment: str = DEFAULT_EXPERIMENT,
    source_experiments: list[str] | None = None,
    lookback_days: int = 2,
) -> tuple[str, list[dict[str, Any]]]:
    """Aggregate ``day`` into its run (created, or updated when it exists). Returns (run_id, table)."""
    start_ms, end_ms = day_bounds_ms(day)
    exp_ids = _experiment_ids(client, source_experiments or [], experiment)
    traces = read_traces(client, exp_ids, start_ms - lookback_days * 86_400_000, end_ms)
    rows = table(facts_from_traces(traces, start_ms, end_ms))
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`{DATE_TAG}` = '{day.isoformat()}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(
            exp_id, start_time=start_ms, tags={DATE_TAG: day.isoformat()}, run_name=f"feedback-{day.isoformat()}"
        ).info.run_id
    from mlflow.entities import Metric, RunTag

    now_ms = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics(rows).items()],
        tags=[
            RunTag("feedback_daily.source_experiments", ",".join(exp_ids)[:5000]),
            RunTag("feedback_daily.generated_at", datetime.now(UTC).isoformat(timespec="seconds")),
        ],
    )
    client.log_text(run_id, to_csv(rows), "feedback_daily.csv")
    client.log_text(run_id, json.dumps(rows, indent=1, ensure_ascii=False), "feedback_daily.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id, rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegw-feedback-daily", description=__doc__.split("\n\n")[0])
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment of the daily runs")
    parser.add_argument(
        "--source-experiments", default="", help="comma list of experiments holding the traces (default: all others)"
    )
    parser.add_argument(
        "--lookback-days",
        type=int,
        default=2,
        help="consider traces started this many days before the day (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {"MLFLOW_TRACKING_URI": args.tracking_uri} if args.tracking_uri else {}
    try:
        cfg = config_mod.load(os.environ, overrides)  # only MLFLOW_TRACKING_URI matters here
    except config_mod.ConfigError as exc:
        print(f"tracegw-feedback-daily: {exc}", file=sys.stderr)
        return 2
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    sources = [s.strip() for s in args.source_experiments.split(",") if s.strip()]
    run_id, rows = run_daily(client, args.date, args.experiment, sources, args.lookback_days)
    total = sum(r["feedback"] for r in rows)
    down = sum(r["thumbs_down"] for r in rows)
    print(
        f"{args.date.isoformat()}: {total} feedback events, {down} thumbs-down, {len(rows)} groups "
        f"-> run {run_id} in experiment {args.experiment!r}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
