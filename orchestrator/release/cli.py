"""``mangaassist-release``: the release control plane's command line (registry layers and bundles).

Talks to ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``): a ``sqlite:///`` file
(embedded, in-process) or an ``http(s)://`` tracking server. The registry objects' LoggedModels
go to ``MANGAASSIST_RELEASE_EXPERIMENT`` (default ``mangaassist-releases``); shadow comparisons
and canary runs to the traffic experiment, ``MLFLOW_EXPERIMENT_NAME`` (default: the gateway's
``mangaassist-local``).

An unreachable server fails in seconds, not minutes: unless set, MLflow's
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` default to 2 and 1
here (MLflow's own defaults, 7 and 2, retry for minutes).

Exit status: 0 done (``evaluate``: every threshold met); 1 ``evaluate``: a threshold missed (each
printed with its value, threshold and worst case ids); 2 usage error, unknown or unresolvable URI,
sealed bundle, or MLflow unreachable or failing (one line on stderr, no traceback; ``--debug`` shows it). Results go to
stdout (``--json`` for machines), progress lines to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from orchestrator.config import DEFAULT_RELEASE_BUNDLE, ConfigError, load

if TYPE_CHECKING:
    from orchestrator.release.registry import ReleaseRegistry

DESCRIPTION = """\
Registry layers and release bundles of MangaAssist on MLflow.

  bootstrap   create (idempotently) the hosted models, the per-route prompts, the retriever
              policy, the guardrail ruleset and the first release bundle from what the project ships
  register    create a candidate bundle from another one with some components replaced
  show        print a bundle: version, aliases, the six component URIs, per-route prompt URIs, tags
  evaluate    run the golden set through the chatbot a bundle configures (mlflow.genai.evaluate),
              log the spec §11 metrics and artifacts, gate on thresholds-v1.json (exit 1 when missed)
  compare     per-metric deltas and the cases whose outcome changed between two evaluations
  component   show a component version's params, or derive a new version with some params changed
              (retriever policy, guardrail ruleset, classifier, reranker)
  export      write one bundle as the file the chatbot serves (MANGAASSIST_BUNDLE_FILE)
  follow      keep DIR/<alias>.json exported for prod, canary and shadow (MANGAASSIST_BUNDLE_DIR)
  stage       move alias shadow or canary to a bundle (canary: --percent, tag canary.percent)
  record-verdict  record a shadow or canary verdict on a bundle (tags eval.<stage>, run id, stamp)
  sign-off    sign a bundle's changed prompt versions (prompt owners) or guardrail ruleset
              (guardrail owners): a stamped tag on the component version its owners control
  promote     prod-previous -> current prod, prod -> the bundle, only when every gate passes
  rollback    prod back to prod-previous (or --to V) in one alias move, with --reason
  grant       (admin) give a user a role on the basic-auth server: release-owner, prompt-owner,
              guardrail-owner, gateway
  judge       judge counts or replay a verdict record (--replay FILE.json; no MLflow): exit 0/1/3/2
  shadow-report  compare the shadow pairs of a window (with the noise floor), judge them, log the run
  canary      start (1/10/50/100% with the judge, rollback on fail, promote at the end), status, abort,
              verdict-server (an HTTP verdict for Argo Rollouts or Flagger)

