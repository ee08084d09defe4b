"""Redaction speed: µs per 500-character text on one core, with and without PII, against a
naive baseline measured in the same run (the same six entity regexes run one by one over the
NFKC-normalised text, no prefilter), and phonenumbers' matcher alone when it is installed.
Texts: dense PII of the six original types (the bar's text), dense PII of the formats and types
issue 18 added ("new kinds": glued labels, JSON text with escapes, a URL-encoded e-mail, national
ids, addresses; the code before it finds fewer there, so read its figure as a cost, not an A/B),
clean English + Japanese, clean English.
``--compare-with REV`` (repeatable) also measures ``find_pii`` as it was at git revision REV, in
the same run, for before/after figures that share the machine's noise (``--compare-with 9ea6f5e
--compare-with HEAD``: the bar's reference and the last commit, beside the working tree).

Bounded by count and time: ``--iterations`` per text (default 3000) and ``--max-seconds``.
``--clock cpu`` times each call in this process's CPU time instead of wall time.
Prints median and p99 per scenario, the ratio of medians against the baseline and, with
``--compare-with``, against the first REV.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import time
import types
import unicodedata
from collections.abc import Callable
from pathlib import Path

from gateway.process.pii import find_pii

ROUNDS = 10  # short interleaved rounds: a burst of load on this shared machine hits every implementation
PII_TEXT = (
    "Hi, I ordered ワンピース 第107巻 (ISBN 978-4-08-883415-4) for ¥528 on 2026-03-24 but it has not "
    "arrived. Please call me at 090-1234-5678 or email taro.yamada@example.co.jp. My order is "
    "503-1234567-7654321 and I paid with 4111 1111 1111 1111. Price was $12.99, Vol. 107, v2.4.1. "
    "連絡先は０９０－８７６５－４３２１です。IP 203.0.113.77 seen. Thanks! 2026年3月24日 "
    "trace 4bf92f3577b34da6a3ce929d0e0e4736, resp_01HZZX4Q9W2K8M3N5P7R, recommendation-2.4. ok."
)
NEW_KINDS_TEXT = (  # issue 18 formats and types, dense, part of it JSON text with \u escapes
    "Signature: TEL0626347047 / FAX0877-54-2664 / order113-1234567-7654321. text me 4155550132 (cell), "
    "or 0044 20 7557 4095, +81 (0)50-1234-5678. mail=hanako.s%40live.jp SSN 123-45-6789, IBAN DE89 3704 "
    "0044 0532 0130 00, passport TK1234567, マイナンバー 1234 5678 9018. Ship to 742 Evergreen Terrace, "
    "Springfield or 〒150-0001 東京都渋谷区神宮前1-2-3. Keep app_version=1.0.3.2, bind 0.0.0.0:8080, "
    'ISBN 4088834151. {"memo": "\\u96fb\\u8a71\\u306f090-6574-8118", "at": "2026-12-03T10:15:30Z"}'
)
CLEAN_TEXT = (
    "Recommend a manga like Vinland Saga for a teenager. The Frieren hardcover collection has 12 "
    "volumes, ISBN 978-4-09-850348-1, price ¥1,980 (tax incl.), released 2026-03-24. Chainsaw Man "
    "Vol. 17 ships in 2 days. スパイファミリーが好きな人におすすめの漫画は？ 第13巻は2026年3月24日発売です。"
    "Retrieved chunk [faq_12]: Returns are accepted within 30 days of delivery for damaged volumes; "
    "see policy-qa-1.7. JAN 4902370548501, ASIN B0C1234XYZ, rating 4.8 (12,034 reviews)."
)
CLEAN_EN = (
    "Retrieved chunk [product_88]: Berserk Deluxe Edition Volume 1 collects the first three volumes of "
    "the original series in a 7x10 hardcover with 696 pages. Price $49.99, released 2019-02-26, "
    "ISBN 978-1-5067-1198-9. Customers also bought Vinland Saga Book 1 and Vagabond Vol. 1. The "
    "answer should mention the edition, the size and the price, and recommend one similar title. "
    "Prompt version recommendation-2.4, model anthropic.claude-3-5-haiku-20241022-v1:0, top 20."
)

NAIVE = [
    re.compile(p)
    for p in (
        r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}",
        r"(?:\+\d{1,3}[ .-]?)?\(?\d{2,4}\)?[ .-]?\d{2,4}[ .-]?\d{3,4}",
        r"\d{3}-\d{7}-\d{7}",
        r"\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}",
        r"(?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}",
        r"AKIA[0-9A-Z]{16}|Bearer\s+\S+",
    )
]


def naive(text: str) -> list[tuple[int, int]]:
    norm = unicodedata.normalize("NFKC", text)
    return [m.span() for p in NAIVE for m in p.finditer(norm)]


def find_pii_at(rev: str) -> Callable[[str], object]:
    """``find_pii`` as committed at git revision ``rev`` (``gateway/process/pii.py``, or
    ``gateway/pii.py`` in the flat layout before the gateway was split by layer)."""
    root = Path(__file__).resolve().parent.parent
    for path in ("gateway/process/pii.py", "gateway/pii.py"):
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
        if shown.returncode == 0:
            module = types.ModuleType(f"pii_at_{rev}")
            exec(compile(shown.stdout, f"{rev}:{path}", "exec"), module.__dict__)
            found: Callable[[str], object] = module.find_pii
            return found
    raise SystemExit(f"redaction: no gateway pii module at revision {rev!r}")


def measure(
    fn: Callable[[str], object], text: str, iterations: int, deadline: float, clock: Callable[[], int]
) -> list[float]:
    samples = []
    for _ in range(iterations):
        t0 = clock()
        fn(text)
        samples.append((clock() - t0) / 1000)
        if time.monotonic() > deadline:
            break
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time, which the other tenants of a busy host inflate less",
    )
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        action="append",
        default=[],
        help="also time find_pii as it was at this git revision (repeatable; ratios are to the first)",
    )
    args = parser.parse_args(argv)
    texts = {
        "with PII": (PII_TEXT * 2)[:500],
        "new kinds": (NEW_KINDS_TEXT * 2)[:500],
        "no PII (en+ja)": (CLEAN_TEXT * 2)[:500],
        "no PII (en)": (CLEAN_EN * 2)[:500],
    }
    impls: dict[str, Callable[[str], object]] = {"find_pii": find_pii}
    for rev in args.compare_with:
        impls[f"find_pii @ {rev}"] = find_pii_at(rev)
    impls["naive 6 regexes"] = naive
    try:
        phonenumbers = importlib.import_module("phonenumbers")  # optional, and without type stubs
        impls["phonenumbers matcher"] = lambda t: list(phonenumbers.PhoneNumberMatcher(t, "JP"))
    except ImportError:
        pass
    deadline = time.monotonic() + args.max_seconds
    clock = time.perf_counter_ns if args.clock == "wall" else time.process_time_ns
    first = f"find_pii @ {args.compare_with[0]}" if args.compare_with else None
    vs_rev = f"vs {args.compare_with[0]}"[:10] if first else ""
    print(
        f"{'text':16s} {'implementation':22s} {'chars':>5s} {'median µs':>10s} {'p99 µs':>8s} {'vs naive':>9s}"
        f" {vs_rev:>10s}".rstrip()
    )
    for label, text in texts.items():
        results: dict[str, list[float]] = {}
        for _round in range(ROUNDS):  # interleaved, so every implementation sees the same noise
            for name, fn in impls.items():
                n = args.iterations if name != "phonenumbers matcher" else max(1, args.iterations // 20)
                results.setdefault(name, []).extend(measure(fn, text, n // ROUNDS or 1, deadline, clock))
        base = statistics.median(results["naive 6 regexes"])
        before = statistics.median(results[first]) if first else None
        for name, samples in results.items():
            ordered = sorted(samples)
            med = statistics.median(ordered)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            ratio = f" {med / before:9.2f}x" if before else ""  # the ratio of medians to REV, same rounds
            print(f"{label:16s} {name:22s} {len(text):5d} {med:10.1f} {p99:8.1f} {med / base:8.2f}x{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
