"""``make demo-rollout``: shadow and canary end to end on loopback, with simulated customers.

What runs (all on 127.0.0.1): a local ``mlflow server`` (SQLite) as the registry and trace store,
the gateway sidecar (``tracegw serve``) writing to it, ``mangaassist-release follow`` (a thread
here) keeping the bundle directory, the chatbot's API serving prod through the rollout router
with a shadow runner, and a traffic driver whose simulated customers
(``orchestrator.tools.customers``) vote on the answers they get. Then:

1. a **good candidate** (equal to prod in behaviour: the same components, a new registry
   version): offline evaluation on a sample of the golden set, shadow (``shadow-report
   --record``), then ``canary start`` over 50 → 100 %, judged on the gateway's live metrics (the
   judge's minimum samples scaled to the demo's traffic; smaller steps have too little traffic at
   40 requests/s for the judge to see a regression quickly, as printed): it is promoted;
2. a **bad candidate** (its prompts drop the citation instruction): its shadow comparison fails
   on ``grounding_failure_rate``, as it should. To show the canary's own safety net the demo then
   records offline and shadow passes by hand (``record-verdict``, printed as such) and starts
   the canary: the judge fails it at the first step and it is rolled back, with its verdict and
   example trace ids in MLflow.

Every step is the library call the ``mangaassist-release`` command makes. Bounded: traffic stops
with the demo; each wait has a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.tools.demo import _free_port as free_port
from orchestrator.tools.demo import _http_ok, _wait, start_mlflow_server

CITE = "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. "


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    assert isinstance(out, dict)
    return out


@dataclass
class Traffic:
    """Simulated customers against the chat API until stopped (bounded by ``max_requests``)."""

    api_url: str
    rate_per_s: float
    seed: int = 5
    max_requests: int = 200_000
    sent: int = 0
    votes: dict[str, int] = field(default_factory=lambda: {"thumbs_up": 0, "thumbs_down": 0})
    errors: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="rollout-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        from orchestrator.tools.customers import Customers
        from orchestrator.tools.scenarios import plan_chats

        customers = Customers(seed=self.seed)
        plans = plan_chats(4000, seed=self.seed, repeat_rate=0.0, feedback_rate=0.0)
        interval, next_at, i = 1.0 / self.rate_per_s, time.monotonic(), 0
        while not self._stop.is_set() and self.sent < self.max_requests:
            plan = plans[i % len(plans)]
            body = {**plan.body, "session_id": f"{plan.body['session_id']}-{i // len(plans)}"}
            i += 1
            try:
                started = time.perf_counter()
                response = _post(self.api_url + "/v1/chat", body)
                latency_ms = (time.perf_counter() - started) * 1000
                self.sent += 1
                vote = customers.vote(plan.intent, body["message"], response, latency_ms)
                if vote is not None:
                    feedback, reason = vote
                    _post(
                        self.api_url + "/v1/feedback",
                        {
                            "response_id": response["response_id"],
                            "trace_id": response["trace_id"],
                            "feedback": feedback,
                            "reason_code": reason,
                            "session_id": body["session_id"],
                        },
                    )
                    self.votes[feedback] += 1
            except OSError as exc:  # counted and shown: a refused vote would silently bias the judge
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)


class Rig:
    """The chatbot side of the rollout: registry, follower, router + shadow runner, API, traffic."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        gateway_target: str,
        metrics_url: str,
        workdir: Path,
        *,
        rate_per_s: float = 40.0,
        shadow_share: float = 0.5,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.gateway_target, self.metrics_url = gateway_target, metrics_url
        self.workdir = workdir
        self.rate_per_s, self.shadow_share = rate_per_s, shadow_share
        self.progress = progress
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Rig:
        from clients import ClientConfig, Tracer
        from orchestrator.adapters import offline_providers
        from orchestrator.api import attach_shadow, create_app, serve_in_thread
        from orchestrator.cache import ResponseCache
        from orchestrator.config import load
        from orchestrator.release.follow import follow_once
        from orchestrator.release.registry import ReleaseRegistry
        from orchestrator.service import ChatService

        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = self.experiment
        self.registry = ReleaseRegistry(self.tracking_uri, self.experiment)
        self.registry.bootstrap(load({"MLFLOW_TRACKING_URI": self.tracking_uri}))
        self.bundles = self.workdir / "bundles"
        follow_once(self.registry, self.bundles, ["prod", "canary", "shadow"])

        def follower() -> None:  # what `mangaassist-release follow --interval 1` does
            while not self._stop.wait(1.0):
                follow_once(self.registry, self.bundles, ["prod", "canary", "shadow"])

        t = threading.Thread(target=follower, name="follow", daemon=True)
        t.start()
        self._threads.append(t)
        cfg = load(
            {
                "MANGAASSIST_BUNDLE_DIR": str(self.bundles),
                "MANGAASSIST_BUNDLE_REFRESH_S": "0.5",
                "MANGAASSIST_SHADOW_SHARE": str(self.shadow_share),
                "MANGAASSIST_SHADOW_RATE_PER_S": "50",
                "MANGAASSIST_SHADOW_COST_CAP_USD_PER_HOUR": "100",
            }
        )
        self.tracer = Tracer(ClientConfig(target=self.gateway_target, service_name="mangaassist-rollout-demo"))
        # no response cache: a cached primary would not be comparable with its shadow run
        self.service = ChatService(self.tracer, offline_providers(cfg), cache=ResponseCache(0, 0))
        self.service.retriever.warm_up()
        attach_shadow(self.service, cfg)
        self.api = serve_in_thread(create_app(self.service))
        self.traffic = Traffic(self.api.url, self.rate_per_s).start()
        self.progress(f"chat API on {self.api.url}; simulated customers at {self.rate_per_s:g}/s")
        return self

    def stop(self) -> None:
        self._stop.set()
        traffic = getattr(self, "traffic", None)
        if traffic is not None:
            traffic.stop()
        api = getattr(self, "api", None)
        if api is not None:
            api.stop()
        if getattr(self, "service", None) is not None and self.service.shadow is not None:
            self.service.shadow.close()  # type: ignore[attr-defined]
        if getattr(self, "tracer", None) is not None:
            self.tracer.flush(timeout_s=10)
            self.tracer.shutdown(timeout_s=5)

    # -- steps ------------------------------------------------------------------------------------

    def candidate(self, *, drop_citations: bool) -> Any:
        import mlflow

        from orchestrator.release.registry import tracking_uri_scope

        prod = self.registry.resolve("prod")
        if not drop_citations:
            return self.registry.register(
                "prod", {"bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"}, {}, None
            )
        templates = self.registry.prompt_templates(prod)
        prompts = {}
        with tracking_uri_scope(self.tracking_uri):
            for route, (_label, template) in templates.items():
                if CITE in template:
                    pv = mlflow.genai.register_prompt(
                        f"ma-prompts.{route}",
                        template=template.replace(CITE, ""),
                        commit_message="no citations",
                    )
                    prompts[route] = str(pv.uri)
        return self.registry.register("prod", {}, prompts, None)

    def evaluate(self, bundle: Any, limit: int) -> bool:
        from orchestrator.evaluation.evaluate import THRESHOLDS_PATH, evaluate_bundle

        outcome = evaluate_bundle(self.registry, bundle, subset={}, limit=limit, thresholds_path=THRESHOLDS_PATH)
        self.progress(
            f"offline evaluation of bundle {bundle.version}: {'passed' if outcome.passed else 'failed'} "
            f"on {len(outcome.rows)} cases (run {outcome.run_id})"
        )
        return bool(outcome.passed)

    def shadow(self, bundle: Any, pairs: int, timeout_s: float, record: bool = True) -> dict[str, Any]:
        from orchestrator.release.lifecycle import Lifecycle
        from orchestrator.release.rollout_commands import _log_shadow_run, shadow_report

        life = Lifecycle(self.registry)
        life.stage(bundle, "shadow")
        started = time.time()
        deadline = time.monotonic() + timeout_s
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            time.sleep(3)
            report = shadow_report(self.registry, (time.time() - started) / 60 + 0.1)
            if len(report["pairs"]) >= pairs:
                break
        run_id = _log_shadow_run(self.registry, bundle.bundle_version, (time.time() - started) / 60, report)
        verdict = report["verdict"]["verdict"]
        cand = report["candidate"]
        self.progress(
            f"shadow of bundle {bundle.version}: {verdict} on {len(report['pairs'])} pairs (run {run_id}); "
            f"citation overlap {cand.get('citation_overlap', 0):.2f} (noise floor "
            f"{report['noise_floor'].get('citation_overlap', float('nan')):.2f}), grounding failures "
            f"{cand.get('grounding_failure_rate', 0):.2f}"
        )
        if record and verdict in ("pass", "fail"):
            life.record_verdict(self.registry.bundle(str(bundle.version)), "shadow", verdict, run_id)
        report["run_id"] = run_id
        return report

    def canary(self, bundle: Any, steps: tuple[float, ...], interval_s: float, config: Any = None) -> Any:
        from orchestrator.release.canary import CanaryController
        from orchestrator.release.lifecycle import Lifecycle
        from orchestrator.rollout.metrics_source import ScrapeSource

        controller = CanaryController(
            self.registry,
            Lifecycle(self.registry),
            ScrapeSource([self.metrics_url]),
            interval_s=interval_s,
            steps=steps,
            config=config,
            progress=lambda m: self.progress(f"  canary {m}"),
        )
        return controller.run(self.registry.bundle(str(bundle.version)))


