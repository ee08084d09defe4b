"""The lifecycle subcommands of ``mangaassist-release``: stage, record-verdict, sign-off, promote,
rollback, grant; and the bundle events every step sends (``orchestrator.release.events``).

``cli.py`` owns the process (configuration, MLflow's log levels, exit status 2 for errors) and
calls :func:`add_parsers` and :func:`run_command`; this module only builds the parsers, runs one
step with :class:`~orchestrator.release.lifecycle.Lifecycle` and prints its result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clients.events import BundleEvent
    from orchestrator.config import OrchestratorConfig
    from orchestrator.release.events import ReleaseEvents
    from orchestrator.release.lifecycle import GateReport, Lifecycle
    from orchestrator.release.registry import Bundle, ReleaseRegistry

COMMANDS = ("stage", "record-verdict", "sign-off", "promote", "rollback", "grant")

BUNDLE_HELP = "registry version number or bundle_version tag"
GATES_HELP = """\
gates (all must pass):
  not-prod                the bundle does not already hold alias prod
  offline-eval            eval.offline=passed and the run in eval.offline.run_id exists (`evaluate`)
  shadow, canary          eval.shadow / eval.canary = passed (`record-verdict`)
  prompt-signoff:<route>  for each prompt version that differs from prod's: tag
                          signoff.prompt.bundle.<V> on that prompt version, written by a prompt owner
  guardrail-signoff       when the guardrail ruleset differs from prod's: tag
                          signoff.guardrail.bundle.<V> on that ruleset version, by a guardrail owner
"""

RIGHTS_NOTE = (
    "Who may write is enforced by MLflow's basic-auth server (see `grant`); stamps name the authenticated "
    "MLFLOW_TRACKING_USERNAME. Embedded sqlite:/// has no users and no rights: anyone with the file can do "
    "anything, and stamps read local:<os user> (they do not count when an authenticated user promotes)."
)


def add_parsers(sub: Any) -> None:
    """Add the lifecycle subcommands to ``mangaassist-release``'s subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    st = sub.add_parser(
        "stage",
        help="move alias shadow or canary to a bundle",
        description="Move alias shadow or canary of mangaassist-chatbot-prod to bundle V. For canary, the traffic "
        "share is written as model-version tag canary.percent (default 1). The rollout itself (routing by share) "
        "is the gateway's and the chatbot's job. Needs EDIT on mangaassist-chatbot-prod (release-owner). "
        "Sends no bundle event: bundles.proto has no kind for a stage move.",
    )
    st.add_argument("--bundle", required=True, metavar="V", help=BUNDLE_HELP)
    st.add_argument("--alias", required=True, choices=("shadow", "canary"))
    st.add_argument("--percent", type=float, metavar="P", help="canary traffic share, 0 < P <= 100 (default 1)")
    st.add_argument("--json", action="store_true", help="print the bundle as JSON")

    rv = sub.add_parser(
        "record-verdict",
        help="record a shadow or canary verdict on a bundle",
        description="Tag bundle V's model version eval.<stage>=passed|failed, eval.<stage>.run_id (when --run-id "
        "names an existing MLflow run) and eval.<stage>.stamp (who, when, reason; canary: the share from "
        "canary.percent). Until the shadow and canary judges exist this is how those gates get a verdict. "
        "Needs EDIT on mangaassist-chatbot-prod (release-owner). Sends an `evaluated` bundle event.",
    )
    rv.add_argument("--bundle", required=True, metavar="V", help=BUNDLE_HELP)
    rv.add_argument("--stage", required=True, choices=("shadow", "canary"))
    rv.add_argument("--verdict", required=True, choices=("pass", "fail"))
    rv.add_argument("--run-id", metavar="R", help="the MLflow run holding the comparison (checked to exist)")
    rv.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the stamp)")
    rv.add_argument("--json", action="store_true", help="print the stamp as JSON")

    so = sub.add_parser(
        "sign-off",
        help="sign a bundle's changed prompts or guardrail ruleset",
        description="Write a sign-off for bundle V as tag signoff.<area>.bundle.<V> on the component versions whose "
        "owners control them: --area prompt: each prompt version of the bundle that differs from prod's "
        "(ma-prompts.<route>; needs EDIT on that prompt: prompt-owner); --area guardrail: the "
        "guardrail ruleset version when it differs from prod's (mangaassist-guardrails; guardrail-owner). "
        "The value is stamped by this tool: {by, at, bundle, bundle_version}. " + RIGHTS_NOTE,
    )
    so.add_argument("--bundle", required=True, metavar="V", help=BUNDLE_HELP)
    so.add_argument("--area", required=True, choices=("prompt", "guardrail"))
    so.add_argument("--json", action="store_true", help="print the sign-offs as JSON")

    pr = sub.add_parser(
        "promote",
        help="promote a bundle to prod when every gate passes",
        description="Move prod-previous to the current prod bundle and prod to bundle V, only when every gate\n"
        "passes; otherwise exit 1 and list every unmet gate, one line each. Needs EDIT on\n"
        "mangaassist-chatbot-prod (release-owner). Sends a `promoted` bundle event.",
        formatter_class=raw,
        epilog=GATES_HELP,
    )
    pr.add_argument("--bundle", required=True, metavar="V", help=BUNDLE_HELP)
    pr.add_argument("--json", action="store_true", help="print the result and the gates as JSON")

    rb = sub.add_parser(
        "rollback",
        help="move prod back to prod-previous (or --to V) in one call",
        description="The emergency path: no gates. Move prod to the bundle holding prod-previous, or to --to V "
        "(a registered version), and tag the bundle rolled back from with rolled_back = {by, at, to, reason}. "
        "Needs EDIT on mangaassist-chatbot-prod (release-owner). Sends a `rolled_back` bundle event.",
    )
    rb.add_argument("--to", metavar="V", help="the bundle to serve (default: the one holding prod-previous)")
    rb.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    rb.add_argument("--json", action="store_true", help="print the result as JSON")

    gr = sub.add_parser(
        "grant",
        help="(admin) give a user a role on the basic-auth tracking server",
        description="With the admin's MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, create user U when missing "
        "(password: first line of --password-file) and grant, on top of the server's default READ: "
        "release-owner: EDIT on registered model mangaassist-chatbot-prod; prompt-owner: EDIT on each prompt "
        "ma-prompts.<route>; guardrail-owner: EDIT on registered model mangaassist-guardrails; "
        "gateway: EDIT on the traffic experiment (MLFLOW_EXPERIMENT_NAME, default mangaassist-local). "
        "Never a version-tier grant (those are wildcard-only: they would reach every model).",
    )
    gr.add_argument("--role", required=True, choices=("release-owner", "prompt-owner", "guardrail-owner", "gateway"))
    gr.add_argument("--user", required=True, metavar="U")
    gr.add_argument("--password-file", metavar="F", help="file whose first line is the new user's password")
    gr.add_argument("--json", action="store_true", help="print what was granted as JSON")


