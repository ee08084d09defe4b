"""``tracegw``: run the MangaAssist trace gateway sidecar.

    tracegw serve                 run until SIGTERM/SIGINT, then drain and exit 0
    tracegw config                print every setting, its effective value and meaning
    tracegw check                 validate the configuration and exit (0 ok, 2 invalid)

Settings come from the environment (see ``tracegw config``); the few flags below override
them for one run. With nothing set, the gateway listens on 127.0.0.1:4317 and writes to
``sqlite:///mlflow.db`` in the current directory (open it with ``mlflow ui``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gateway import config as config_mod

_FLAGS = {
    "listen": "TRACEGW_LISTEN_ADDRESS",
    "metrics": "TRACEGW_METRICS_ADDRESS",
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "experiment": "MLFLOW_EXPERIMENT_NAME",
    "sampling_ratio": "MLFLOW_TRACE_SAMPLING_RATIO",
    "log_level": "TRACEGW_LOG_LEVEL",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracegw",
        description=__doc__.split("\n\n")[0],
        epilog="Environment settings: run `tracegw config`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the gateway"),
        ("config", "print the effective configuration"),
        ("check", "validate the configuration"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (TRACEGW_LISTEN_ADDRESS)")
        p.add_argument(
            "--metrics", metavar="HOST:PORT", help="Prometheus address, '' disables (TRACEGW_METRICS_ADDRESS)"
        )
        p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (MLFLOW_TRACKING_URI)")
        p.add_argument("--experiment", metavar="NAME", help="default experiment (MLFLOW_EXPERIMENT_NAME)")
        p.add_argument("--sampling-ratio", metavar="R", help="head sampling ratio (MLFLOW_TRACE_SAMPLING_RATIO)")
        p.add_argument("--log-level", metavar="LEVEL", help="DEBUG/INFO/WARNING/ERROR (TRACEGW_LOG_LEVEL)")
        if name == "config":
            p.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {env: getattr(args, flag) for flag, env in _FLAGS.items() if getattr(args, flag) is not None}
    try:
        cfg = config_mod.load(os.environ, overrides)
        from gateway.receive.auth import file_problems

        if problems := file_problems(cfg.auth):
            raise config_mod.ConfigError(problems)
    except config_mod.ConfigError as exc:
        print(f"tracegw: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("configuration ok")
        return 0
    if args.command == "config" and args.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for env, value, help_text in config_mod.describe(cfg):
            print(f"| `{env}` | `{value}` | {help_text} |")
        return 0
    if args.command == "config":
        rows = config_mod.describe(cfg)
        width = max(len(r[0]) for r in rows)
        for env, value, help_text in rows:
            print(f"{env:<{width}}  {value!r:<28}  {help_text}")
        return 0
    from gateway import logs
    from gateway.server import serve

    logs.configure(cfg.log_level)
    return asyncio.run(serve(cfg))


if __name__ == "__main__":
    sys.exit(main())