MLFLOW_TRACKING_URI selects MLflow (sqlite:///file or http(s)://server; default sqlite:///mlflow.db).
Rights exist only on the basic-auth server (`mlflow server --app-name basic-auth`, user from
MLFLOW_TRACKING_USERNAME/PASSWORD); embedded sqlite:/// has no users and no rights.
Lifecycle steps (register, evaluate, record-verdict, sign-off, promote, rollback) are also sent to
the gateway as bundle events (MANGAASSIST_RELEASE_EVENTS, default auto: on with an http(s) MLflow);
undelivered ones wait in MANGAASSIST_RELEASE_OUTBOX and are re-sent by the next command.
"""

EPILOG = """\
examples:
  mangaassist-release bootstrap
  mangaassist-release register --from prod \\
      --set-prompt recommendation=prompts:/ma-prompts.recommendation/2 --json
  mangaassist-release register --from prod --set retriever_policy=models:/mangaassist-rag-policy/2
  mangaassist-release show --alias candidate --json
  mangaassist-release evaluate --alias candidate --subset route=recommendation
  mangaassist-release compare --bundle candidate-ref --against 1
  mangaassist-release component --name mangaassist-rag-policy --from prod --set-param final_k=2
  mangaassist-release follow --dir /var/run/mangaassist/bundles --interval 10
  mangaassist-release stage --bundle 2 --alias canary --percent 10
  mangaassist-release record-verdict --bundle 2 --stage canary --verdict pass --reason "1h at 10%"
  mangaassist-release sign-off --bundle 2 --area prompt
  mangaassist-release promote --bundle 2
  mangaassist-release rollback --reason "thumbs-down alarm"
  mangaassist-release grant --role prompt-owner --user alice --password-file alice.pw

exit status: 0 ok (evaluate: every threshold met); 1 evaluate: a threshold missed, promote: a gate
not passed (each listed); 2 usage, validation, permission (HTTP 401/403) or infrastructure error
(one line on stderr)
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values or ():
        key, sep, value = raw.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"{what} expects KEY=VALUE, got {raw!r}")
        if key.strip() in out:
            raise UsageError(f"{what} names {key.strip()!r} twice")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.release.components import SETTABLE_KEYS_HELP

    parser = _Parser(
        prog="mangaassist-release",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and MLflow's own log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    boot = sub.add_parser(
        "bootstrap",
        help="create the registry layers from what the project ships (idempotent)",
        description="Create what is missing: manga-intent-classifier, manga-reranker, mangaassist-rag-policy, "
        "mangaassist-guardrails (registered models, alias prod), ma-prompts.<route> (prompts, aliases "
        "production and candidate) and the release bundle mangaassist-chatbot-prod (aliases prod and candidate). "
        "Running it again creates nothing and moves no alias.",
    )
    boot.add_argument(
        "--bundle-version",
        default=DEFAULT_RELEASE_BUNDLE,
        help=f"bundle_version tag of the shipped bundle (default {DEFAULT_RELEASE_BUNDLE})",
    )
    boot.add_argument("--json", action="store_true", help="print the report and the bundle as JSON")

    reg = sub.add_parser(
        "register",
        help="create a candidate bundle (alias candidate) from another bundle",
        description="Copy the components of the bundle at --from, replace the ones named by --set and "
        "--set-prompt, check that every URI resolves, and register the result as a new version of "
        "mangaassist-chatbot-prod with alias candidate. NAME@ALIAS URIs are pinned to the version they name now.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SETTABLE_KEYS_HELP,
    )
    reg.add_argument("--from", dest="from_alias", default="prod", metavar="ALIAS", help="source bundle alias")
    reg.add_argument("--set", action="append", metavar="KEY=URI", help="replace a component (repeatable)")
    reg.add_argument(
        "--set-prompt", action="append", metavar="ROUTE=URI", help="replace one route's prompt (repeatable)"
    )
    reg.add_argument("--bundle-version", help="bundle_version tag (default: <source bundle_version>+<version>)")
    reg.add_argument("--json", action="store_true", help="print the candidate as JSON")

    show = sub.add_parser(
        "show",
        help="print a bundle",
        description="Print one bundle (default: alias prod), with the state of each promotion gate (passed, "
        "missing or failed, with evidence: run ids, sign-off stamps) compared with the current prod.",
    )
    which = show.add_mutually_exclusive_group()
    which.add_argument("--alias", help="bundle alias (default prod)")
    which.add_argument("--bundle", metavar="V", help="registry version number or bundle_version tag")
    show.add_argument("--json", action="store_true", help="print as JSON")

    exp = sub.add_parser(
        "export",
        help="write a bundle as the file the chatbot serves",
        description="Resolve a bundle and write it (routes, prompt templates, model id, component URIs) to --out, "
        "atomically, for MANGAASSIST_BUNDLE_FILE: the chatbot serves it without talking to MLflow and picks up a "
        "new export within MANGAASSIST_BUNDLE_REFRESH_S.",
    )
    which_exp = exp.add_mutually_exclusive_group()
    which_exp.add_argument("--alias", help="bundle alias (default prod)")
    which_exp.add_argument("--bundle", metavar="V", help="registry version number or bundle_version tag")
    exp.add_argument("--out", required=True, help="the file to write")

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a bundle offline over the golden set and gate it on the thresholds file",
        description="Run the golden dataset (MLflow evaluation dataset mangaassist-golden-v1) through the chatbot "
        "configured by the bundle with mlflow.genai.evaluate and code scorers, in the experiment "
        "mangaassist-evaluation; log intent_accuracy, grounded_answer_rate, guardrail_pass_rate, "
        "thumbs_up_proxy_score, avg_input_tokens, avg_output_tokens, p95_latency_ms and the artifacts; compare "
        "with orchestrator/evaluation/thresholds-v1.json; tag the bundle's model version eval.offline=passed|failed "
        "and eval.offline.run_id. Exit 0 when every threshold is met, 1 when one is missed.",
    )
    ev_which = ev.add_mutually_exclusive_group()
    ev_which.add_argument("--bundle", metavar="V", help="registry version number or bundle_version tag")
    ev_which.add_argument("--alias", help="bundle alias (default prod)")
    ev.add_argument(
        "--subset",
        action="append",
        metavar="KEY=V1[,V2]",
        help="only the golden cases matching (repeatable, AND): route, intent, kind, component, language, "
        "page_type, case_ids",
    )
    ev.add_argument("--limit", type=int, metavar="N", help="an evenly spaced sample of N cases of the selection")
    ev.add_argument("--thresholds", metavar="FILE", help="thresholds file (default: the shipped thresholds-v1.json)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")

    cmp_ = sub.add_parser(
        "compare",
        help="compare two offline evaluations: metric deltas and changed cases",
        description="A and B are evaluation run ids or bundles (version number or bundle_version: the bundle's "
        "latest offline evaluation, tag eval.offline.run_id). Prints per-metric A, B and A - B, and the cases "
        "whose outcome changed (joined on case_id); logs the comparison as a run unless --no-log.",
    )
    cmp_.add_argument("--bundle", required=True, metavar="A", help="run id or bundle (the candidate side)")
    cmp_.add_argument("--against", required=True, metavar="B", help="run id or bundle (the baseline side)")
    cmp_.add_argument("--no-log", action="store_true", help="do not log the comparison as an MLflow run")
    cmp_.add_argument("--json", action="store_true", help="print the comparison as JSON")

    com = sub.add_parser(
        "component",
        help="show a component version's params, or derive a new version",
        description="Without --set-param: print the params of NAME at --from (a version number or alias). With "
        "--set-param: register a new version of NAME with those params changed (checked by the code that reads "
        "them: an out-of-range final_k or a broken pattern is refused) and print its models:/NAME/VERSION; no alias "
        "moves. Use it in a candidate with `register --set KEY=URI`.",
    )
    com.add_argument(
        "--name",
        required=True,
        choices=("manga-intent-classifier", "manga-reranker", "mangaassist-rag-policy", "mangaassist-guardrails"),
    )
    com.add_argument("--from", dest="from_ref", default="prod", metavar="VERSION|ALIAS", help="default prod")
    com.add_argument("--set-param", action="append", metavar="KEY=VALUE", help="change one param (repeatable)")
    com.add_argument("--json", action="store_true", help="print as JSON")

    fol = sub.add_parser(
        "follow",
        help="keep DIR/<alias>.json exported for the chatbot (MANGAASSIST_BUNDLE_DIR)",
        description="Every --interval seconds, resolve each alias, export its bundle and replace DIR/<alias>.json "
        "atomically when it changed; remove the file of an alias that is no longer set (never prod's). When MLflow "
        "cannot be reached the files stay as they are and the round is retried. An alias move reaches chatbots "
        "within --interval plus their MANGAASSIST_BUNDLE_REFRESH_S. Stops on SIGTERM or SIGINT (exit 0).",
    )
    fol.add_argument("--dir", required=True, help="the directory (created if missing)")
    fol.add_argument(
        "--aliases", default="prod,canary,shadow", help="comma-separated aliases to keep (default prod,canary,shadow)"
    )
    fol.add_argument("--interval", type=float, default=10.0, metavar="S", help="seconds between rounds (default 10)")
    fol.add_argument("--once", action="store_true", help="one round, then exit (2 when an alias could not be exported)")
    from orchestrator.release.commands import add_parsers

    add_parsers(sub)
    from orchestrator.rollout.cli import add_parser

    add_parser(sub)
    from orchestrator.release import rollout_commands

    rollout_commands.add_parsers(sub)
    return parser


