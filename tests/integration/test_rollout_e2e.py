"""The canary end to end on loopback: simulated customers -> the chatbot's API (rollout router,
bundles kept by the follower) -> the gateway (real gRPC, real metrics port) -> a real MLflow
server, with a real Prometheus scraping the gateway; the controller reads the two cohorts from
Prometheus' HTTP API and its exemplars.

- a candidate equal to prod is promoted through 50 -> 100 % (100 % keeps a 5 % hold-back control);
- a candidate whose prompts drop the citation instruction is rolled back at its first step: the
  customers complain about ungrounded answers, the judge fails ``thumbs_down_rate``, and the
  verdict and example trace ids (stored traces) are in MLflow;
- with no traffic the canary holds (exit 3) instead of failing.

The judge's minimum samples are scaled down to this test's ~40 requests/s (stated in CONFIG);
margins, alpha and the tests are the live defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from gateway import config as gateway_config
from gateway.server import ThreadedGateway
from orchestrator.release.canary import CanaryController
from orchestrator.release.lifecycle import Lifecycle
from orchestrator.release.registry import Bundle
from orchestrator.rollout.judge import DEFAULT_RATES, CostRule, JudgeConfig, LatencyRule
from orchestrator.rollout.metrics_source import PrometheusSource
from orchestrator.tools.rollout_demo import Rig
from tests.support import MlflowServer, PrometheusServer, free_port, wait_for

pytestmark = pytest.mark.integration

EXPERIMENT = "rollout-e2e"
CONFIG = dataclasses.replace(
    JudgeConfig(),
    rates=tuple(
        dataclasses.replace(r, min_denominator=30 if r.denominator == "requests" else 10) for r in DEFAULT_RATES
    ),
    latency=LatencyRule(min_requests=40),
    cost=CostRule(min_sessions=10),
)


@dataclasses.dataclass
class Env:
    rig: Rig
    prometheus_url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("rollout")
    server = MlflowServer(f"sqlite:///{work / 'mlflow.db'}", work).start()
    metrics_port = free_port()
    gateway = ThreadedGateway(
        gateway_config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "TRACEGW_SPOOL_DIR": str(work / "spool"),
                "TRACEGW_BATCH_MAX_DELAY_S": "0.2",
                # two extra calls per stored trace would saturate this one-worker server at 40 requests/s;
                # the links have their own tests (tests/integration/test_trace_links.py)
                "TRACEGW_TRACE_LINKS": "false",
                # Store 10% (canary included), as production samples: at 100% this one-worker SQLite
                # server fell minutes behind on a slow day, so the rolled-back candidate's example
                # traces were not in MLflow within the wait. The judge reads 100% of traffic from
                # Prometheus; a thumbs-down trace (the examples) is rescued and stored whatever the ratio.
                "MLFLOW_TRACE_SAMPLING_RATIO": "0.1",
                "TRACEGW_TAIL_KEEP_STAGES": "shadow",
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
            }
        )
    )
    prometheus = PrometheusServer([f"127.0.0.1:{metrics_port}"], work).start()
    r = Rig(
        server.url,
        EXPERIMENT,
        gateway.target,
        f"http://127.0.0.1:{metrics_port}/metrics",
        work,
        rate_per_s=40,
        shadow_share=0.0,
        progress=lambda _m: None,
    )
    try:
        yield Env(r.start(), prometheus.url)
    finally:
        r.stop()
        prometheus.stop()
        gateway.stop(10)
        server.stop()


def ready(rig: Rig, bundle: Bundle) -> Bundle:
    """Offline and shadow passes recorded (their own tests cover them): the canary is what is tested."""
    registry = rig.registry
    run = registry.client.create_run(registry.ensure_experiment(EXPERIMENT), run_name="gates for the canary test")
    registry.set_bundle_tags(bundle, {"eval.offline": "passed", "eval.offline.run_id": run.info.run_id})
    Lifecycle(registry).record_verdict(registry.bundle(str(bundle.version)), "shadow", "pass", run.info.run_id)
    return registry.bundle(str(bundle.version))


def controller(
    env: Env,
    steps: tuple[float, ...],
    interval_s: float,
    config: JudgeConfig = CONFIG,
    passes_to_advance: int = 3,
) -> CanaryController:
    return CanaryController(
        env.rig.registry,
        Lifecycle(env.rig.registry),
        PrometheusSource(env.prometheus_url),
        interval_s=interval_s,
        steps=steps,
        config=config,
        passes_to_advance=passes_to_advance,
    )


def test_a_candidate_equal_to_prod_is_promoted(env: Env) -> None:
    rig = env.rig
    before = rig.registry.resolve("prod")
    equal = ready(rig, rig.registry.register("prod", {}, {}, None))
    result = controller(env, (50.0, 100.0), interval_s=3).run(equal)
    assert result.outcome == "promoted", (result.reason, [(s.percent, s.verdict, s.looks) for s in result.steps])
    assert rig.registry.resolve("prod").version == equal.version
    assert rig.registry.resolve("prod-previous").version == before.version


def test_a_candidate_without_citations_is_rolled_back_with_its_verdict_and_examples(env: Env) -> None:
    rig = env.rig
    prod = rig.registry.resolve("prod")
    bad = ready(rig, rig.candidate(drop_citations=True))
    # Nine passes to advance instead of the live three, and 8 s looks: at this test's 40 requests/s
    # a look that is not yet significant counts as a pass (the controller's known low power at small
    # volumes, in the notes), and with the stable cohort's thumbs-down at ~16% three or even seven
    # 3-5 s looks were sometimes too few (42.7% against 16.7%, p 0.024 > 0.00025 at look 7). The
    # judge, its margins and alpha (a tenth per look: at most 10 looks) are the live ones.
    result = controller(env, (50.0,), interval_s=8, passes_to_advance=9).run(bad)
    assert result.outcome == "rolled_back", (result.reason, [(s.percent, s.verdict, s.looks) for s in result.steps])
    assert "thumbs_down_rate" in result.reason
    assert rig.registry.resolve("prod").version == prod.version
    after = rig.registry.bundle(str(bad.version))
    assert after.tags["eval.canary"] == "failed" and after.tags["canary.percent"] == "0"
    client = rig.registry.client
    run = client.get_run(result.steps[-1].run_id)
    assert run.data.tags["canary.verdict"] == "fail"
    examples = [t for t in run.data.tags.get("canary.example_trace_ids", "").split(",") if t]
    assert examples and examples == result.example_trace_ids
    # each example opens in MLflow: the gateway stores every canary trace
    errors: list[str] = []

    def stored(trace_id: str) -> bool:
        try:
            return client.get_trace(f"tr-{trace_id}") is not None
        except Exception as exc:  # not written yet
            errors.append(str(exc)[:300])
            return False

    wait_for(
        lambda: all(stored(t) for t in examples[:3]),
        timeout_s=90,
        what=f"example traces {examples[:3]} in MLflow ({errors[-1:]})",
    )
    assert client.list_artifacts(run.info.run_id, "verdicts")


def test_with_no_traffic_the_canary_holds(env: Env) -> None:
    rig = env.rig
    rig.traffic.stop()
    candidate = ready(rig, rig.registry.register("prod", {"bedrock_model_id": "amazon.nova-lite-v1:0"}, {}, None))
    result = controller(env, (50.0,), interval_s=1, config=dataclasses.replace(CONFIG, looks_per_step=3)).run(candidate)
    assert result.outcome == "held" and result.exit_code == 3
    after = rig.registry.bundle(str(candidate.version))
    assert "eval.canary" not in after.tags and after.tags["canary.percent"] == "0"