def lifecycle_json(registry: ReleaseRegistry, bundle: Bundle) -> dict[str, Any]:
    """``bundle.to_json()`` plus its gate states and sign-offs (``show`` and ``bootstrap``)."""
    from orchestrator.release.lifecycle import Lifecycle

    out = bundle.to_json()
    life = Lifecycle(registry)
    report = life.gates(bundle, bundle, prod_known=True) if "prod" in bundle.aliases else life.gates(bundle)
    out.update(report.to_json())
    return out


def render_gates(report: dict[str, Any]) -> list[str]:
    """Text lines of a bundle's gates and sign-offs (for ``show``)."""
    prod = report.get("compared_with_prod")
    verdict = "promotable" if report.get("promotable") else "not promotable"
    lines = [f"  gates ({verdict}; compared with prod bundle {prod if prod is not None else '-'}):"]
    for g in report.get("gates", []):
        lines.append(f"    {g['gate']:<28} {g['state']:<8} {g['detail']}")
    lines.append("  sign-offs:")
    signoffs = report.get("signoffs", [])
    lines += [f"    {s['area']:<9} {s['component']}  by {s['by']} at {s.get('at')}" for s in signoffs] or ["    -"]
    return lines


def _unmet_lines(report: GateReport) -> list[str]:
    return [f"UNMET {g.line()}" for g in report.unmet]


def run_command(
    config: OrchestratorConfig,
    registry: ReleaseRegistry,
    args: argparse.Namespace,
    events: ReleaseEvents | None,
    progress: Callable[[str], None],
) -> int:
    """Run one lifecycle subcommand; 0 done, 1 promotion refused by its gates (errors raise)."""
    from orchestrator.release.lifecycle import Lifecycle, credentials_checked

    if args.command == "grant":
        return _grant(config, registry, args)
    life = Lifecycle(registry, progress)
    with credentials_checked(life.actor):
        return _run(life, registry, args, events)


