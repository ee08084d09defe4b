"""Gateway ingest cost, A against B, in alternating time slices on the same core.

This machine's speed drifts by ±15% from one minute to the next (other tenants on the host), so
two ``bench/ingest.py`` runs one after the other cannot tell a 5% change from noise. Here two
gateway processes run side by side, both pinned to CPU 0 and set up as in ``bench/ingest.py``
(null writer, full pipeline, spool with fsync always); the load generator (CPU 1) feeds one of
them at a time, as fast as it accepts, for ``--slice-s`` seconds, in the order A B B A A B ...,
waiting between slices for assembly to drain. Each slice gives CPU µs per span for the gateway
that took it; the medians and the median of the per-round ratios B/A are printed.

A and B differ by source tree (``--b-rev REV`` checks out a git revision into a temporary
worktree and imports the gateway from there) and/or by garbage-collection setting
(``--a-gc-interval``, ``--b-gc-interval``, as ``TRACEGW_GC_INTERVAL_S``); or B is the floor
(``--b-floor``): a ``grpc.aio`` server that decodes each request into the gateway's span records
and does nothing else, DESIGN §8's "converts ~113k spans/s per core" measured on this machine.

    python bench/ingest_ab.py --b-rev HEAD~1 [--rounds 8] [--slice-s 4]
    python bench/ingest_ab.py --a-gc-interval 5 --b-gc-interval 0
    python bench/ingest_ab.py --b-floor                      # ends: gateway/floor CPU per span: median X.XX
    python bench/ingest_ab.py --b-env TRACEGW_WAL=false      # the write-ahead log's cost
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import ingest

ROOT = Path(__file__).resolve().parent.parent
FLOOR_BAR = 0.6
"""Ingest's bar: at least this share of the decode-only floor's throughput in the same run (CPU per
span at most 1/0.6 = 1.67x the floor's)."""


def slice_cost(gw: ingest.GatewayChild, seconds: float, inflight: int, seed: int) -> tuple[float, float]:
    """Feed ``gw`` for ``seconds``; (CPU µs per span, spans/s while fed)."""
    before = gw.stats()
    load = ingest.start_load(f"127.0.0.1:{gw.port}", 10**9, seconds, 0, inflight, seed)
    ingest.finish_load(load, seconds + 120)
    after = ingest.wait_drained(gw, 30)
    spans = (after["traces_in_pipeline"] - before["traces_in_pipeline"]) * 17
    if spans <= 0:
        raise RuntimeError("a slice put no spans through the pipeline")
    return (after["cpu_s"] - before["cpu_s"]) / spans * 1e6, spans / (after["t"] - before["t"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--b-rev", help="git revision whose gateway is B (default: this tree)")
    parser.add_argument(
        "--b-floor",
        action="store_true",
        help="B is the floor: a grpc.aio server that only decodes the spans (DESIGN §8)",
    )
    parser.add_argument("--a-gc-interval", default="", help="A's TRACEGW_GC_INTERVAL_S (default: the gateway's)")
    parser.add_argument("--b-gc-interval", default="", help="B's TRACEGW_GC_INTERVAL_S (default: the gateway's)")
    parser.add_argument(
        "--a-env", action="append", default=[], type=ingest._setting, metavar="NAME=VALUE", help="a setting of A's"
    )
    parser.add_argument(
        "--b-env", action="append", default=[], type=ingest._setting, metavar="NAME=VALUE", help="a setting of B's"
    )
    parser.add_argument("--rounds", type=int, default=8, help="slices per side (default %(default)s)")
    parser.add_argument("--slice-s", type=float, default=4.0, help="seconds of load per slice (default %(default)s)")
    parser.add_argument("--inflight", type=int, default=4, help="RPCs outstanding from the load generator")
    parser.add_argument("--ratio", type=float, default=0.1, help="head sampling ratio (default %(default)s)")
    args = parser.parse_args()
    if (
        not args.b_rev
        and not args.b_floor
        and args.a_gc_interval == args.b_gc_interval
        and sorted(args.a_env) == sorted(args.b_env)
    ):
        parser.error("A and B are the same: give --b-rev, --b-floor, different gc intervals or --a-env/--b-env")
    if (os.cpu_count() or 0) < 2:
        sys.exit("needs two CPUs: the gateways are pinned to CPU 0 and the load generator to CPU 1")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-ab-") as tmp:
        b_tree = None
        if args.b_rev:
            b_tree = Path(tmp) / "b-tree"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(b_tree), args.b_rev],
                check=True,
                capture_output=True,
            )
        names = {
            "A": f"this tree, gc interval {args.a_gc_interval or 'default'}" + "".join(f", {e}" for e in args.a_env),
            "B": "the floor: grpc.aio + decoding only"
            if args.b_floor
            else f"{args.b_rev or 'this tree'}, gc interval {args.b_gc_interval or 'default'}"
            + "".join(f", {e}" for e in args.b_env),
        }
        gws = {}
        try:
            gws["A"] = ingest.GatewayChild(
                Path(tmp) / "a", args.ratio, gc_interval=args.a_gc_interval, settings=args.a_env
            )
            gws["B"] = ingest.GatewayChild(
                Path(tmp) / "b",
                args.ratio,
                gc_interval=args.b_gc_interval,
                tree=b_tree,
                floor=args.b_floor,
                settings=args.b_env,
            )
            for gw in gws.values():  # warm-up: imports, regex compilation, allocator growth
                slice_cost(gw, 2.0, args.inflight, 1)
            cost: dict[str, list[float]] = {"A": [], "B": []}
            rate: dict[str, list[float]] = {"A": [], "B": []}
            for r in range(args.rounds):
                for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    c, s = slice_cost(gws[side], args.slice_s, args.inflight, 10 + r)
                    cost[side].append(c)
                    rate[side].append(s)
                print(
                    f"  round {r + 1}: A {cost['A'][-1]:.1f} µs/span, B {cost['B'][-1]:.1f} µs/span, "
                    f"B/A {cost['B'][-1] / cost['A'][-1]:.3f}",
                    flush=True,
                )
        finally:
            for gw in gws.values():
                gw.stop()
            if b_tree:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(b_tree)], capture_output=True
                )
    ratios = [b / a for a, b in zip(cost["A"], cost["B"], strict=True)]
    print(
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds of "
        f"{args.slice_s:.0f} s per side, ratio {args.ratio}"
    )
    for side in ("A", "B"):
        print(
            f"  {side} ({names[side]}): median {statistics.median(cost[side]):.1f} µs CPU per span "
            f"(min {min(cost[side]):.1f}, max {max(cost[side]):.1f}); "
            f"median {statistics.median(rate[side]):,.0f} spans/s while fed"
        )
    print(f"  B/A per round: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    if args.b_floor:  # the ingest bar, as a ratio to the floor in the same run (BENCHMARKS.md, Bars)
        per_round = [a / b for a, b in zip(cost["A"], cost["B"], strict=True)]
        gw_floor = statistics.median(per_round)
        print(
            f"gateway/floor CPU per span: median {gw_floor:.2f} (min {min(per_round):.2f}, max {max(per_round):.2f}; "
            f"bar <= {1 / FLOOR_BAR:.2f}: {'met' if gw_floor <= 1 / FLOOR_BAR else 'not met'}); "
            f"throughput {1 / gw_floor:.2f} of the floor's (bar >= {FLOOR_BAR})"
        )


if __name__ == "__main__":
    main()
