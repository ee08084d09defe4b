"""Does shadow traffic cost the customer anything? The primary's request-path latency with the
shadow runner on vs off, in the same run, while every shadow answer takes 10 s.

Setup (embedded, no server): bootstrap the registry layers in a temporary ``sqlite:///`` store,
export prod and a candidate (its faq prompt without citations) into a bundle directory as
``prod.json`` and ``shadow.json``, and build the chat service the API builds (offline providers,
the rollout router). The model call is wrapped so that a call made on the shadow worker thread
sleeps ``--shadow-sleep-s`` (10 s) before answering: a hung or very slow shadow model.

Rounds alternate **off** (no runner attached) and **on** (runner attached, share 1.0: every
request is offered to the shadow; the queue fills with the first few and the rest are shed), each
round ``--requests`` primaries of the same question mix, paced at ``--rate``. Prints p50/p99 per
mode over all rounds, the on/off ratios, and the runner's counts (completed, shed, queued). The
tracer points at a closed loopback port, so spans are dropped by the client (the gateway is not
what is measured here). Bounded: rounds x requests, and ``--max-seconds``.

    python bench/shadow_overhead.py [--rounds 6] [--requests 200] [--rate 100] [--shadow-sleep-s 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating off/on rounds (default 6)")
    parser.add_argument("--requests", type=int, default=200, help="primaries per round (default 200)")
    parser.add_argument("--rate", type=float, default=100.0, help="primaries per second (default 100)")
    parser.add_argument("--shadow-sleep-s", type=float, default=10.0, help="each shadow model call sleeps this")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long (default 600)")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from clients import ClientConfig, Tracer
    from orchestrator.adapters import offline_providers
    from orchestrator.adapters.base import Generation, GenerationRequest
    from orchestrator.cache import ResponseCache
    from orchestrator.config import load
    from orchestrator.release.follow import follow_once, write_atomically
    from orchestrator.release.registry import ReleaseRegistry, export_bundle, tracking_uri_scope
    from orchestrator.rollout.shadow import ShadowConfig, ShadowRunner
    from orchestrator.schema import ChatRequest, PageContext
    from orchestrator.service import ChatService

    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    print(f"bootstrapping the registry in {uri} ...", file=sys.stderr)
    registry = ReleaseRegistry(uri, "shadow-bench")
    registry.bootstrap(load({"MLFLOW_TRACKING_URI": uri}))
    bundles = work / "bundles"
    follow_once(registry, bundles, ["prod"])
    prod = registry.resolve("prod")
    faq = registry.prompt_templates(prod)["faq"][1]
    import mlflow

    with tracking_uri_scope(uri):
        changed = mlflow.genai.register_prompt("ma-prompts.faq", template=faq.replace("Cite each fact", "State"))
    candidate = registry.register("prod", {}, {"faq": str(changed.uri)}, None)
    write_atomically(bundles / "shadow.json", json.dumps(export_bundle(registry, candidate)))

    providers = offline_providers(load({"MANGAASSIST_BUNDLE_DIR": str(bundles)}))
    real = providers.generator

    class SlowShadowModel:
        provider = "offline"

        def generate(self, request: GenerationRequest) -> Generation:
            if threading.current_thread().name == "mangaassist-shadow":
                time.sleep(args.shadow_sleep_s)
            return real.generate(request)

    providers = dataclasses.replace(providers, generator=SlowShadowModel())
    tracer = Tracer(ClientConfig(target=f"127.0.0.1:{_free_port()}", backoff_max_s=0.5))
    service = ChatService(tracer, providers, cache=ResponseCache(0, 0))  # every primary really answers
    service.retriever.warm_up()
    router = providers.bundle
    runner = ShadowRunner(
        service, router.shadow_serving, ShadowConfig(share=1.0, rate_per_s=1000.0, burst=1000, queue_max=8)
    )
    questions = [
        "How long does shipping take?",
        "What is your return policy for damaged volumes?",
        "Recommend a manga like Berserk",
        "Do you ship to Canada?",
        "What manga is similar to Naruto?",
    ]
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    deadline = time.monotonic() + args.max_seconds
    for i in range(args.requests):  # warm-up, not measured
        service.handle(ChatRequest(f"w{i}", questions[i % 5], PageContext("search", "en-US", None)))
    for r in range(args.rounds * 2):
        mode = "on" if r % 2 else "off"
        service.shadow = runner if mode == "on" else None
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        for i in range(args.requests):
            if time.monotonic() > deadline:
                break
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            request = ChatRequest(f"r{r}-{i}", questions[i % 5], PageContext("search", "en-US", None))
            started = time.perf_counter()
            service.handle(request)
            latencies[mode].append((time.perf_counter() - started) * 1000)
        print(f"round {r + 1}/{args.rounds * 2} ({mode}) done", file=sys.stderr)
    counts = runner.counts()
    off, on = latencies["off"], latencies["on"]
    print(
        f"primaries: {len(off)} with shadow off, {len(on)} with shadow on (each shadow model call sleeps "
        f"{args.shadow_sleep_s:g} s)"
    )
    for name, values in (("off", off), ("on", on)):
        print(f"  shadow {name:<3}  p50 {statistics.median(values):7.2f} ms   p99 {_pct(values, 0.99):7.2f} ms")
    print(
        f"  on / off       p50 ×{statistics.median(on) / statistics.median(off):.3f}   "
        f"p99 ×{_pct(on, 0.99) / _pct(off, 0.99):.3f}"
    )
    runs = counts["runs"]
    print(
        f"  shadow runs: completed {runs['completed']}, shed {runs['shed']}, queued {counts['queued']} "
        f"(queue bound 8: the stuck shadow took the first few, the rest were shed)"
    )
    tracer.shutdown(timeout_s=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
