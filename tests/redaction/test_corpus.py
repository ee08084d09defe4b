"""Recall and precision of the detectors on the first labeled corpus (``corpus.py``: the six
original types), per entity type and overall (DESIGN §8: recall ≥ 0.99, precision ≥ 0.98). A
detection counts only with the exact span and type. The types added for issue 18 are measured on
the kinds corpus (``test_kinds.py``)."""

from __future__ import annotations

from collections import Counter

from gateway.process.pii import CARD, EMAIL, IP, ORDER_ID, PHONE, SECRET, find_pii
from tests.redaction.corpus import PII, build

ENTITIES = (EMAIL, PHONE, ORDER_ID, CARD, IP, SECRET)


def score() -> tuple[Counter[str], Counter[str], Counter[str], list[str]]:
    tp: Counter[str] = Counter()
    gold_n: Counter[str] = Counter()
    found_n: Counter[str] = Counter()
    misses = []
    for text, gold in build():
        found = {(m.start, m.end, m.entity) for m in find_pii(text)}
        want = set(gold)
        for _s, _e, kind in want:
            gold_n[kind] += 1
        for _s, _e, kind in found:
            found_n[kind] += 1
        for item in want & found:
            tp[item[2]] += 1
        for s, e, kind in want ^ found:
            misses.append(f"{'missed' if (s, e, kind) in want else 'false'} {kind} {text[s:e]!r} in {text!r}")
    return tp, gold_n, found_n, misses


def test_corpus_is_large_and_covers_every_type() -> None:
    _tp, gold_n, _found, _m = score()
    assert sum(gold_n.values()) >= 300
    assert all(gold_n[e] >= 15 for e in ENTITIES), gold_n
    assert set(PII) == set(ENTITIES)


def test_recall_and_precision_meet_the_bar() -> None:
    tp, gold_n, found_n, misses = score()
    report = {e: (tp[e], gold_n[e], found_n[e]) for e in ENTITIES}
    print("entity: (true positives, labeled, detected)", report)
    recall = sum(tp.values()) / sum(gold_n.values())
    precision = sum(tp.values()) / max(1, sum(found_n.values()))
    assert recall >= 0.99 and precision >= 0.98, (recall, precision, misses[:20])
    for e in ENTITIES:  # no type may hide behind the others
        assert tp[e] / gold_n[e] >= 0.95, (e, report[e], misses[:20])
        assert tp[e] / max(1, found_n[e]) >= 0.95, (e, report[e], misses[:20])


def test_a_trace_tag_is_redacted_and_counted_once() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.config import load
    from gateway.metrics import GatewayMetrics
    from gateway.model import SpanRecord
    from gateway.process.assembler import Assembler
    from gateway.process.redactor import Redactor

    cfg = load({"TRACEGW_ROOT_GRACE_S": "0"})
    metrics = GatewayMetrics(CollectorRegistry())
    asm = Assembler(cfg.assembly, metrics, clock=lambda: 0.0)
    root = SpanRecord(
        "ab" * 16,
        "1" * 16,
        None,
        "handle_message",
        "CHAIN",
        1,
        2,
        trace_tags={"customer_note": "mail me at taro@example.com"},
    )
    asm.add([root], "e")
    [trace] = Redactor(cfg.redaction, metrics).process(asm.poll())
    assert "taro@example.com" not in trace.tags["customer_note"]
    assert metrics.registry.get_sample_value("tracegw_redactions_total", {"entity": "EMAIL"}) == 1
