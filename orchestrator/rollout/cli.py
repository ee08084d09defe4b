"""``mangaassist-release judge --replay FILE.json``: the rollout judge from a file, without MLflow.

FILE is a bare counts document (``{"cohorts": ...}``, judged with the default config) or a verdict
record written earlier (judged again on the record's own inputs with the record's own config; the
output says whether the verdict matches). Exit status: 0 pass, 1 fail, 3 inconclusive, 2 error: an
unreadable or invalid file (one line on stderr naming the problem), an ``error`` record (nothing to
replay), or a replay whose verdict differs from the recorded one.

The judge (and scipy) is imported only when the command runs, so building the release CLI's parser
stays cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

USAGE_ERROR = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``judge`` to the release CLI's subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "judge",
        help="judge counts or replay a verdict record (no MLflow): exit 0 pass, 1 fail, 3 inconclusive, 2 error",
        description='Judge a counts document {"cohorts": {"stable": {INTENT: COUNTS}, "canary": {...}}} or '
        "replay a verdict record (its inputs with its config) and say whether the verdict matches. "
        "Exit 0 pass, 1 fail, 3 inconclusive, 2 error (bad file, error record, replay mismatch).",
    )
    parser.add_argument("--replay", required=True, metavar="FILE.json", help="counts document or verdict record")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from orchestrator.rollout import judge as j
    from orchestrator.rollout.counts import CountsError

    try:
        with open(args.replay, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as exc:
        return _error(f"cannot read {args.replay}: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(f"{args.replay} is not JSON: {exc}")
    recorded: str | None = None
    config = j.JudgeConfig()
    if isinstance(document, dict) and "verdict" in document:
        recorded = document.get("verdict")
        if recorded == "error":
            return _error(f"{args.replay} is an error record (the metrics source was unreachable): nothing to replay")
        if recorded not in j.VERDICTS:
            return _error(f"{args.replay}: verdict {recorded!r} is not one of {', '.join(j.VERDICTS)}")
        try:
            config = j.JudgeConfig.from_json(document.get("config"))
        except ValueError as exc:
            return _error(f"{args.replay}: {exc}")
        document = document.get("inputs")
    try:
        record = j.judge(document, config)
    except CountsError as exc:
        return _error(f"{args.replay}: {exc}")
    matches = recorded is None or record["verdict"] == recorded
    if recorded is not None:
        record["replay"] = {"recorded_verdict": recorded, "matches": matches}
    if args.json:
        sys.stdout.write(j.dumps(record))
    else:
        print(_render(record))
    if not matches:
        return _error(f"replayed verdict {record['verdict']} differs from the recorded {recorded}")
    return j.exit_code(record["verdict"])


def _render(record: dict[str, Any]) -> str:
    lines = [f"verdict: {record['verdict']}"]
    if "replay" in record:
        replay = record["replay"]
        lines[0] += f"  (recorded {replay['recorded_verdict']}: {'matches' if replay['matches'] else 'MISMATCH'})"
    lines.append("  " + "  ".join(f"{m}={v}" for m, v in record["metrics"].items()))
    for r in record["reasons"]:
        if r["stratum"] == "_total" or r["verdict"] != "pass":
            lines.append(f"  {r['verdict'].upper():<12} {r['metric']:<22} {r['stratum']:<18} {r['detail']}")
    judge = record["judge"]
    lines.append(f"judge {judge['name']} {judge['version']} (scipy {judge['scipy']}); per-intent passes: --json")
    return "\n".join(lines)


def _error(message: str) -> int:
    print(f"mangaassist-release judge: error: {' '.join(message.split())}", file=sys.stderr)
    return USAGE_ERROR