def _render(bundle_json: dict[str, object]) -> str:
    b = bundle_json
    lines = [
        f"{b['name']} version {b['version']}  bundle_version={b['bundle_version']}",
        f"  aliases:  {', '.join(b['aliases']) or '-'}{'  (released: sealed)' if b['released'] else ''}",  # type: ignore[arg-type]
        f"  model_id: {b['model_id']}",
        "  components:",
    ]
    components = b["components"]
    assert isinstance(components, dict)
    lines += [f"    {k:<18} {v}" for k, v in components.items() if k != "prompt_pack"]
    lines.append("  prompts:")
    prompts = b["prompts"]
    assert isinstance(prompts, dict)
    lines += [f"    {k:<18} {v}" for k, v in prompts.items()]
    tags = b["tags"]
    assert isinstance(tags, dict)
    lines.append("  tags:")
    lines += [f"    {k} = {v}" for k, v in sorted(tags.items())]
    if "gates" in b:
        from orchestrator.release.commands import render_gates

        lines += render_gates(b)
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "judge":  # the rollout judge needs no MLflow
        from orchestrator.rollout import cli as judge_cli

        return judge_cli.run(args)

    def progress(message: str) -> None:
        print(f"mangaassist-release: {message}", file=sys.stderr, flush=True)

    # MLflow's HTTP retry knobs (read by MLflow, not settings of ours): fail fast unless told otherwise.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    try:
        config = load()
        from orchestrator.release.registry import ReleaseRegistry  # imports mlflow, which sets up its loggers

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.DEBUG if args.debug else logging.WARNING)

        registry = ReleaseRegistry(
            config.mlflow.tracking_uri, config.tracing.experiment_name, progress, config.release.experiment
        )
        progress(f"MLflow at {config.mlflow.tracking_uri}")
        events = _release_events(config, progress)
        from orchestrator.release import commands

        if args.command in commands.COMMANDS:
            return commands.run_command(config, registry, args, events, progress)
        from orchestrator.release import rollout_commands

        if args.command in rollout_commands.COMMANDS:
            return rollout_commands.run(registry, args, progress, lambda build: commands.emit(events, build))
        if args.command == "bootstrap":
            report = registry.bootstrap(config, args.bundle_version)
            assert report.bundle is not None
            bundle = commands.lifecycle_json(registry, report.bundle)
            if args.json:
                print(json.dumps({"created": report.created, "existing": report.existing, "bundle": bundle}, indent=2))
            else:
                print(f"created {len(report.created)}, existing {len(report.existing)}")
                print(_render(bundle))
        elif args.command == "register":
            candidate = registry.register(
                args.from_alias,
                _pairs(args.set, "--set"),
                _pairs(args.set_prompt, "--set-prompt"),
                args.bundle_version,
            )
            print(json.dumps(candidate.to_json(), indent=2) if args.json else candidate.version)
            from orchestrator.release import events as ev
            from orchestrator.release.lifecycle import actor

            commands.emit(events, lambda: ev.registered(candidate, actor(registry.tracking_uri)))
        elif args.command == "evaluate":
            return _evaluate(registry, args, progress, events)
        elif args.command == "export":
            from orchestrator.release.registry import export_bundle

            b = registry.bundle(args.bundle) if args.bundle else registry.resolve(args.alias or "prod")
            _write_atomically(args.out, json.dumps(export_bundle(registry, b), indent=2, ensure_ascii=False) + "\n")
            print(f"wrote bundle {b.version} ({b.bundle_version}) to {args.out}")
        elif args.command in ("component", "follow"):
            return _component_or_follow(registry, args, progress)
        elif args.command == "compare":
            from orchestrator.evaluation.compare import compare

            result = compare(registry, args.bundle, args.against, log_run=not args.no_log)
            print(json.dumps(result.to_json(), indent=2) if args.json else result.render())
        else:
            b = registry.bundle(args.bundle) if args.bundle else registry.resolve(args.alias or "prod")
            shown = commands.lifecycle_json(registry, b)
            print(json.dumps(shown, indent=2) if args.json else _render(shown))
    except Exception as exc:
        if args.debug:
            raise
        print(f"mangaassist-release: error: {_reason(exc)}", file=sys.stderr)
        return 2
    return 0