def _run(life: Lifecycle, registry: ReleaseRegistry, args: argparse.Namespace, events: ReleaseEvents | None) -> int:
    from orchestrator.release import events as ev
    from orchestrator.release.lifecycle import GatesNotMet

    who = life.actor
    if args.command == "stage":
        bundle = life.stage(registry.bundle(args.bundle), args.alias, args.percent)
        if args.json:
            print(json.dumps(bundle.to_json(), indent=2))
        else:
            share = f" at {bundle.tags.get('canary.percent')}%" if args.alias == "canary" else ""
            print(f"bundle {bundle.version} ({bundle.bundle_version}) holds {args.alias}{share}")
    elif args.command == "record-verdict":
        bundle = registry.bundle(args.bundle)
        stamp = life.record_verdict(bundle, args.stage, args.verdict, args.run_id, args.reason)
        print(json.dumps(stamp, indent=2) if args.json else f"bundle {bundle.version}: {args.stage} {args.verdict}")
        emit(
            events,
            lambda: ev.evaluated(
                bundle,
                args.stage,
                args.verdict,
                who,
                run_id=args.run_id or "",
                percent=float(stamp.get("percent", 0.0)),
                note=args.reason,
            ),
        )
    elif args.command == "sign-off":
        bundle = registry.bundle(args.bundle)
        done = life.sign_off(bundle, args.area)
        if args.json:
            print(json.dumps([s.to_json() for s in done], indent=2))
        else:
            for s in done:
                print(f"signed {s.component} for bundle {bundle.version} as {s.stamp['by']} at {s.stamp['at']}")
        note = "signed " + ", ".join(s.component for s in done)
        emit(events, lambda: ev.signed_off(bundle, args.area, who, note))
    elif args.command == "promote":
        bundle = registry.bundle(args.bundle)
        try:
            promotion = life.promote(bundle)
        except GatesNotMet as refused:
            if args.json:
                print(json.dumps({"bundle": bundle.version, "promoted": False, **refused.report.to_json()}, indent=2))
            else:
                print(f"bundle {bundle.version} ({bundle.bundle_version}) not promoted: gates not passed")
                print("\n".join(_unmet_lines(refused.report)))
            return 1
        previous = promotion.previous
        if args.json:
            body = {"bundle": bundle.version, "promoted": True, "previous": previous.version if previous else None}
            print(json.dumps({**body, **promotion.report.to_json()}, indent=2))
        else:
            before = f"; prod-previous is bundle {previous.version}" if previous else ""
            print(f"bundle {bundle.version} ({bundle.bundle_version}) is prod{before}")
        emit(events, lambda: ev.promoted(promotion.bundle, previous, who))
    elif args.command == "rollback":
        rollback = life.rollback(args.reason, args.to)
        if args.json:
            print(
                json.dumps(
                    {"from": rollback.from_bundle.version, "to": rollback.to_bundle.version, "reason": args.reason},
                    indent=2,
                )
            )
        else:
            to, frm = rollback.to_bundle.version, rollback.from_bundle.version
            print(f"prod is bundle {to} again (rolled back from {frm})")
        emit(events, lambda: ev.rolled_back(rollback.from_bundle, rollback.to_bundle, args.reason, who))
    else:
        raise AssertionError(args.command)
    return 0


def _grant(config: OrchestratorConfig, registry: ReleaseRegistry, args: argparse.Namespace) -> int:
    from orchestrator.release.registry import ReleaseError
    from orchestrator.release.rights import grant

    password = None
    if args.password_file:
        try:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReleaseError(f"cannot read --password-file: {exc}") from None
        password = lines[0].strip() if lines else ""
        if not password:
            raise ReleaseError(f"--password-file {args.password_file} holds no password on its first line")
    prompts: list[str] = []
    if args.role == "prompt-owner":
        from orchestrator.release.components import PROMPT_PREFIX

        found = registry.client.search_prompts(filter_string=f"name LIKE '{PROMPT_PREFIX}%'", max_results=1000)
        prompts = [p.name for p in found]
    report = grant(
        registry.tracking_uri,
        args.role,
        args.user,
        password,
        prompts,
        registry.experiment_name,
        registry.ensure_experiment,
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        created = " (created)" if report.created_user else ""
        print(f"user {report.user}{created} is {report.role}: " + ", ".join(report.granted))
    return 0


def emit(events: ReleaseEvents | None, build: Callable[[], BundleEvent]) -> None:
    """Send the step's bundle event when events are on; never raises (the MLflow step already happened)."""
    if events is None:
        return
    import logging

    try:
        events.send(build())
    except Exception:  # boundary: an event must never fail the step
        logging.getLogger(__name__).warning("bundle event not sent", exc_info=True)
