"""``mangaassist-release shadow-report`` and ``canary start|status|abort|verdict-server``.

Kept apart from the registry commands (``commands.py``): these read live traffic (MLflow traces,
the gateways' metrics) and run for a while. Wired into ``cli.py`` by :func:`add_parsers` and
:func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from orchestrator.release.errors import ReleaseError

if TYPE_CHECKING:
    from orchestrator.release.registry import ReleaseRegistry

COMMANDS = ("shadow-report", "canary")


def add_parsers(sub: Any) -> None:
    sr = sub.add_parser(
        "shadow-report",
        help="compare shadow pairs from MLflow, judge them, log the comparison (and record the verdict)",
        description="Read the shadow pairs of the last --since-minutes from the traffic experiment (traces tagged "
        "shadow_role primary / candidate / noise, joined on shadow_pair_id), measure answer agreement, citation "
        "overlap, intent and refusal mismatch, grounding, latency/tokens/cost deltas for the candidate and for the "
        "noise floor (stable against itself), judge candidate against primary with the rollout judge, and log it all "
        "as an MLflow run (shadow-compare-<time>) in the traffic experiment. --record stamps the verdict on the "
        "shadow bundle (eval.shadow=passed|failed), which the promotion gate and `canary start` read. Exit 0 pass, "
        "1 fail, 3 inconclusive, 2 error (also: pairs whose two traces do not share one retrieval snapshot).",
    )
    sr.add_argument("--since-minutes", type=float, default=60.0, help="window (default 60)")
    sr.add_argument("--bundle", metavar="V", help="the shadow bundle (default: the one holding alias shadow)")
    sr.add_argument("--record", action="store_true", help="record the verdict on the bundle (eval.shadow)")
    sr.add_argument("--json", action="store_true", help="print the report as JSON")

    ca = sub.add_parser(
        "canary",
        help="step a bundle through 1/10/50/100%% with the judge; status; abort; a verdict endpoint",
        description="start: requires eval.offline and eval.shadow passed; steps the canary alias through --steps, "
        "judging every --interval on counts from --prometheus URL or, without it, the gateways' --metrics URLs; "
        "advances on pass, holds on inconclusive (at most the judge's looks per step, then pauses at 0% and exits 3), "
        "rolls back on fail (canary share 0, eval.canary=failed, a rolled_back event with example trace ids; exit 1) "
        "and promotes through the gate after 100% (exit 0). status: the controller's tags. abort: roll back now "
        "(a running controller does it at its next look). verdict-server: GET /verdict answers 200 on pass (for "
        "Argo Rollouts' web provider or a Flagger webhook), 409 fail, 503 inconclusive or error, with the record.",
    )
    ca.add_argument("action", choices=("start", "status", "abort", "verdict-server"))
    ca.add_argument("--bundle", metavar="V", help="the canary bundle (default: the one holding alias canary)")
    ca.add_argument("--steps", default="1,10,50,100", help="percent steps (default 1,10,50,100)")
    ca.add_argument("--interval", type=float, default=60.0, metavar="S", help="seconds between looks (default 60)")
    ca.add_argument("--prometheus", metavar="URL", help="read counts from this Prometheus (HTTP API)")
    ca.add_argument(
        "--metrics",
        action="append",
        metavar="URL",
        help="a gateway's metrics URL to scrape when no Prometheus is given (repeatable; default the local sidecar)",
    )
    ca.add_argument("--port", type=int, default=8099, help="verdict-server port on 127.0.0.1 (default 8099)")
    ca.add_argument("--json", action="store_true", help="print the result as JSON")


def run(
    registry: ReleaseRegistry,
    args: argparse.Namespace,
    progress: Callable[[str], None],
    send_event: Callable[[Any], None],
) -> int:
    if args.command == "shadow-report":
        return _shadow_report(registry, args, progress, send_event)
    return _canary(registry, args, progress, send_event)


# --- shadow ---------------------------------------------------------------------------------------


def shadow_report(registry: ReleaseRegistry, since_minutes: float) -> dict[str, Any]:
    """Collect, compare and judge the shadow pairs of the window (no writes)."""
    from orchestrator.release.shadow_report import SHADOW_CONFIG, collect, compare, judge_input
    from orchestrator.rollout.judge import error_record, judge

    experiment_id = registry.ensure_experiment(registry.experiment_name)
    since_ms = int((time.time() - since_minutes * 60) * 1000)
    pairs = collect(registry.client, [experiment_id], since_ms)
    report = compare(pairs)
    mismatches = report["candidate"].get("snapshot_mismatches", 0.0) + report["noise_floor"].get(
        "snapshot_mismatches", 0.0
    )
    if mismatches:
        record = error_record(f"{mismatches:.0f} shadow pairs do not share one retrieval snapshot")
    elif not pairs:
        record = error_record(f"no shadow pairs in the last {since_minutes:g} minutes")
    else:
        record = judge(judge_input(pairs), SHADOW_CONFIG)
    report["verdict"] = record
    report["experiment_id"] = experiment_id
    return report


def _shadow_report(
    registry: ReleaseRegistry,
    args: argparse.Namespace,
    progress: Callable[[str], None],
    send_event: Callable[[Any], None],
) -> int:
    from orchestrator.rollout.judge import exit_code

    bundle = registry.bundle(args.bundle) if args.bundle else registry.resolve("shadow")
    report = shadow_report(registry, args.since_minutes)
    shadow_bundles = {b.split(":", 1)[1] for b in report["bundles"] if b.startswith("candidate:")}
    if shadow_bundles and shadow_bundles != {bundle.bundle_version}:
        raise ReleaseError(
            f"the window's shadow answers came from {sorted(shadow_bundles)}, not bundle {bundle.bundle_version}: "
            "narrow --since-minutes to the time this bundle was the shadow"
        )
    verdict = report["verdict"]["verdict"]
    run_id = _log_shadow_run(registry, bundle.bundle_version, args.since_minutes, report)
    progress(f"shadow comparison logged as run {run_id}")
    if args.record and verdict in ("pass", "fail"):
        from orchestrator.release import events as ev
        from orchestrator.release.lifecycle import Lifecycle

        life = Lifecycle(registry, progress)
        life.record_verdict(bundle, "shadow", verdict, run_id, f"{len(report['pairs'])} pairs")
        metrics = {k: v for k, v in report["candidate"].items() if isinstance(v, float)}
        send_event(lambda: ev.evaluated(bundle, "shadow", verdict, life.actor, metrics=metrics, run_id=run_id))
    if args.json:
        print(json.dumps({**report, "run_id": run_id}, indent=2, sort_keys=True))
    else:
        cand, noise = report["candidate"], report["noise_floor"]
        print(f"shadow bundle {bundle.version} ({bundle.bundle_version}): {verdict} on {len(report['pairs'])} pairs")
        for key in (
            "answer_agreement",
            "citation_overlap",
            "intent_mismatch",
            "refusal_mismatch",
            "grounding_failure_rate",
            "latency_delta_ms",
            "tokens_delta",
            "cost_delta_usd",
        ):
            if key in cand:
                floor = f"   noise floor {noise[key]:.4g}" if key in noise else ""
                print(f"  {key:<24} {cand[key]:.4g}{floor}")
        for reason in report["verdict"].get("reasons", []):
            if reason.get("verdict") in ("fail", "error"):
                print(f"  {reason.get('verdict').upper()} {reason.get('metric')}[{reason.get('stratum')}] {reason}")
    return exit_code(verdict)


def _log_shadow_run(
    registry: ReleaseRegistry, bundle_version: str, since_minutes: float, report: dict[str, Any]
) -> str:
    client = registry.client
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = client.create_run(
        report["experiment_id"],
        run_name=f"shadow-compare-{stamp}",
        tags={
            "release.eval_kind": "shadow",
            "release.bundle": bundle_version,
            "shadow.verdict": report["verdict"]["verdict"],
            "shadow.window_minutes": f"{since_minutes:g}",
        },
    )
    run_id = str(run.info.run_id)
    for side in ("candidate", "noise_floor"):
        for key, value in report[side].items():
            client.log_metric(run_id, f"{side}.{key}", float(value))
    client.log_text(run_id, json.dumps(report["pairs"], indent=2), "shadow/pairs.json")
    client.log_text(run_id, json.dumps(report["verdict"], indent=2, sort_keys=True), "shadow/verdict.json")
    client.set_terminated(run_id)
    return run_id


# --- canary ---------------------------------------------------------------------------------------


def _source(args: argparse.Namespace) -> Any:
    from orchestrator.rollout.metrics_source import PrometheusSource, ScrapeSource

    if args.prometheus:
        return PrometheusSource(args.prometheus)
    return ScrapeSource(args.metrics or ["http://127.0.0.1:9464/metrics"])


def _canary(
    registry: ReleaseRegistry,
    args: argparse.Namespace,
    progress: Callable[[str], None],
    send_event: Callable[[Any], None],
) -> int:
    from orchestrator.release import canary as cn

    bundle = registry.bundle(args.bundle) if args.bundle else registry.resolve("canary")
    if args.action == "status":
        state = cn.status(bundle)
        print(json.dumps(state, indent=2) if args.json else "\n".join(f"{k} = {v}" for k, v in state.items()) or "-")
        return 0
    from orchestrator.release import events as ev
    from orchestrator.release.lifecycle import Lifecycle

    life = Lifecycle(registry, progress)
    prod = registry.resolve("prod")

    def on_rollback(b: Any, reason: str, record: dict[str, Any], examples: list[str]) -> None:
        note = f"{reason}; example traces: {', '.join(examples) or 'none'}"
        send_event(lambda: ev.rolled_back(b, prod, note, life.actor))

    if args.action == "abort":
        cn.abort(registry, bundle)
        if cn.status(registry.bundle(str(bundle.version))).get(cn.STATE_TAG) != "running":
            registry.client.set_model_version_tag(
                "mangaassist-chatbot-prod", str(bundle.version), "canary.percent", "0"
            )
            progress(f"no controller running: bundle {bundle.version}'s canary share set to 0")
            on_rollback(bundle, "aborted by `mangaassist-release canary abort`", {}, [])
        return 0
    try:
        steps = [float(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        raise ReleaseError(f"--steps must be comma-separated percentages, got {args.steps!r}") from None
    source = _source(args)
    if args.action == "verdict-server":
        return _verdict_server(bundle, prod, source, args.port, progress)
    controller = cn.CanaryController(
        registry, life, source, interval_s=args.interval, steps=steps, progress=progress, on_rollback=on_rollback
    )
    result = controller.run(bundle)
    if result.outcome == "promoted":
        send_event(lambda: ev.promoted(registry.bundle(str(bundle.version)), prod, life.actor))
    print(json.dumps(result.to_json(), indent=2) if args.json else f"canary {result.outcome}: {result.reason or 'ok'}")
    return result.exit_code


def _verdict_server(bundle: Any, prod: Any, source: Any, port: int, progress: Callable[[str], None]) -> int:
    server = verdict_server(bundle, prod, source, port)
    progress(f"verdict endpoint on http://127.0.0.1:{server.server_address[1]}/verdict (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def verdict_server(bundle: Any, prod: Any, source: Any, port: int, config: Any = None) -> ThreadingHTTPServer:
    """The HTTP verdict (not started): ``GET /verdict[?since=UNIX]`` judges the cohorts' counts since
    ``since`` (default: the server's start); 200 pass, 409 fail, 503 inconclusive or error."""
    from orchestrator.rollout.judge import dumps, error_record, judge
    from orchestrator.rollout.metrics_source import SourceError

    started = time.time()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path != "/verdict":
                self.send_error(404, "only /verdict")
                return
            raw = parse_qs(url.query).get("since", [str(started)])[0]
            try:
                since = float(raw)
            except ValueError:
                self.send_error(400, "since must be a UNIX time in seconds")
                return
            if not 0 < since <= time.time():
                self.send_error(400, "since must be a UNIX time in the past")
                return
            with lock:
                try:
                    record = judge(source.counts(bundle.bundle_version, prod.bundle_version, since), config)
                except (SourceError, ValueError) as exc:
                    record = error_record(str(exc), config)
            body = dumps(record).encode()
            code = {"pass": 200, "fail": 409}.get(record["verdict"], 503)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