def _evaluate(
    registry: ReleaseRegistry, args: argparse.Namespace, progress: Callable[[str], None], events: Any = None
) -> int:
    from pathlib import Path

    from orchestrator.evaluation.dataset import DEFAULT_VERSION
    from orchestrator.evaluation.evaluate import THRESHOLDS_PATH, evaluate_bundle, parse_subset

    bundle = registry.bundle(args.bundle) if args.bundle else registry.resolve(args.alias or "prod")
    outcome = evaluate_bundle(
        registry,
        bundle,
        subset=parse_subset(args.subset),
        limit=args.limit,
        thresholds_path=Path(args.thresholds) if args.thresholds else THRESHOLDS_PATH,
        progress=progress,
    )
    verdict = "passed" if outcome.passed else "failed"
    from orchestrator.release import commands
    from orchestrator.release import events as ev
    from orchestrator.release.lifecycle import actor

    commands.emit(
        events,
        lambda: ev.evaluated(
            bundle,
            "offline",
            "pass" if outcome.passed else "fail",
            actor(registry.tracking_uri),
            metrics=outcome.metrics,
            run_id=outcome.run_id,
            dataset_version=f"mangaassist-golden-{DEFAULT_VERSION}",
            note=f"thresholds {outcome.thresholds_version}, {len(outcome.rows)} cases",
        ),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "bundle": bundle.version,
                    "bundle_version": bundle.bundle_version,
                    "run_id": outcome.run_id,
                    "experiment_id": outcome.experiment_id,
                    "verdict": verdict,
                    "metrics": outcome.metrics,
                    "missed": [
                        {
                            "metric": m.threshold.metric,
                            "value": m.measured,
                            m.threshold.bound: m.threshold.value,
                            "worst_cases": list(m.worst),
                        }
                        for m in outcome.missed
                    ],
                    "not_measured": outcome.not_measured,
                    "wall_s": round(outcome.wall_s, 2),
                },
                indent=2,
            )
        )
    else:
        print(
            f"bundle {bundle.version} ({bundle.bundle_version}): offline evaluation {verdict} "
            f"on {len(outcome.rows)} cases in {outcome.wall_s:.1f}s "
            f"(run {outcome.run_id}, {outcome.thresholds_version})"
        )
        for name, value in outcome.metrics.items():
            print(f"  {name:<24} {value:.4g}")
        for m in outcome.missed:
            print(f"MISSED {m.line()}")
        for name in outcome.not_measured:
            print(f"not measured on this subset: {name}")
    return 0 if outcome.passed else 1