def demo_judge_config() -> Any:
    """The live judge with its minimum samples scaled to the demo's ~40 requests/s (margins, alpha
    and tests unchanged): at the 100 % step the 5 % hold-back control gets 2 requests/s."""
    import dataclasses

    from orchestrator.rollout.judge import DEFAULT_RATES, CostRule, JudgeConfig, LatencyRule

    return dataclasses.replace(
        JudgeConfig(),
        rates=tuple(
            dataclasses.replace(r, min_denominator=30 if r.denominator == "requests" else 10) for r in DEFAULT_RATES
        ),
        latency=LatencyRule(min_requests=40),
        cost=CostRule(min_sessions=10),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mangaassist-rollout-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".rollout-demo", help="emptied first (default .rollout-demo)")
    parser.add_argument("--rate", type=float, default=40.0, help="simulated customers' requests per second")
    parser.add_argument("--interval", type=float, default=5.0, help="canary analysis interval in seconds")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    procs: list[subprocess.Popen[bytes]] = []
    rig: Rig | None = None
    try:
        port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        tracking_uri = f"http://127.0.0.1:{port}"
        print(f"1. mlflow server on {tracking_uri} (SQLite {workdir / 'mlflow.db'}), gateway on 127.0.0.1:{grpc_port}")
        procs.append(start_mlflow_server(workdir, f"sqlite:///{workdir / 'mlflow.db'}", port, workdir / "mlflow.log"))
        log = open(workdir / "services.log", "ab")  # noqa: SIM115
        _wait(lambda: _http_ok(tracking_uri + "/health"), 120, "mlflow server")
        gw_env = dict(
            os.environ,
            TRACEGW_LISTEN_ADDRESS=f"127.0.0.1:{grpc_port}",
            TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
            MLFLOW_TRACKING_URI=tracking_uri,
            MLFLOW_EXPERIMENT_NAME="mangaassist-rollout-demo",
            TRACEGW_SPOOL_DIR=str(workdir / "spool"),
            # two link calls per stored trace would saturate this one-worker server at this traffic
            # (make demo shows the links); the shadow comparison needs its traces stored promptly
            TRACEGW_TRACE_LINKS="false",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                env=gw_env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait(lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/metrics"), 60, "gateway metrics")
        rig = Rig(
            tracking_uri,
            "mangaassist-rollout-demo",
            f"127.0.0.1:{grpc_port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
            workdir,
            rate_per_s=args.rate,
        ).start()
        from orchestrator.release.lifecycle import Lifecycle

        print("2. a good candidate (the same components as prod, a new version)")
        good = rig.candidate(drop_citations=False)
        rig.evaluate(good, limit=60)
        rig.shadow(good, pairs=220, timeout_s=180)
        judge_config = demo_judge_config()
        print("   (the judge's minimum samples are scaled to this demo's traffic; margins and tests are the live ones)")
        print("   (steps 50 -> 100: at this demo's 40 requests/s a 1 % or 10 % step has too little traffic for the")
        print("    judge to see even a large regression within a few looks; production steps 1 -> 10 -> 50 -> 100)")
        result = rig.canary(good, (50.0, 100.0), args.interval, judge_config)
        print(f"   canary: {result.outcome} {result.reason}")
        print("3. a bad candidate: prompts without the citation instruction")
        bad = rig.candidate(drop_citations=True)
        report = rig.shadow(bad, pairs=220, timeout_s=180, record=False)
        print(f"   the shadow comparison {report['verdict']['verdict']}s it: the gate would stop it here.")
        print("   recording offline and shadow passes BY HAND, to show what the canary does on its own:")
        life = Lifecycle(rig.registry)
        run = rig.registry.client.create_run(
            rig.registry.ensure_experiment("mangaassist-rollout-demo"), run_name="hand-recorded pass (demo)"
        )
        rig.registry.set_bundle_tags(bad, {"eval.offline": "passed", "eval.offline.run_id": run.info.run_id})
        life.record_verdict(rig.registry.bundle(str(bad.version)), "shadow", "pass", run.info.run_id, "demo: by hand")
        result = rig.canary(bad, (50.0, 100.0), args.interval, judge_config)
        print(f"   canary: {result.outcome}: {result.reason}")
        print(f"   example traces: {', '.join(result.example_trace_ids) or '-'}")
        t = rig.traffic
        print(f"\nprod is bundle {rig.registry.resolve('prod').version}; {t.sent} requests, customers voted {t.votes}")
        if t.errors:
            print(f"  {t.errors} requests or votes failed; the last: {t.last_error}")
        shadow = rig.service.shadow
        if shadow is not None:
            print(f"  shadow runner: {shadow.counts()['runs']}")
        print(
            f"Open it: {tracking_uri} (Models: mangaassist-chatbot-prod tags eval.*, canary.*; Experiments: "
            "mangaassist-rollout-demo runs shadow-compare-* and canary-*)"
        )
        return 0 if result.outcome == "rolled_back" else 1
    finally:
        if rig is not None:
            rig.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
