"""The redactor's shortcuts (``may_hold_pii``, the clean cache, the JSON length of previews)
change its cost, never its output: every string of the labeled corpus, every cut of it and
random text go through them and through ``find_pii`` directly, with identical results."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from typing import Any

import pytest

from gateway.config import load
from gateway.model import SpanEvent, SpanRecord, TraceRecord
from gateway.process.pii import MIN_LEN, find_pii, may_hold_pii
from gateway.process.redactor import (
    AUDIT_ATTRIBUTE,
    CLEAN_CACHE_ENTRIES,
    TRUNCATION_MARKER,
    Redactor,
    TextRedactor,
    _json_len,
    cap_preview,
)
from tests.redaction.corpus import build

CORPUS = [text for text, _gold in build()]
# Characters the detectors care about, ASCII and full-width, plus ordinary text.
ALPHABET = (
    "0123456789" * 3
    + "+-.() :@#/_=\"'"
    + "ADEKIJSTRacerty"
    + "０１２３４５６７８９＋－（）＠：．"
    + "\u3000\u2010\u2212\u30fc\uff70"
    + "注文番号 電話 abc xyz"
)


def cuts(text: str) -> list[str]:
    """Every window of a few lengths: entities cut in half, at the start and end of a string."""
    out: list[str] = []
    for n in (6, 9, 13, 20, 32):
        out.extend(text[i : i + n] for i in range(0, max(1, len(text) - n + 1)))
    return out


def random_texts(count: int, seed: int = 8) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def reference_text(value: str, texts: TextRedactor, hits: list[str]) -> str:
    """The plain way: ``find_pii`` on every string, every match replaced."""
    parts, last = [], 0
    for m in find_pii(value):
        parts += [value[last : m.start], texts.token(m.entity, m.canonical)]
        hits.append(m.entity)
        last = m.end
    return "".join(parts) + value[last:]


def reference_value(value: Any, texts: TextRedactor, hits: list[str]) -> Any:
    if isinstance(value, str):
        return reference_text(value, texts, hits)
    if isinstance(value, dict):
        return {k: reference_value(v, texts, hits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(reference_value(v, texts, hits) for v in value)
    return value


def test_may_hold_pii_is_true_wherever_find_pii_finds_something() -> None:
    checked = ruled_out = 0
    for text in CORPUS + [c for t in CORPUS for c in cuts(t)] + random_texts(20_000):
        found = find_pii(text)
        if not may_hold_pii(text):
            assert found == [], (text, found)
            ruled_out += 1
        checked += 1
    assert checked > 100_000 and ruled_out > 10_000  # the test exercised both outcomes


@pytest.mark.parametrize(
    "value",
    [
        "manga-intent-classifier",
        "product_question",
        "sess-612ea6cecc1b",
        "manga-reranker-4",
        "ワンピース 107巻は通常版ですか？",
        "end_turn",
        "dynamodb",
    ],
)
def test_common_clean_values_are_ruled_out_without_find_pii(value: str) -> None:
    assert not may_hold_pii(value)


@pytest.mark.parametrize(
    "value", ["a@b.jp", "req-100000000522-000059", "fe80::1", "Bearer x", "ＡＫＩＡ key", "x ０９０ 12"]
)
def test_what_could_be_pii_is_not_ruled_out(value: str) -> None:
    assert may_hold_pii(value)


@pytest.mark.parametrize("key", ["", "k3y"])
def test_text_redaction_is_identical_to_find_pii_on_every_string(key: str) -> None:
    texts = TextRedactor(key)
    strings = CORPUS + [c for t in CORPUS[:80] for c in cuts(t)] + random_texts(5_000)
    for _round in range(2):  # cold, then with every clean short string cached
        for text in strings:
            got_hits: list[str] = []
            want_hits: list[str] = []
            got = texts.redact(text, got_hits)
            assert got == reference_text(text, texts, want_hits), text
            assert got_hits == want_hits, text
            if got == text:
                assert got is text  # unchanged strings are not copied


def test_the_clean_cache_never_holds_a_string_with_pii_and_stays_bounded() -> None:
    texts = TextRedactor()
    counts: Counter[str] = Counter()
    for text in CORPUS + [c for t in CORPUS for c in cuts(t)]:
        texts.text(text, counts)
    for i in range(3 * CLEAN_CACHE_ENTRIES):
        texts.text(f"req-{i:012d}", counts)  # unique ids: pass the digit pre-check, found clean
    held = texts._clean | texts._clean_old
    assert held and len(held) <= 2 * CLEAN_CACHE_ENTRIES
    assert all(find_pii(s) == [] for s in held)
    assert sum(counts.values()) > 0


def make_trace(texts: list[str], i: int) -> TraceRecord:
    """A trace with corpus texts in every place the redactor looks (and a few it must not)."""

    def pick(k: int) -> str:
        return texts[(i * 7 + k) % len(texts)]

    tid = f"{i:032x}"
    root = SpanRecord(
        tid,
        "1" * 16,
        None,
        "handle_message",
        "CHAIN",
        1,
        2,
        attributes={
            "s": pick(0),
            "n": 3,
            "f": 1.5,
            "b": True,
            "none": None,
            "short": "a@b",
            "l": [pick(1), 2, [pick(2)]],
            "t": (pick(3), 1),
            "d": {"k": pick(4), "x": 1},
        },
        events=[SpanEvent("exception", 5, {"exception.message": pick(5), "exception.stacktrace": pick(6)})],
        inputs={"message": pick(7), "page_type": "product", "n": [1, 2.0, None]},
        outputs=pick(8) * (1 + i % 3),
        status_message=pick(9),
    )
    child = SpanRecord(
        tid,
        "2" * 16,
        "1" * 16,
        "bedrock_generate",
        "LLM",
        1,
        2,
        attributes={"model": "anthropic.claude-3-5-haiku-20241022-v1:0", "p": pick(10)},
        inputs=[pick(11), {"q": pick(12)}],
        outputs={"reply": pick(13)},
        trace_tags={"late_note": pick(14), "session_id": pick(15)},
    )
    tags = {"note": pick(16), "request_id": pick(17), "session_id": pick(18), "intent": "product_question"}
    spans = [child, root] if i % 2 else [child]  # odd: the root is there; even: tags' audit on the first span
    return TraceRecord(tid, "e", spans, tags)


def reference_process(traces: list[TraceRecord], redactor: Redactor) -> list[TraceRecord]:
    """What the stage must do, written the plain way."""
    texts, keep, cap = redactor.texts, frozenset(redactor._keep_tags), redactor._max
    for trace in traces:
        tag_hits: list[str] = []
        trace.tags = {k: v if k in keep else reference_text(v, texts, tag_hits) for k, v in trace.tags.items()}
        for span in trace.spans:
            hits: list[str] = []
            if span.inputs is not None:
                span.inputs = cap_preview(reference_value(span.inputs, texts, hits), cap)
            if span.outputs is not None:
                span.outputs = cap_preview(reference_value(span.outputs, texts, hits), cap)
            span.attributes = {k: reference_value(v, texts, hits) for k, v in span.attributes.items()}
            for e in span.events:
                e.attributes = reference_value(e.attributes, texts, hits)
            span.status_message = reference_text(span.status_message, texts, hits)
            if span.trace_tags:
                span.trace_tags = {
                    k: v if k in keep else reference_text(v, texts, hits) for k, v in span.trace_tags.items()
                }
            if span.is_root and tag_hits:
                hits += tag_hits
                tag_hits = []
            if hits:
                span.attributes[AUDIT_ATTRIBUTE] = dict(Counter(hits))
        if tag_hits:
            audit = dict(trace.spans[0].attributes.get(AUDIT_ATTRIBUTE) or {})
            for entity, n in Counter(tag_hits).items():
                audit[entity] = audit.get(entity, 0) + n
            trace.spans[0].attributes[AUDIT_ATTRIBUTE] = audit
    return traces


def test_the_stage_redacts_every_place_exactly_like_the_plain_walk() -> None:
    redactor = Redactor(load({"TRACEGW_REDACTION_HMAC_KEY": "k"}).redaction)
    texts = [*CORPUS, "manga-intent-classifier", "req-100000000522-000059", "ok"]
    traces = [make_trace(texts, i) for i in range(2 * len(texts))]
    want = reference_process(copy.deepcopy(traces), redactor)
    for _round in range(2):  # the second time with the clean cache warm
        got = redactor.process(copy.deepcopy(traces))
        assert got == want
    assert any(AUDIT_ATTRIBUTE in s.attributes for t in want for s in t.spans)


def test_json_length_is_that_of_json_dumps() -> None:
    rng = random.Random(3)
    scalars: list[Any] = [
        "",
        "a",
        "日本語",
        'q"\\\n\t\x01\x7f',
        0,
        -12,
        10**40,
        1.5,
        -0.0,
        1e-308,
        1e300,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
    ]

    def value(depth: int) -> Any:
        kind = rng.randrange(4 if depth < 3 else 1)
        if kind == 0:
            return rng.choice(scalars)
        if kind == 1:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        if kind == 2:
            return tuple(value(depth + 1) for _ in range(rng.randrange(3)))
        return {rng.choice(["k", "键", 'a"b', ""]) + str(j): value(depth + 1) for j in range(rng.randrange(4))}

    for _ in range(3000):
        v = value(0)
        n = len(json.dumps(v, ensure_ascii=False, default=str))
        assert _json_len(v, 10**9) == n, v
        assert _json_len(v, n) == n and _json_len(v, n - 1) > n - 1
    assert _json_len({1: "a"}, 100) > 100 and _json_len({"a": object()}, 100) > 100  # unknown: text built


@pytest.mark.parametrize(
    "value", [{"m": "x" * 490}, {"m": "x" * 600}, ["y" * 250, "z" * 250], {"k": object()}, {"m": "\n" * 300}, {"k": 1}]
)
def test_cap_preview_is_unchanged(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False, default=str)
    want = value if len(text) <= 500 else text[:500] + TRUNCATION_MARKER.format(n=len(text) - 500)
    assert cap_preview(value, 500) == want if len(text) > 500 else cap_preview(value, 500) is value


def test_short_strings_are_never_searched() -> None:
    assert all(not may_hold_pii("a@b.j"[:n]) for n in range(MIN_LEN))
