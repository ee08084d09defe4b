"""The fault matrix's headline scenarios with bigger numbers, as a table.

Starts a real ``mlflow server`` (SQLite, in a temporary directory), a loopback fault proxy in
front of it and real gateway processes behind the proxy, then runs:

- ``outage``:   MLflow unreachable for 60 s under steady load, then back; the application's
                per-request tracing cost before, during and after the outage;
- ``sigterm``:  the gateway SIGTERMed under steady load while MLflow is unreachable, restarted
                with MLflow back: the drain's backlog replayed from the spool;
- ``sigkill``:  the gateway SIGKILLed under steady load (spool fsync ``always``) and restarted;
                the loss, against what was not yet durable at the kill;
- ``overload``: more traffic than the memory limit allows; peak RSS against the hard limit,
                refusals, and the application's cost.

    python bench/fault_matrix.py [--outage-s 60] [--rate 50] [--only outage,sigterm,sigkill,overload]

Prints one line per scenario as it ends, then a table: scenario, sent, landed, dropped by
reason, lost, peak RSS, time to drain (spans unless said otherwise).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# The scenarios live beside the tests (tests/faults/harness.py); run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.harness import Figures, Rig, run_outage, run_overload, run_sigkill, run_sigterm, start_mlflow

SCENARIOS = ("outage", "sigterm", "sigkill", "overload")


def _table(rows: list[Figures]) -> str:
    header = ("scenario", "traces", "sent", "landed", "dropped by reason", "lost", "peak RSS", "drain")
    lines = [header]
    for f in rows:
        drops = (
            ", ".join(
                [f"client {k}={v}" for k, v in f.client_dropped.items() if v]
                + [f"gw {k}={int(v)}" for k, v in f.gateway_dropped.items() if v]
            )
            or "-"
        )
        lines.append(
            (
                f.scenario,
                str(f.traces),
                str(f.client_sent),
                str(f.landed),
                drops,
                f.lost_text(),
                f"{f.peak_rss_bytes / 2**20:.0f} MiB" if f.peak_rss_bytes else "-",
                f"{f.drain_s:.1f} s" if f.drain_s is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fault_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=60.0, help="MLflow outage length (default %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0, help="steady load, requests/s (default %(default)s)")
    parser.add_argument("--overload-rate", type=float, default=250.0, help="overload, requests/s (default %(default)s)")
    parser.add_argument("--soft-mib", type=int, default=150, help="memory soft limit (default %(default)s)")
    parser.add_argument("--hard-mib", type=int, default=200, help="memory hard limit (default %(default)s)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")

    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        workdir = Path(tmp)
        server, db = start_mlflow(workdir / "mlflow")
        try:
            for name in chosen:
                with Rig(server, db, workdir / name, experiment=f"fault-matrix-{name}") as rig:
                    if name == "outage":
                        out = run_outage(
                            rig,
                            f"mlflow down {args.outage_s:g}s",
                            outage_s=args.outage_s,
                            rate_per_s=args.rate,
                            before_s=10,
                            after_s=5,
                            settle_timeout_s=300,
                        )
                    elif name == "sigterm":
                        out = run_sigterm(
                            rig,
                            "gateway SIGTERM + restart",
                            rate_per_s=args.rate,
                            before_s=10,
                            down_s=5,
                            after_s=5,
                            settle_timeout_s=180,
                        )
                    elif name == "sigkill":
                        out = run_sigkill(
                            rig,
                            "gateway SIGKILL + restart",
                            rate_per_s=args.rate,
                            before_s=10,
                            after_s=5,
                            settle_timeout_s=120,
                        )
                    else:
                        out = run_overload(
                            rig,
                            "overload above memory limit",
                            args.soft_mib * 2**20,
                            args.hard_mib * 2**20,
                            rate_per_s=args.overload_rate,
                            sustain_s=15,
                            max_s=90,
                        )
                print(out.figures.line(), flush=True)
                rows.append(out.figures)
        finally:
            server.stop()
    print()
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
