"""The canary controller on a real (embedded) registry with counts from a scripted source: a good
candidate steps to 100 % and is promoted through the gate; a bad one is rolled back within the
interval with its verdict and example trace ids; no traffic holds instead of failing; an
unreadable source aborts after the error budget; `canary abort` is honoured at the next look."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.release.canary import CanaryController, require_passed, status
from orchestrator.release.lifecycle import Lifecycle
from orchestrator.release.registry import Bundle, ReleaseError
from orchestrator.rollout.judge import JudgeConfig
from orchestrator.rollout.metrics_source import SourceError
from tests.release.conftest import Bootstrapped

BOUNDS = ("0.1", "0.25", "0.5", "1", "2.5")
CONFIG = JudgeConfig(looks_per_step=3)


def counts(requests: int, grounding_failures: int = 0, errors: int = 0) -> dict[str, Any]:
    fast = int(requests * 0.9)
    return {
        "requests": requests,
        "errors": errors,
        "guardrail_blocks": 0,
        "grounding_failures": grounding_failures,
        "feedback": requests // 10,
        "thumbs_down": requests // 100,
        "sessions": requests // 2,
        "cost_usd": requests * 0.001,
        "latency_buckets": {"0.1": 0, "0.25": fast, "0.5": requests, "1": requests, "2.5": requests, "+Inf": requests},
    }


def document(stable: int, canary: int, canary_failures: int = 0) -> dict[str, Any]:
    return {
        "cohorts": {
            "stable": {"faq": counts(stable, grounding_failures=stable // 100)},
            "canary": {"faq": counts(canary, grounding_failures=canary // 100 + canary_failures)},
        }
    }


class Scripted:
    """Counts since the step began: each look adds ``per_look`` requests a cohort."""

    def __init__(self, per_look: int, failures_per_look: int = 0, error: bool = False) -> None:
        self.per_look, self.failures, self.error = per_look, failures_per_look, error
        self.looks = 0
        self.examples: dict[str, list[str]] = {}

    def reset(self) -> None:
        self.looks = 0

    def counts(self, canary_bundle: str, prod_bundle: str, start: float) -> dict[str, Any]:
        if self.error:
            raise SourceError("gateway metrics at http://127.0.0.1:1/metrics: connection refused")
        self.looks += 1
        n = self.per_look * self.looks
        if self.failures:
            self.examples["canary/grounding_failures"] = ["tr-" + "a" * 32, "tr-" + "b" * 32]
        return document(n, n, self.failures * self.looks)


@pytest.fixture
def candidate(boot: Bootstrapped) -> Iterator[Bundle]:
    registry = boot.registry
    bundle = registry.register("prod", {"bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"}, {}, None)
    client = registry.client
    eid = registry.ensure_experiment(registry.experiment_name)
    run = client.create_run(eid, run_name="offline-eval (test)")
    registry.set_bundle_tags(bundle, {"eval.offline": "passed", "eval.offline.run_id": run.info.run_id})
    Lifecycle(registry).record_verdict(registry.bundle(str(bundle.version)), "shadow", "pass", run.info.run_id)
    yield registry.bundle(str(bundle.version))


def controller(boot: Bootstrapped, source: Any, events: list[tuple[str, list[str]]] | None = None) -> CanaryController:
    def on_rollback(bundle: Bundle, reason: str, record: dict[str, Any], examples: list[str]) -> None:
        if events is not None:
            events.append((reason, examples))

    return CanaryController(
        boot.registry,
        Lifecycle(boot.registry),
        source,
        interval_s=0,
        config=CONFIG,
        abort_after=2,
        on_rollback=on_rollback,
        sleep=lambda _s: None,
    )


def test_a_good_candidate_steps_to_100_percent_and_is_promoted(boot: Bootstrapped, candidate: Bundle) -> None:
    previous = boot.registry.resolve("prod")
    result = controller(boot, Scripted(per_look=400)).run(candidate)
    assert result.outcome == "promoted", result.reason
    assert [s.percent for s in result.steps] == [1, 10, 50, 100] and {s.verdict for s in result.steps} == {"pass"}
    assert boot.registry.resolve("prod").version == candidate.version
    assert boot.registry.resolve("prod-previous").version == previous.version
    after = boot.registry.bundle(str(candidate.version))
    assert after.tags["eval.canary"] == "passed" and status(after)["canary.state"] == "promoted"
    runs = boot.registry.client.search_runs(
        [boot.registry.ensure_experiment(boot.registry.experiment_name)],
        f"tags.`release.bundle` = '{candidate.bundle_version}' AND tags.`release.eval_kind` = 'canary'",
    )
    assert len(runs) == 4  # one run per step, each look's verdict record an artifact
    # put the previous prod back for the other tests
    boot.registry.client.set_registered_model_alias("mangaassist-chatbot-prod", "prod", str(previous.version))


def test_a_bad_candidate_is_rolled_back_with_its_verdict_and_examples(boot: Bootstrapped, candidate: Bundle) -> None:
    events: list[tuple[str, list[str]]] = []
    prod_before = boot.registry.resolve("prod").version
    result = controller(boot, Scripted(per_look=400, failures_per_look=40), events).run(candidate)
    assert result.outcome == "rolled_back" and result.exit_code == 1
    assert len(result.steps) == 1 and result.steps[0].looks == 1  # within the first interval
    assert "grounding_failure_rate" in result.reason
    after = boot.registry.bundle(str(candidate.version))
    assert after.tags["eval.canary"] == "failed" and after.tags["canary.percent"] == "0"
    assert boot.registry.resolve("prod").version == prod_before  # prod never moved
    assert events and events[0][1] == ["tr-" + "a" * 32, "tr-" + "b" * 32]


def test_no_traffic_holds_and_never_fails(boot: Bootstrapped, candidate: Bundle) -> None:
    result = controller(boot, Scripted(per_look=0)).run(candidate)
    assert result.outcome == "held" and result.exit_code == 3
    assert result.steps[0].looks == CONFIG.looks_per_step
    after = boot.registry.bundle(str(candidate.version))
    assert "eval.canary" not in after.tags and after.tags["canary.percent"] == "0"


def test_an_unreadable_source_aborts_after_the_error_budget(boot: Bootstrapped, candidate: Bundle) -> None:
    result = controller(boot, Scripted(per_look=100, error=True)).run(candidate)
    assert result.outcome == "aborted" and "unreachable for 2 consecutive looks" in result.reason
    assert boot.registry.bundle(str(candidate.version)).tags["eval.canary"] == "failed"


def test_abort_is_honoured_and_gates_are_required(boot: Bootstrapped, candidate: Bundle) -> None:
    from orchestrator.release.canary import abort

    abort(boot.registry, candidate)  # a stale request: the controller clears it when it starts
    source = Scripted(per_look=0)

    def abort_on_first_look(*args: Any) -> dict[str, Any]:
        abort(boot.registry, candidate)
        return Scripted.counts(source, *args)

    source.counts = abort_on_first_look  # type: ignore[method-assign,assignment]
    result = controller(boot, source).run(candidate)
    assert result.outcome == "aborted" and "aborted by" in result.reason

    bare = boot.registry.register("prod", {"bedrock_model_id": "anthropic.claude-3-haiku-20240307-v1:0"}, {}, None)
    with pytest.raises(ReleaseError, match=r"lacks eval\.offline=passed and eval\.shadow=passed"):
        require_passed(bare)


def test_the_verdict_endpoint_answers_like_argo_expects(boot: Bootstrapped, candidate: Bundle) -> None:
    import json as _json
    import threading
    import urllib.error
    import urllib.request

    from orchestrator.release.rollout_commands import verdict_server

    prod = boot.registry.resolve("prod")
    for source, code in ((Scripted(per_look=400), 200), (Scripted(400, 40), 409), (Scripted(0), 503)):
        server = verdict_server(candidate, prod, source, 0, CONFIG)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/verdict"
        try:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    status, body = resp.status, _json.loads(resp.read())
            except urllib.error.HTTPError as err:
                status, body = err.code, _json.loads(err.read())
                err.close()
            assert status == code and body["verdict"] in ("pass", "fail", "inconclusive")
            with pytest.raises(urllib.error.HTTPError) as bad:
                urllib.request.urlopen(url + "?since=yesterday", timeout=10)
            assert bad.value.code == 400
            bad.value.close()
        finally:
            server.shutdown()
            server.server_close()
