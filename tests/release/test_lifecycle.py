"""Promotion gates, sign-offs, stage moves, promote and rollback on an embedded ``sqlite:///`` registry,
and the bundle events of each step through a real gateway (issue 19 items 7 and 8).

One module-scoped bootstrap (``conftest.boot``); the tests run in file order and each works on
candidates it registers itself, reading prod as it finds it. ``mangaassist-release`` runs
in-process (``cli.run``) with the environment set by ``monkeypatch``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.genai
import pytest
from mlflow import MlflowClient

from orchestrator.release import cli
from orchestrator.release.components import BUNDLE_MODEL, GUARDRAIL_MODEL
from orchestrator.release.lifecycle import Lifecycle, signoff_key
from orchestrator.release.registry import Bundle, tracking_uri_scope
from tests.release.conftest import Bootstrapped
from tests.support import free_port, wait_for

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def release(boot: Bootstrapped, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "release-tests")
    monkeypatch.setenv("MANGAASSIST_RELEASE_EVENTS", "off")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.run(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def client(boot: Bootstrapped) -> MlflowClient:
    return MlflowClient(tracking_uri=boot.uri, registry_uri=boot.uri)


def new_prompt(boot: Bootstrapped, route: str, text: str) -> str:
    with tracking_uri_scope(boot.uri):
        return str(mlflow.genai.register_prompt(name=f"ma-prompts.{route}", template=text).uri)


def new_guardrail(boot: Bootstrapped, max_chars: str) -> str:
    """A new ruleset version, as the guardrail owners would register it (a LoggedModel, then a version)."""
    c = client(boot)
    prod = c.get_model_version_by_alias(GUARDRAIL_MODEL, "prod")
    params = dict(c.get_logged_model(str(prod.source).removeprefix("models:/")).params)
    params["format.max_chars"] = max_chars
    with tracking_uri_scope(boot.uri):
        lm = mlflow.create_external_model(
            name=GUARDRAIL_MODEL,
            params=params,
            model_type="guardrail-ruleset",
            experiment_id=boot.registry.ensure_experiment("release-tests"),
        )
        mv = mlflow.register_model(f"models:/{lm.model_id}", GUARDRAIL_MODEL)
    return f"models:/{GUARDRAIL_MODEL}/{mv.version}"


def candidate(boot: Bootstrapped, route: str = "faq", guardrail: str | None = None) -> Bundle:
    uri = new_prompt(boot, route, f"Answer the {route} question from the context only. v{free_port()}")
    return boot.registry.register("prod", {"guardrail_ruleset": guardrail} if guardrail else {}, {route: uri})


def pass_offline(boot: Bootstrapped, bundle: Bundle) -> str:
    c = client(boot)
    run_id = str(c.create_run(boot.registry.ensure_experiment("release-tests")).info.run_id)
    c.set_terminated(run_id)
    boot.registry.set_bundle_tags(bundle, {"eval.offline": "passed", "eval.offline.run_id": run_id})
    return run_id


def gate_states(shown: dict[str, Any]) -> dict[str, str]:
    return {g["gate"]: g["state"] for g in shown["gates"]}


def test_a_fresh_candidate_is_refused_with_every_unmet_gate_listed(boot: Bootstrapped, release: Run) -> None:
    guardrail = new_guardrail(boot, "1500")
    v = candidate(boot, "recommendation", guardrail).version

    code, out, err = release("promote", "--bundle", str(v))
    assert code == 1, err
    unmet = [line for line in out.splitlines() if line.startswith("UNMET ")]
    assert [line.split(":")[0] for line in unmet] == [
        "UNMET offline-eval",
        "UNMET shadow",
        "UNMET canary",
        "UNMET prompt-signoff",
        "UNMET guardrail-signoff",
    ]
    assert "prompt-signoff:recommendation: missing" in out and guardrail in out
    assert int(client(boot).get_model_version_by_alias(BUNDLE_MODEL, "prod").version) == 1  # nothing moved

    code, out, _ = release("promote", "--bundle", str(v), "--json")
    refused = json.loads(out)
    assert code == 1 and refused["promoted"] is False and refused["compared_with_prod"] == 1
    assert gate_states(refused) == {
        "not-prod": "passed",
        "offline-eval": "missing",
        "shadow": "missing",
        "canary": "missing",
        "prompt-signoff:recommendation": "missing",
        "guardrail-signoff": "missing",
    }


def test_failed_verdicts_and_a_missing_eval_run_are_failed_gates(boot: Bootstrapped, release: Run) -> None:
    bundle = candidate(boot, "faq")
    boot.registry.set_bundle_tags(bundle, {"eval.offline": "passed", "eval.offline.run_id": "0" * 32})
    assert release("stage", "--bundle", str(bundle.version), "--alias", "canary", "--percent", "10")[0] == 0
    code, _, err = release("record-verdict", "--bundle", str(bundle.version), "--stage", "shadow", "--verdict", "fail")
    assert code == 0, err
    code, _, err = release(
        "record-verdict", "--bundle", str(bundle.version), "--stage", "canary", "--verdict", "fail", "--reason", "p95"
    )
    assert code == 0, err

    code, out, _ = release("show", "--bundle", str(bundle.version), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["aliases"] == ["canary", "candidate"] and shown["tags"]["canary.percent"] == "10"
    states = gate_states(shown)
    assert states["offline-eval"] == states["shadow"] == states["canary"] == "failed"
    canary = next(g for g in shown["gates"] if g["gate"] == "canary")
    assert canary["evidence"]["reason"] == "p95" and canary["evidence"]["percent"] == 10.0
    assert canary["evidence"]["by"].startswith("local:")
    offline = next(g for g in shown["gates"] if g["gate"] == "offline-eval")
    assert "does not exist" in offline["detail"]

    # a verdict naming a run that does not exist is refused before anything is written
    code, _, err = release(
        "record-verdict",
        "--bundle",
        str(bundle.version),
        "--stage",
        "shadow",
        "--verdict",
        "pass",
        "--run-id",
        "f" * 32,
    )
    assert code == 2 and f"no MLflow run '{'f' * 32}'" in err
    assert client(boot).get_model_version(BUNDLE_MODEL, str(bundle.version)).tags["eval.shadow"] == "failed"

    assert release("stage", "--bundle", str(bundle.version), "--alias", "shadow", "--percent", "5")[0] == 2
    code, _, err = release("stage", "--bundle", str(bundle.version), "--alias", "canary", "--percent", "0")
    assert code == 2 and "--percent must be in (0, 100]" in err


def test_a_sign_off_is_a_stamped_tag_on_the_changed_prompt_version(boot: Bootstrapped, release: Run) -> None:
    bundle = candidate(boot, "return_policy")
    code, out, err = release("sign-off", "--bundle", str(bundle.version), "--area", "prompt", "--json")
    assert code == 0, err
    [signed] = json.loads(out)
    name, version = bundle.prompts["return_policy"].removeprefix("prompts:/").split("/")
    assert signed["component"] == bundle.prompts["return_policy"]
    tag = client(boot).get_prompt_version(name, version).tags[signoff_key("prompt", bundle.version)]
    stamp = json.loads(tag)
    assert stamp["by"].startswith("local:") and stamp["at"].endswith("Z")
    assert stamp["bundle"] == f"{BUNDLE_MODEL}/{bundle.version}" and stamp["bundle_version"] == bundle.bundle_version
    # nothing else of the bundle's prompts changed, and the guardrail is prod's: nothing to sign there
    code, _, err = release("sign-off", "--bundle", str(bundle.version), "--area", "guardrail")
    assert code == 2 and "serves prod's guardrail ruleset" in err

    life = Lifecycle(boot.registry)
    gate = next(g for g in life.gates(bundle).gates if g.name == "prompt-signoff:return_policy")
    assert gate.state == "passed" and gate.evidence["by"] == stamp["by"]
    # checked by an authenticated MLflow user, a local: stamp (written through embedded access) does not count
    life.authenticated = True
    gate = next(g for g in life.gates(bundle).gates if g.name == "prompt-signoff:return_policy")
    assert gate.state == "failed" and "without authentication" in gate.detail
    # a sign-off for another bundle does not count for this one
    other = boot.registry.register("prod", {}, {"return_policy": bundle.prompts["return_policy"]})
    gate = next(g for g in Lifecycle(boot.registry).gates(other).gates if g.name == "prompt-signoff:return_policy")
    assert gate.state == "missing"


def test_promote_when_every_gate_passes_then_roll_back_in_one_call(boot: Bootstrapped, release: Run) -> None:
    before = int(client(boot).get_model_version_by_alias(BUNDLE_MODEL, "prod").version)
    guardrail = new_guardrail(boot, "1400")
    bundle = candidate(boot, "product_question", guardrail)
    v = str(bundle.version)
    run_id = pass_offline(boot, bundle)
    assert release("stage", "--bundle", v, "--alias", "shadow")[0] == 0
    assert (
        release("record-verdict", "--bundle", v, "--stage", "shadow", "--verdict", "pass", "--run-id", run_id)[0] == 0
    )
    assert release("stage", "--bundle", v, "--alias", "canary", "--percent", "50")[0] == 0
    assert release("record-verdict", "--bundle", v, "--stage", "canary", "--verdict", "pass")[0] == 0
    assert release("sign-off", "--bundle", v, "--area", "prompt")[0] == 0
    code, out, _ = release("promote", "--bundle", v)
    assert code == 1 and out.count("UNMET ") == 1 and "UNMET guardrail-signoff: missing" in out
    assert release("sign-off", "--bundle", v, "--area", "guardrail")[0] == 0

    code, out, err = release("promote", "--bundle", v, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["promoted"] is True and result["previous"] == before
    assert all(g["state"] == "passed" for g in result["gates"])
    c = client(boot)
    assert str(c.get_model_version_by_alias(BUNDLE_MODEL, "prod").version) == v
    assert int(c.get_model_version_by_alias(BUNDLE_MODEL, "prod-previous").version) == before
    stamp = json.loads(c.get_model_version(BUNDLE_MODEL, v).tags["promoted"])
    assert stamp["previous"] == before and stamp["by"].startswith("local:")

    code, out, _ = release("show", "--json")
    shown = json.loads(out)
    assert shown["version"] == bundle.version and {"name", "components", "prompts", "tags"} <= set(shown)
    assert gate_states(shown)["not-prod"] == "failed" and shown["promotable"] is False
    assert {s["area"] for s in shown["signoffs"]} == set()  # compared with itself: nothing differs
    code, text, _ = release("show", "--bundle", str(before))
    assert code == 0 and f"gates (not promotable; compared with prod bundle {v})" in text
    assert "offline-eval                 missing" in text
    assert release("promote", "--bundle", v)[0] == 1  # already prod

    code, out, err = release("rollback", "--reason", "thumbs-down alarm")
    assert code == 0, err
    assert f"prod is bundle {before} again (rolled back from {v})" in out
    assert int(c.get_model_version_by_alias(BUNDLE_MODEL, "prod").version) == before
    rolled = json.loads(c.get_model_version(BUNDLE_MODEL, v).tags["rolled_back"])
    assert rolled["reason"] == "thumbs-down alarm" and rolled["to"] == before

    code, _, err = release("rollback", "--to", "999", "--reason", "x")
    assert code == 2 and "no version 999" in err
    code, _, err = release("rollback", "--to", str(before), "--reason", "x")
    assert code == 2 and "already holds prod" in err
    code, out, err = release("rollback", "--to", v, "--reason", "the alarm was a false positive", "--json")
    assert code == 0 and json.loads(out) == {"from": before, "to": int(v), "reason": "the alarm was a false positive"}
    code, _, _ = release("rollback", "--to", str(before), "--reason", "back to the start")
    assert code == 0 and int(c.get_model_version_by_alias(BUNDLE_MODEL, "prod").version) == before


def test_grant_needs_the_basic_auth_server(release: Run) -> None:
    code, _, err = release("grant", "--role", "release-owner", "--user", "alice")
    assert code == 2 and "embedded sqlite:/// has no users and no rights" in err


def test_each_step_is_a_bundle_event_and_the_outbox_resends_what_the_gateway_missed(
    boot: Bootstrapped,
    release: Run,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    gateway_factory: Callable[..., Any],
) -> None:
    secret = "release-tool-token-0123456789abcdef"
    (tmp_path / "bundle-tokens").write_text(f"release-tool {secret}\n")
    (tmp_path / "client-token").write_text(f"{secret}\n")
    (tmp_path / "wrong-token").write_text("not-the-bundle-token-0123456789\n")
    outbox = tmp_path / "outbox.jsonl"
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=boot.uri,
        TRACEGW_BUNDLE_TOKEN_FILE=str(tmp_path / "bundle-tokens"),
        TRACEGW_BUNDLE_EXPERIMENT="bundle-history",
    )
    monkeypatch.setenv("MANGAASSIST_RELEASE_EVENTS", "on")
    monkeypatch.setenv("MANGAASSIST_RELEASE_OUTBOX", str(outbox))
    monkeypatch.setenv("MANGAASSIST_RELEASE_EVENTS_TIMEOUT_S", "2")

    # 1. the gateway is not there: the MLflow step succeeds, its event waits in the outbox
    monkeypatch.setenv("TRACEGW_CLIENT_TARGET", f"127.0.0.1:{free_port()}")
    uri = new_prompt(boot, "faq", "Answer FAQs in two sentences, from the context only.")
    code, out, err = release("register", "--set-prompt", f"faq={uri}")
    assert code == 0, err
    v = out.strip()
    assert "registered event not delivered" in err and "1 pending in" in err
    [queued] = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert queued["kind"] == "registered" and queued["why"].startswith("UNAVAILABLE")

    # 2. the gateway, but a token that is not its bundle token: still pending, and the new one too
    monkeypatch.setenv("TRACEGW_CLIENT_TARGET", gw.target)
    monkeypatch.setenv("TRACEGW_CLIENT_TOKEN_FILE", str(tmp_path / "wrong-token"))
    code, _, err = release("record-verdict", "--bundle", v, "--stage", "shadow", "--verdict", "pass")
    assert code == 0, err
    assert "re-sent 0 from the outbox, 1 still pending" in err and "2 pending in" in err
    assert "UNAUTHENTICATED" in outbox.read_text()

    # 3. the bundle token: the next command re-sends both (oldest first), then its own event goes directly
    monkeypatch.setenv("TRACEGW_CLIENT_TOKEN_FILE", str(tmp_path / "client-token"))
    code, _, err = release("sign-off", "--bundle", v, "--area", "prompt")
    assert code == 0, err
    assert "re-sent 2 from the outbox, 0 still pending" in err
    assert "signed_off event delivered" in err and outbox.read_text() == ""

    bundle = boot.registry.bundle(v)
    pass_offline(boot, bundle)
    assert release("stage", "--bundle", v, "--alias", "canary", "--percent", "10")[0] == 0
    assert release("record-verdict", "--bundle", v, "--stage", "canary", "--verdict", "pass")[0] == 0
    code, _, err = release("promote", "--bundle", v)
    assert code == 0 and "promoted event delivered" in err

    history = MlflowClient(tracking_uri=boot.uri)

    def bundle_run() -> Any:
        exp = history.get_experiment_by_name("bundle-history")
        runs = history.search_runs([exp.experiment_id]) if exp else []
        found = [r for r in runs if r.info.run_name == f"{BUNDLE_MODEL}@{bundle.bundle_version}"]
        return found[0] if found and found[0].data.tags.get("lifecycle.status") == "promoted" else None

    tags = wait_for(bundle_run, timeout_s=30, interval_s=0.2, what="the bundle's history run, promoted").data.tags
    assert tags["eval.shadow.verdict"] == "pass" and tags["eval.canary.verdict"] == "pass"
    assert tags["component.prompt_version"].startswith("faq/")
    assert tags["promoted.recorded_by"] == "token:release-tool"

    code, _, err = release("rollback", "--reason", "canary alarm")
    assert code == 0 and "rolled_back event delivered" in err

    def rolled_back() -> Any:
        exp = history.get_experiment_by_name("bundle-history")
        assert exp is not None
        runs = history.search_runs([exp.experiment_id])
        run = next((r for r in runs if r.info.run_name == f"{BUNDLE_MODEL}@{bundle.bundle_version}"), None)
        return run if run and run.data.tags.get("lifecycle.status") == "rolled_back" else None

    tags = wait_for(rolled_back, timeout_s=30, interval_s=0.2, what="the rollback in the history run").data.tags
    assert tags["lifecycle.rollback_reason"] == "canary alarm"


def test_every_event_the_tool_builds_passes_the_gateways_validation(boot: Bootstrapped) -> None:
    from clients.encode import encode_bundle_event
    from gateway.receive.decode_events import decode_bundle_events
    from orchestrator.release import events as ev

    prod = boot.registry.resolve("prod")
    other = candidate(boot, "faq")
    built = [
        ev.registered(other, "alice"),
        ev.evaluated(other, "offline", "pass", "ci", metrics={"intent_accuracy": 0.93, "nan": float("nan")}),
        ev.evaluated(other, "shadow", "fail", "alice", run_id="a" * 32, note="agreement 0.81"),
        ev.evaluated(other, "canary", "pass", "alice", percent=10.0),
        ev.signed_off(other, "prompt", "pat", "signed prompts:/ma-prompts.faq/9"),
        ev.signed_off(other, "guardrail", "local:root"),
        ev.promoted(other, prod, "rita"),
        ev.rolled_back(other, prod, "thumbs-down alarm", "rita"),
    ]
    records, rejections = decode_bundle_events([encode_bundle_event(e) for e in built])
    assert rejections == [] and len(records) == len(built)
    components = records[0].details["components"]
    assert components["prompt_version"] == "+".join(
        f"{route}/{uri.rsplit('/', 1)[1]}" for route, uri in sorted(other.prompts.items())
    )
    assert components["guardrail_ruleset_version"] == other.components["guardrail_ruleset"]
    assert records[1].details["metrics"] == {"intent_accuracy": 0.93}  # a NaN metric is left out, not rejected
    assert {r.bundle_version for r in records} == {other.bundle_version}
    assert ev.prompt_pack_label({f"route_{i:03d}": f"prompts:/p.route_{i:03d}/1" for i in range(40)}).startswith(
        "sha256:"
    )
