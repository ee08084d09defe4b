"""The rollout judge's false-rollback rate and power, on simulated canary steps (issue 20, item 3).

Each simulated step has a stable and a canary cohort of the same size, ``--requests`` requests each
per analysis interval, judged on the cumulative counts after every one of ``--looks`` intervals as
the live judge does; the step is rolled back at the first ``fail``. Scenarios:

- ``identical``: the canary is the stable bundle (error 1 %, guardrail blocks 2 %, grounding
  failures 3 %, a vote on 25 % of responses of which 12 % thumbs-down): the false-rollback rate,
  the share passing at the last look, the metrics behind false rollbacks;
- ``low-error-<rate>``: identical cohorts whose error rate is that low (the zero-baseline rule's
  worst band);
- ``errors-2x``: the canary's error rate doubled; ``thumbs-down+50%``: 12 % → 18 % of votes;
  ``one-intent-broken``: only ``return_request`` (12 % of traffic) fails grounding 25 % instead of
  3 % and gets 30 % thumbs-down: power (share rolled back within the step) and looks-to-detect.

Bounded: ``--sims`` per scenario and traffic level, ``--max-seconds`` in all (what has run is
reported), a progress line per scenario. Seeded (``--seed``), so a run can be repeated.

    .venv/bin/python bench/judge_power.py                       # 2000 identical, 500 per regression
    .venv/bin/python bench/judge_power.py --sims 200 --max-seconds 60
    .venv/bin/python bench/judge_power.py --requests 200 --zero-baseline-min-events 0   # the rule's share
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.rollout.judge import JudgeConfig, judge
from orchestrator.rollout.simulate import Profile, cohort, simulate_step, worse

BASE = Profile()


@dataclass
class Outcome:
    sims: int = 0
    rolled_back: int = 0
    passed_at_end: int = 0
    looks_to_detect: list[int] | None = None
    culprits: Counter[str] | None = None


def scenarios() -> dict[str, tuple[dict[str, Profile], dict[str, Profile]]]:
    broken = worse(BASE, grounding_failure_rate=0.25, thumbs_down_rate=0.30)
    out = {
        "identical": (cohort(), cohort()),
        "errors-2x": (cohort(), cohort(worse(BASE, error_rate=0.02))),
        "thumbs-down+50%": (cohort(), cohort(worse(BASE, thumbs_down_rate=0.18))),
        "one-intent-broken": (cohort(), cohort(return_request=broken)),
    }
    for rate in (0.001, 0.002, 0.003, 0.005):
        low = worse(BASE, error_rate=rate)
        out[f"low-error-{rate:.1%}"] = (cohort(low), cohort(low))
    return out


def run_one(
    rng: np.random.Generator,
    stable: dict[str, Profile],
    canary: dict[str, Profile],
    requests: int,
    looks: int,
    config: JudgeConfig,
    out: Outcome,
) -> None:
    out.sims += 1
    verdict = ""
    for look, document in enumerate(simulate_step(rng, stable, canary, requests, looks), 1):
        record = judge(document, config)
        verdict = record["verdict"]
        if verdict == "fail":
            out.rolled_back += 1
            assert out.looks_to_detect is not None and out.culprits is not None
            out.looks_to_detect.append(look)
            out.culprits.update(f"{r['metric']}[{r['stratum']}]" for r in record["reasons"] if r["verdict"] == "fail")
            return
    out.passed_at_end += verdict == "pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=500, help="simulated steps per regression scenario (500)")
    parser.add_argument("--identical-sims", type=int, default=2000, help="steps for identical cohorts (2000)")
    parser.add_argument("--looks", type=int, default=10, help="analysis intervals per step (10)")
    parser.add_argument("--requests", default="200,2000", help="requests per interval per cohort, comma-separated")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop starting simulations after this")
    parser.add_argument(
        "--zero-baseline-min-events", type=int, default=4, help="the judge's zero-baseline rule (0: off; default 4)"
    )
    args = parser.parse_args(argv)
    config = JudgeConfig(looks_per_step=args.looks, zero_baseline_min_events=args.zero_baseline_min_events)
    print(
        f"judge_power: {config.looks_per_step} looks, alpha {config.alpha} per metric per step, "
        f"zero-baseline rule {config.zero_baseline_min_events or 'off'}",
        file=sys.stderr,
    )
    chosen = scenarios()
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    deadline = time.monotonic() + args.max_seconds
    rows = []
    for requests in (int(r) for r in args.requests.split(",")):
        for name, (stable, canary) in chosen.items():
            if name.startswith("low-error") and requests != 200:
                continue  # the band is a property of ~1,000-2,000 requests a side
            sims = args.identical_sims if name == "identical" else args.sims
            rng = np.random.default_rng([args.seed, requests, sum(map(ord, name))])
            out = Outcome(looks_to_detect=[], culprits=Counter())
            started = time.monotonic()
            for _ in range(sims):
                if time.monotonic() > deadline:
                    break
                run_one(rng, stable, canary, requests, args.looks, config, out)
            rows.append((requests, name, out))
            print(_line(requests, name, out, time.monotonic() - started), file=sys.stderr, flush=True)
    print(f"\n{'requests/look':>13}  {'scenario':<20} {'sims':>5} {'rolled back':>12} {'pass at end':>12}  looks")
    for requests, name, out in rows:
        print(_row(requests, name, out))
        if out.culprits:
            top = ", ".join(f"{k} {v}" for k, v in out.culprits.most_common(4))
            print(f"{'':>15}failing: {top}")
    return 0


def _rate(k: int, n: int) -> str:
    return f"{k / n:.2%}" if n else "-"


def _line(requests: int, name: str, out: Outcome, seconds: float) -> str:
    return f"judge_power: {requests}/look {name}: {out.sims} sims in {seconds:.0f}s, rolled back {out.rolled_back}"


def _row(requests: int, name: str, out: Outcome) -> str:
    looks = out.looks_to_detect or []
    shown: Callable[[], str] = lambda: (  # noqa: E731
        f"median {statistics.median(looks):g} (p90 {sorted(looks)[int(0.9 * (len(looks) - 1))]})" if looks else "-"
    )
    return (
        f"{requests:>13}  {name:<20} {out.sims:>5} {_rate(out.rolled_back, out.sims):>12} "
        f"{_rate(out.passed_at_end, out.sims):>12}  {shown()}"
    )


if __name__ == "__main__":
    sys.exit(main())