def _component_or_follow(registry: ReleaseRegistry, args: argparse.Namespace, progress: Callable[[str], None]) -> int:
    if args.command == "component":
        changes = _pairs(args.set_param, "--set-param")
        if not changes:
            ref = args.from_ref
            uri = f"models:/{args.name}/{ref}" if ref.isdigit() else f"models:/{args.name}@{ref}"
            params = registry.component_params(uri)
            print(
                json.dumps(params, indent=2, ensure_ascii=False)
                if args.json
                else "\n".join(f"{k} = {v}" for k, v in sorted(params.items()))
            )
            return 0
        uri = registry.derive_component(args.name, args.from_ref, changes)
        print(json.dumps({"uri": uri, "changed": changes}, indent=2) if args.json else uri)
        return 0
    import signal
    import threading
    from pathlib import Path

    from orchestrator.release.follow import follow

    aliases = [a.strip() for a in args.aliases.split(",") if a.strip()]
    if not aliases:
        raise UsageError("--aliases names no alias")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    progress(f"following {', '.join(aliases)} into {args.dir} every {args.interval:g}s")
    return follow(registry, Path(args.dir), aliases, args.interval, progress, stop, 1 if args.once else None)


def _release_events(config: Any, progress: Callable[[str], None]) -> Any:
    """The bundle-event sender (None when MANGAASSIST_RELEASE_EVENTS is off); re-sends the outbox first."""
    from pathlib import Path

    from clients.config import ClientConfig
    from orchestrator.release.events import ReleaseEvents, events_enabled

    if not events_enabled(config.release.events, config.mlflow.tracking_uri):
        return None
    client = ClientConfig.from_env(target=config.tracing.gateway_target)
    sender = ReleaseEvents(client, Path(config.release.outbox), config.release.events_timeout_s, progress)
    sender.resend()
    return sender


def _reason(exc: BaseException) -> str:
    from orchestrator.release.registry import ReleaseError

    if isinstance(exc, (ReleaseError, UsageError, ConfigError)):
        return str(exc)
    text = " ".join(str(exc).split())
    refused = re.search(r"API request to (\S+?)/api/\S* failed .*?(\[Errno \d+\] [^\"')]+)", text)
    if refused:
        return f"cannot reach MLflow at {refused.group(1)}: {refused.group(2).strip()}"
    return f"{type(exc).__name__}: {text[:400]}"


def _write_atomically(path: str, text: str) -> None:
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bundle-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
