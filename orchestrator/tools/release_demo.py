"""``make release-demo``: the release control plane end to end on an embedded ``sqlite:///`` store.

1. ``mangaassist-release bootstrap``: the registry layers and the prod bundle;
2. a new version of the recommendation prompt without its citation instruction, made with
   MLflow's own prompt API (as a prompt owner would in the MLflow UI or a notebook);
3. ``register --from prod --set-prompt recommendation=…``: a candidate bundle with it;
4. ``evaluate`` prod and the candidate on the recommendation cases of the golden set: prod
   passes, the candidate fails on ``grounded_answer_rate`` (exit 1, as it should);
5. ``compare``: the per-metric deltas and the cases that changed outcome.

Every step is the ``mangaassist-release`` command a user would run; only step 2 is MLflow's API.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

CITE = "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. "


def _release(*args: str) -> tuple[int, str]:
    from orchestrator.release import cli

    out = StringIO()
    with redirect_stdout(out):
        code = cli.run(list(args))
    return code, out.getvalue()


def run(uri: str, step: str = "") -> int:
    """Steps 1-5 on the store at ``uri`` (bootstrap is idempotent: an existing registry is kept).
    ``step`` prefixes the step numbers (``make demo`` runs this as its own step)."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "mangaassist-release-demo")

    print(f"{step}1. bootstrap the registry layers in {uri}")
    code, out = _release("bootstrap", "--json")
    if code:
        return code
    prod = json.loads(out)["bundle"]
    print(f"   prod = bundle {prod['version']} ({prod['bundle_version']})")
    print(f"   its recommendation prompt: {prod['prompts']['recommendation']}")

    import mlflow

    from orchestrator.release.registry import tracking_uri_scope

    with tracking_uri_scope(uri):
        shipped = mlflow.genai.load_prompt(prod["prompts"]["recommendation"])
        changed = mlflow.genai.register_prompt(
            "ma-prompts.recommendation",
            template=shipped.template.replace(CITE, ""),
            commit_message="drop the citation instruction (demo: this must fail evaluation)",
        )
    print(f"{step}2. a prompt owner's new recommendation prompt without the citation instruction: {changed.uri}")

    code, out = _release("register", "--from", "prod", "--set-prompt", f"recommendation={changed.uri}", "--json")
    if code:
        return code
    candidate = json.loads(out)
    print(f"{step}3. candidate = bundle {candidate['version']} ({candidate['bundle_version']}), alias candidate")

    verdicts = {}
    for name, version in (("prod", prod["version"]), ("candidate", candidate["version"])):
        print(f"{step}4. evaluate {name} on the recommendation cases of the golden set")
        code, out = _release("evaluate", "--bundle", str(version), "--subset", "route=recommendation")
        print("   " + out.strip().replace("\n", "\n   "))
        if code == 2:
            return 2
        verdicts[name] = code
    code, out = _release("compare", "--bundle", str(candidate["version"]), "--against", str(prod["version"]))
    lines = out.strip().splitlines()
    if len(lines) > 24:  # the whole list is in the comparison run and `compare --json`
        lines = [
            *lines[:20],
            f"... {len(lines) - 20} more lines (mangaassist-release compare --bundle "
            f"{candidate['version']} --against {prod['version']})",
        ]
    print(f"{step}5. compare candidate against prod\n   " + "\n   ".join(lines))
    if code:
        return code
    ok = verdicts == {"prod": 0, "candidate": 1}
    print("as expected: prod passes, the candidate without citations fails" if ok else f"unexpected: {verdicts}")
    print(
        "\nOpen it in the MLflow UI:\n"
        f"  {Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {uri} --port 5000\n"
        "  Models: mangaassist-chatbot-prod (versions, aliases prod/candidate, eval.offline tags);\n"
        "  Prompts: ma-prompts.recommendation (versions 1 and 2);\n"
        "  Experiments: mangaassist-evaluation (one run per evaluation, its artifacts, one trace per case)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mangaassist-release-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".release-demo", help="where the SQLite store goes (emptied first)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return run(f"sqlite:///{workdir / 'mlflow.db'}")


if __name__ == "__main__":
    sys.exit(main())
